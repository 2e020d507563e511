"""``convbench tune``: the fastest kernel within an error budget per layer, into a plan cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from convbench.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REGRESSION,
    add_direction_option,
    add_sweep_options,
    cluster_for,
    positive_float,
    selected_work,
    sweep_settings,
    sweep_with_progress,
)
from convbench.cli.sweep import add_layer_options, layer_overrides
from convbench.contract import BACKENDS


def add_parser(sub: Any, name: str) -> None:
    tune = sub.add_parser(
        name, help="choose the fastest kernel within an error budget per layer; "
                   "write a plan cache that algo='auto' and convbench.plan use")
    tune.add_argument("descriptors", nargs="*", metavar="DESCRIPTOR",
                      help="benchdnn descriptors to tune instead of (or besides) a suite")
    tune.add_argument("--suite", help="comma list of suite names (see 'convbench list suites') "
                                      "or files")
    tune.add_argument("--backend", choices=BACKENDS, default="cpu")
    tune.add_argument("--budget", type=positive_float, required=True,
                      help="largest error a chosen kernel may have, e.g. 1e-6")
    tune.add_argument("--metric", choices=["rel_l2", "max_rel"], default="rel_l2",
                      help="error the budget is on (default rel_l2)")
    tune.add_argument("--allow-vendor", action="store_true",
                      help="let baselines (oneDNN, cuDNN) be chosen too; by default they are "
                           "only timed for comparison")
    tune.add_argument("--algo", default="all",
                      help="comma list of kernels and baselines to measure (default: all)")
    add_layer_options(tune)
    add_direction_option(tune)
    tune.add_argument("--out", help="plan cache to merge the choices into (default: "
                                    "$CONVBENCH_PLANS, else ~/.cache/convbench/plans.json)")
    tune.add_argument("--records", help="JSONL file the measurements are appended to, for "
                                        "'convbench report' (default: OUT with .jsonl)")
    add_sweep_options(tune)


def main(args: argparse.Namespace, command: list[str]) -> int:
    from convbench.measure import noise, roof, runner  # noqa: PLC0415 -- keep 'list' fast
    from convbench.measure.threads import default_threads  # noqa: PLC0415
    from convbench.plans import cache, tuning  # noqa: PLC0415
    from convbench.store import environment, jsonl  # noqa: PLC0415
    from convbench.store.provenance import noise_verdict  # noqa: PLC0415

    if not args.suite and not args.descriptors:
        raise ValueError("nothing to tune: give --suite or descriptors")
    layers, suite, names = selected_work(args, layer_overrides(args))
    out = Path(args.out).expanduser() if args.out else cache.default_path()
    cache.read_document(out)  # a file that is not a plan cache stops here, not after the sweep
    records_path = Path(args.records) if args.records else out.with_suffix(".jsonl")
    settings = sweep_settings(args, mode="both")
    config = {"suite": suite, "kernels": names, **runner.settings_dict(settings),
              "batch": args.batch, "match": args.match, "math": args.math,
              "tune": {"budget": args.budget, "metric": args.metric,
                       "allow_vendor": args.allow_vendor, "plans": str(out)}}
    env = environment.environment(args.backend)
    env["roof"] = roof.load_cached()
    env["threads"] = args.threads or default_threads()
    show = False if args.no_progress else None
    warnings = noise.setting_warnings(args.threads)
    env["setting_warnings"] = warnings
    start = noise.snapshot()
    with cluster_for(args, env) as cluster, jsonl.ResultWriter(records_path) as writer:
        def sweep(tasks: list, sweep_settings: Any, writer: Any, done: set) -> Any:
            return sweep_with_progress(tasks, sweep_settings, writer, done, show=show,
                                       cluster=cluster)

        header = jsonl.header_record(command, config, env)
        writer.write(header)
        outcome = tuning.tune(layers, names, settings, budget=args.budget, metric=args.metric,
                              allow_vendor=args.allow_vendor, writer=writer, sweep=sweep)
        machine = noise.noise(start, noise.snapshot())
        writer.write({"type": "noise", **machine})
    measured = {**header["provenance"], "noise": noise_verdict(machine)}
    saved = tuning.save_plans(out, outcome, args.backend, provenance=measured,
                              source=str(records_path))
    print(noise.noise_line(machine) + "".join(f"\n\n**Warning:** {w}." for w in warnings)
          + "\n")
    print(plans_table(outcome, args.metric, args.budget, args.backend))
    print(f"\n{saved} plan(s) merged into {out}; measurements in {records_path}")
    for lp in outcome.failed:
        print(f"convbench: {lp.layer.name or lp.layer.descriptor}: {lp.failure}",
              file=sys.stderr)
    if outcome.interrupted:
        print(f"\ninterrupted: the {saved} layer(s) measured completely were saved",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_REGRESSION if outcome.failed else EXIT_OK


def plans_table(outcome: Any, metric: str, budget: float, backend: str = "cpu") -> str:
    """One row per layer: the choice with its interval and error, the kernels tied with it,
    the runner-up with its ratio to the choice, the fastest overall, and the vendor's time
    (oneDNN, cuDNN) over the choice's."""
    from convbench.measure.stats import ratio  # noqa: PLC0415
    from convbench.present.format import fmt  # noqa: PLC0415
    from convbench.present.tables import Table, ratio_text  # noqa: PLC0415
    from convbench.registry import speedup_peer  # noqa: PLC0415

    peer = speedup_peer(backend, (k.kernel for lp in outcome.plans if lp.choice
                                  for k in lp.choice.candidates))

    def over_chosen(other: Any, chosen: Any) -> str:
        if other.summary is not None and chosen.summary is not None:
            return ratio_text(ratio(other.summary, chosen.summary, paired=True))
        return fmt(other.time_s / chosen.time_s, ".2f")

    rows = []
    several = len({lp.platform for lp in outcome.plans}) > 1
    for lp in outcome.plans:
        name = lp.layer.name or lp.layer.descriptor
        if several:  # a Dask sweep over platforms: a layer's plan on each
            name += f" on {lp.platform}"
        c = lp.choice
        if c is None:
            rows.append([name, "none within budget", "—", "—", "—", "—", "—", "—"])
            continue
        fastest = min(c.candidates, key=lambda k: k.time_s)
        vendor = next((k for k in c.candidates if k.kernel == peer), None)
        chosen_ms = fmt(c.chosen.time_s * 1e3, ".3f")
        if c.chosen.summary is not None:
            lo, hi = c.chosen.summary.ci95_s
            chosen_ms += f" [{lo * 1e3:.3f}, {hi * 1e3:.3f}]"
        tied = ", ".join(c.tied[1:]) or "—"
        runner = (f"{c.runner_up.kernel} x{over_chosen(c.runner_up, c.chosen)}"
                  if c.runner_up else "—")
        rows.append([
            name, c.chosen.kernel, chosen_ms, fmt(c.chosen.error(metric), ".2e"), tied, runner,
            f"{fastest.kernel} ({fastest.error(metric):.1e})",
            over_chosen(vendor, c.chosen) if vendor else "—"])
    table = Table(["layer", "chosen", "median ms [95% CI]", metric, "tied with", "runner-up",
                   f"fastest ({metric})", f"{peer} / chosen [95% CI]"], rows)
    return f"## Plans within {metric} <= {budget:g}\n\n" + table.to_markdown()
