"""``convbench check``: re-measure errors, hold each to its error envelope, and to the
committed baseline for drift on the same platform."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from pathlib import Path
from typing import Any

from convbench.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_USAGE,
    add_direction_option,
    add_process_options,
    cluster_for,
    gpu_missing_reason,
    non_negative_float,
    positive_int,
    sweep_with_progress,
    with_directions,
)
from convbench.contract import BACKENDS
from convbench.present.tables import findings_table, platform_label
from convbench.problem import DT_TO_DTYPE, normalize_dtype
from convbench.store.records import by_platform


def add_parser(sub: Any, name: str) -> None:
    chk = sub.add_parser(name, help="re-measure errors, hold them to each algorithm's error "
                                    "envelope (and to the baseline's, on its own platform); "
                                    "exit 1 on findings")
    chk.add_argument("--suite", default="all",
                     help="comma list of suites or files, or 'all' shipped suites (default)")
    chk.add_argument("--backend", choices=BACKENDS, default="cpu")
    chk.add_argument("--algo", default="all", help="comma list of kernels/baselines, or all")
    chk.add_argument("--dtype", default="f32,f64", help="comma list of dtypes (f32,f64)")
    chk.add_argument("--fill", choices=["random", "exact"], default="random")
    chk.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                     help="give every layer a bias (default: as the baseline was made; "
                          "else yes, like benchdnn's FWD_B, so that bias handling is checked)")
    chk.add_argument("--batch", type=positive_int, default=None,
                     help="batch size (default: as the baseline was made, else 1)")
    chk.add_argument("--match", help="regex on layer names (or descriptors)")
    add_direction_option(chk)
    chk.add_argument("--seed", type=int, default=0)
    chk.add_argument("--baseline", help="baseline file "
                                        "(default results/accuracy/<backend>-<fill>.json)")
    chk.add_argument("--factor", type=non_negative_float, default=2.0,
                     help="on the baseline's platform, flag drift above factor x baseline "
                          "(default 2.0; floors apply)")
    chk.add_argument("--update", action="store_true",
                     help="rewrite the baseline entries of what was measured")
    chk.add_argument("--out", help="also append the measured records to this JSONL file")
    chk.add_argument("--from", dest="records", metavar="RUN.jsonl", nargs="+",
                     help="with --update: take the entries from these results files instead "
                          "of measuring (labelled with the platform they recorded)")
    add_process_options(chk)


def main(args: argparse.Namespace, command: list[str]) -> int:
    from convbench.measure import runner  # noqa: PLC0415
    from convbench.measure.compare import check_records  # noqa: PLC0415
    from convbench.problem.suites import list_suites, select_layers  # noqa: PLC0415
    from convbench.registry import select_kernels  # noqa: PLC0415
    from convbench.store.baselines import (  # noqa: PLC0415
        Baseline,
        baseline_meta,
        default_baseline_path,
    )
    from convbench.store.environment import environment, platform_fingerprint  # noqa: PLC0415

    if args.records:
        return seed(args)
    suites = list_suites() if args.suite == "all" else [s for s in args.suite.split(",") if s]
    dtypes = [normalize_dtype(DT_TO_DTYPE.get(d, d)) for d in args.dtype.split(",") if d]
    if args.backend == "gpu" and (reason := gpu_missing_reason()) is not None:
        print(f"convbench: no GPU present ({reason})", file=sys.stderr)
        return EXIT_USAGE
    path = Path(args.baseline) if args.baseline else default_baseline_path(args.backend,
                                                                           args.fill)
    baseline = Baseline.load(path) if path.exists() else None
    made_with = baseline.meta if baseline is not None else {}
    batch = args.batch or made_with.get("batch") or 1
    bias = args.bias if args.bias is not None else made_with.get("bias", True)
    names = select_kernels(args.algo, args.backend)
    settings = runner.SweepSettings(backend=args.backend, mode="accuracy", seed=args.seed,
                                    isolate=not args.no_isolate, fill=args.fill)
    pattern = re.compile(args.match) if args.match else None
    tasks = []
    for dtype in dtypes:
        layers = select_layers(suites, batch=batch, dtype=dtype, bias=bias)
        layers = [(s, x) for s, x in layers if pattern is None or pattern.search(x.name)
                  or pattern.search(x.descriptor)]
        layers = with_directions(layers, args.direction)
        tasks += runner.plan_tasks(layers, names, settings)
    if not tasks:
        raise ValueError("nothing to check: no layer matches")
    from convbench.store.jsonl import ResultWriter, header_record  # noqa: PLC0415

    if args.update and args.scheduler:
        raise ValueError("--update writes the baseline of the platform it runs on: run it "
                         "there, without --scheduler")
    with contextlib.ExitStack() as stack:
        env = environment(args.backend) if args.out else {}
        cluster = stack.enter_context(cluster_for(args, env))
        writer = stack.enter_context(ResultWriter(args.out)) if args.out else None
        if writer is not None:
            writer.write(header_record(command, {"check": vars(args)}, env,
                                       check_provenance(command, args.backend, env)))
        outcome = sweep_with_progress(tasks, settings, writer, set(),
                                      show=False if args.no_progress else None,
                                      cluster=cluster)
    if outcome.interrupted:
        print("interrupted: nothing was compared or written", file=sys.stderr)
        return EXIT_INTERRUPTED
    here = platform_fingerprint(args.backend)
    if args.update:
        baseline = Baseline.load(path) if path.exists() else Baseline()
        count = baseline.update(outcome.records)
        env = env or environment(args.backend)
        baseline.meta = baseline_meta({"backend": args.backend, "fill": args.fill,
                                       "seed": args.seed, "batch": batch, "bias": bias}, env)
        baseline.provenance = check_provenance(command, args.backend, env)
        baseline.save(path)
        print(f"wrote {count} entries to {path} ({len(baseline.entries)} in all), "
              f"platform {here['id']}")
        return EXIT_OK
    there = made_with.get("fingerprint") or {}
    findings = []
    groups = by_platform(outcome.records)
    for platform, records in groups.items():
        # A Dask worker's records carry its platform; those measured here have this one's.
        measured_on = records[0].get("fingerprint") if platform is not None else here
        same = there.get("id") == measured_on["id"]
        result = check_records(records, baseline.entries if baseline else None,
                               same_platform=same, factor=args.factor,
                               exact_fill=args.fill == "exact")
        if len(groups) > 1:
            print(f"\n## {platform_label(platform, records)}")
        print(summary(result, len(records), path if baseline else None, measured_on, there,
                      same, args.factor))
        findings += result.findings
    if findings:
        print(findings_table(findings))
        return EXIT_REGRESSION
    return EXIT_OK


def check_provenance(command: list[str], backend: str, env: dict[str, Any]) -> dict[str, Any]:
    """The provenance of what a check measures: each error once, no noise verdict needed."""
    from convbench.store.provenance import accuracy_provenance  # noqa: PLC0415

    return accuracy_provenance({"mode": "accuracy", "measurements_per_entry": 1},
                               command=command, backend=backend, env=env)


def seed(args: argparse.Namespace) -> int:
    """``--update --from RUN.jsonl...``: a baseline from records measured before."""
    from convbench.store.baselines import (  # noqa: PLC0415
        Baseline,
        baseline_meta,
        default_baseline_path,
        recorded_fingerprint,
    )
    from convbench.store.jsonl import load_run  # noqa: PLC0415
    from convbench.store.provenance import combined, file_provenance  # noqa: PLC0415

    if not args.update:
        raise ValueError("--from needs --update: it writes a baseline, it checks nothing")
    path = Path(args.baseline) if args.baseline else default_baseline_path(args.backend,
                                                                           args.fill)
    baseline = Baseline.load(path) if path.exists() else Baseline()
    count, env, batches, biases = 0, None, set(), set()
    sources = {}
    for name in args.records:
        run = load_run(name)
        sources[Path(name).name] = file_provenance(name)
        env = env or (run.headers[0].get("environment") if run.headers else None)
        ours = [r for r in run.records if r["backend"] == args.backend
                and r.get("fill", "random") == args.fill and r.status != "failed"]
        count += baseline.update(ours)
        batches |= {r.get("mb") for r in ours}
        biases |= {"--dir=FWD_B" in r["problem"] for r in ours}
    if env is None:
        raise ValueError("the results files carry no header with the environment they ran in")
    batch = max(b for b in batches if b) if batches else 1
    fingerprint = recorded_fingerprint(env, args.backend)
    baseline.meta = baseline_meta({"backend": args.backend, "fill": args.fill, "seed": 0,
                                   "batch": batch, "bias": biases == {True},
                                   "seeded_from": [Path(n).name for n in args.records]},
                                  {**env, "fingerprint": fingerprint})
    # The entries' errors are the seeding runs' measurements: their provenance is theirs.
    known = {k: v for k, v in sources.items() if v is not None}
    baseline.provenance = (next(iter(known.values())) if len(known) == 1
                           else combined(known) if known else None)
    baseline.save(path)
    print(f"wrote {count} entries to {path} ({len(baseline.entries)} in all), "
          f"platform {fingerprint['id']} ({describe(fingerprint)})")
    return EXIT_OK


def summary(result: Any, checked: int, path: Path | None, here: dict[str, Any],
            there: dict[str, Any], same: bool, factor: float) -> str:
    """What a check says: the envelope verdict, then what the baseline adds."""
    lines = [f"checked {checked} measurements: {result.passed} passed, "
             f"{len(result.findings)} finding(s)"]
    if result.worst is not None:
        w = result.worst
        lines.append(f"error envelopes: the closest is {w.kernel} on {w.label} "
                     f"({w['dtype']}) at {w.error('envelope_ratio'):.3g} of its envelope")
    if path is None:
        lines.append("no baseline file: the envelopes alone decided")
    elif same:
        lines.append(f"baseline {path}: made on this platform ({here['id']}); drift above "
                     f"{factor:g}x its errors (with floors) counts as a finding")
    else:
        lines.append(f"baseline {path}: made on platform {there.get('id', 'unknown')} "
                     f"({describe(there)}), this is {here['id']} ({describe(here)}); a new "
                     f"platform sums in another order, so its {len(result.information)} "
                     f"difference(s) beyond {factor:g}x are information, not findings")
        for info in sorted(result.information, key=_size, reverse=True)[:INFO_SHOWN]:
            lines.append(f"  {info.name} {info.kernel} {info.what}: baseline "
                         f"{_number(info.baseline)}, measured {_number(info.measured)}")
    return "\n".join(lines)


#: Differences from another platform's baseline that a check prints (the largest).
INFO_SHOWN = 5


def describe(fingerprint: dict[str, Any]) -> str:
    """A fingerprint in a few words: ISA, BLAS kernels, Numba's CPU, oneDNN's ISA, or the GPU."""
    if not fingerprint:
        return "not recorded"
    if fingerprint.get("backend") == "gpu":
        gpu = fingerprint.get("gpu") or {}
        return f"{gpu.get('name', 'no GPU')}, CUDA {gpu.get('cuda_runtime')}, " \
               f"cuDNN {gpu.get('cudnn')}"
    blas = "; ".join(fingerprint.get("blas") or [])
    return (f"{fingerprint.get('cpu_isa')}, {blas}, numba {fingerprint.get('numba_cpu')}, "
            f"oneDNN {fingerprint.get('onednn_isa')}")


def _size(finding: Any) -> float:
    if finding.baseline and finding.measured is not None:
        return finding.measured / finding.baseline
    return float("inf")


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3e}"
