"""``convbench run``: sweep layers x kernels, write JSONL as it goes, print the tables."""

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
    positive_int,
    selected_work,
    sweep_settings,
    sweep_with_progress,
)
from convbench.cli.layers import add_input_option
from convbench.contract import BACKENDS
from convbench.problem import DT_TO_DTYPE, MATH_MODES, normalize_dtype


def add_parser(sub: Any, name: str) -> None:
    run = sub.add_parser(name, help="sweep suite layers x kernels, write JSONL, print tables")
    run.add_argument("descriptors", nargs="*", metavar="DESCRIPTOR",
                     help="benchdnn descriptors to run instead of (or besides) a suite")
    run.add_argument("--suite", help="comma list of suite names (see 'convbench list suites') "
                                     "or files")
    run.add_argument("--model", metavar="SPEC",
                     help="also run a model's conv layers: MODULE:FACTORY (PyTorch) or a "
                          ".onnx file, with --input (see 'convbench layers')")
    add_input_option(run)
    run.add_argument("--backend", choices=BACKENDS, default="cpu")
    run.add_argument("--algo", default="all",
                     help="comma list of kernels and baselines, or 'all' (default)")
    add_layer_options(run)
    add_direction_option(run)
    run.add_argument("--mode", choices=["perf", "accuracy", "both"], default="both")
    add_sweep_options(run)
    run.add_argument("--fill", choices=["random", "exact"], default="random",
                     help="inputs: uniform [-1, 1] (random) or small integers on which "
                          "direct convolution is exact (exact)")
    run.add_argument("--flush-l2", action="store_true",
                     help="GPU: overwrite the L2 cache before every timed run (cold cache)")
    run.add_argument("--out", help="JSONL file to append to "
                                   "(default: convbench-<suite>-<backend>.jsonl)")
    run.add_argument("--resume", action="store_true",
                     help="skip (problem, kernel) pairs that --out already holds")
    run.add_argument("--table", help="also write the printed tables to this Markdown file")
    run.add_argument("--strict", action="store_true",
                     help="exit 1 if any measurement failed")
    run.add_argument("--roof", action="store_true",
                     help="measure this machine's roof first (else a cached one is attached)")


def add_layer_options(parser: argparse.ArgumentParser) -> None:
    """``--batch``, ``--dtype``, ``--math``, ``--bias``, ``--match`` (run, tune)."""
    parser.add_argument("--batch", type=positive_int, help="override every layer's mb")
    parser.add_argument("--dtype", help="override dtype: f32, f64, f16 (or float32...)")
    parser.add_argument("--math", choices=list(MATH_MODES),
                        help="math mode: fp32 (strict), tf32 (float32 data, TF32 operands "
                             "allowed), fp16 (float16 data, fp32 accumulation), fp64; "
                             "sets the dtype")
    parser.add_argument("--bias", action="store_true", help="give every layer a bias")
    parser.add_argument("--match", help="regex on layer names (or descriptors)")


def layer_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``batch``, ``dtype``, ``bias`` and ``fpmath`` overrides from ``add_layer_options``."""
    dtype = normalize_dtype(DT_TO_DTYPE.get(args.dtype, args.dtype)) if args.dtype else None
    fpmath = None
    if args.math:
        math_dtype, fpmath = MATH_MODES[args.math]
        if dtype is not None and dtype != math_dtype:
            raise ValueError(f"--math {args.math} computes {math_dtype} data, but --dtype "
                             f"asks for {dtype}")
        dtype = math_dtype
    return {"batch": args.batch, "dtype": dtype, "bias": True if args.bias else None,
            "fpmath": fpmath}


def main(args: argparse.Namespace, command: list[str]) -> int:
    from convbench.measure import noise, roof, runner  # noqa: PLC0415 -- keep 'list' fast
    from convbench.measure.threads import default_threads  # noqa: PLC0415
    from convbench.registry import speedup_peer  # noqa: PLC0415
    from convbench.store import environment, jsonl, provenance  # noqa: PLC0415

    layers, suite, names = selected_work(args, layer_overrides(args))
    settings = sweep_settings(args, mode=args.mode, fill=args.fill, flush_l2=args.flush_l2)
    out = Path(args.out or f"convbench-{suite}-{args.backend}.jsonl")
    done: set[tuple[str, str, str, str]] = set()
    previous: list[Any] = []
    if args.resume and out.exists():
        previous = jsonl.load_run(out).records
        done = runner.existing_keys(previous)
    tasks = runner.plan_tasks(layers, names, settings)
    config = {"suite": suite, "kernels": names, **runner.settings_dict(settings),
              "batch": args.batch, "match": args.match, "resume": args.resume,
              "math": args.math}
    if args.model:
        config["model"] = {"spec": args.model, "input": args.input}
    env = environment.environment(args.backend)
    env["roof"] = roof.measure_and_cache(args.threads, args.backend) if args.roof \
        else roof.load_cached()
    env["threads"] = args.threads or default_threads()
    warnings = noise.setting_warnings(args.threads)
    env["setting_warnings"] = warnings
    start = noise.snapshot()
    env["machine_at_start"] = {k: start[k] for k in ("calibration", "loadavg", "cpu_mhz")}
    with cluster_for(args, env) as cluster, jsonl.ResultWriter(out) as writer:
        header = jsonl.header_record(command, config, env)
        writer.write(header)
        outcome = sweep_with_progress(tasks, settings, writer, done,
                                      show=False if args.no_progress else None,
                                      cluster=cluster)
        machine = noise.noise(start, noise.snapshot())
        writer.write({"type": "noise", **machine})
    ordered = shown_records(tasks, previous, outcome.records)
    peer = speedup_peer(args.backend, (r["kernel"] for r in ordered))
    text = tables_text(ordered, peer, suite, settings, outcome, out, machine, warnings)
    print(text)
    if args.table:
        prov = table_provenance(header["provenance"], machine, out, reused=bool(previous))
        Path(args.table).write_text(provenance.with_markdown(text, prov) + "\n")
    if outcome.interrupted:
        print(f"\ninterrupted: {len(outcome.records)} records kept in {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = sum(r.status == "failed" for r in outcome.records)
    if failed:
        print(f"{failed} measurement(s) failed; see 'reason' in {out}", file=sys.stderr)
        if args.strict:
            return EXIT_REGRESSION
    return EXIT_OK


def table_provenance(run: dict[str, Any], machine: dict[str, Any], out: Path,
                     reused: bool = False) -> dict[str, Any]:
    """The provenance of the tables: this run's with its noise verdict, or, where
    ``--resume`` reused records of earlier runs, every run of ``out`` combined."""
    from convbench.store import provenance  # noqa: PLC0415

    if reused:
        return provenance.file_provenance(out) or run
    return {**run, "noise": provenance.noise_verdict(machine)}


def shown_records(tasks: list, previous: list, new: list) -> list:
    """What the tables show: per platform, the last record of each task, in task order
    (records reused by ``--resume`` included)."""
    from convbench.store.records import as_record  # noqa: PLC0415

    order = {t.key: i for i, t in reversed(list(enumerate(tasks)))}
    shown: dict[tuple, Any] = {}
    for rec in map(as_record, [*previous, *new]):
        if rec.key in order:
            shown[(rec.platform, rec.key)] = rec
    platforms = list(dict.fromkeys(platform for platform, _ in shown))
    return sorted(shown.values(), key=lambda r: (platforms.index(r.platform), order[r.key]))


def tables_text(records: list, peer: str, suite: str, settings: Any, outcome: Any,
                out: Path, machine: dict[str, Any] | None = None,
                warnings: list[str] | None = None) -> str:
    """The per-layer and whole-network tables a sweep prints, under a head that says how
    it measured, how quiet the machine was and which settings slow a library here."""
    from convbench.measure.noise import noise_line  # noqa: PLC0415
    from convbench.present.tables import (  # noqa: PLC0415
        TRAINING_STEP,
        directions_of,
        layer_table,
        network_table,
        training_step_note,
        training_step_table,
    )

    threads = (outcome.threads or {}).get("threads")
    if outcome.threads is None:  # a Dask sweep: each record says what its worker used
        threads = ",".join(sorted({str(r.get("threads")) for r in outcome.records})) or None
    rounds = (f"{settings.rounds} rounds in separate processes"
              if settings.isolate else f"{settings.rounds} rounds in this process")
    head = (f"## {suite}: {settings.backend}, mode {settings.mode}, threads {threads}, "
            f"{rounds if settings.timed else 'accuracy only'}, per round "
            f"{settings.cooldown} s cool-down, {settings.warmup} warm calls "
            f"(at least {settings.warm_time} s), min "
            f"{settings.min_reps} reps / {settings.min_time} s, seed {settings.seed}\n\n"
            f"Results: `{out}`")
    if outcome.skipped_existing:
        head += f" ({outcome.skipped_existing} measurements reused from the file)"
    if machine is not None:
        head += "\n\n" + noise_line(machine)
    for warning in warnings or []:
        head += f"\n\n**Warning:** {warning}."
    if settings.timed:
        head += ("\n\nTimes are medians with their 95% interval from the rounds; `~` marks "
                 "an unstable record (its rounds disagree). ★ marks a layer's winner only "
                 "when it is faster than every other with confidence; tied entries share "
                 "≈ (☆, ≈☆: the same among convbench's kernels where a baseline wins).")
    parts = [head, "### Per layer", layer_table(records, peer)]
    if settings.mode != "accuracy":
        directions = directions_of(records)
        if len(directions) <= 1:
            parts += ["### Whole network (sum of median x repeat)",
                      network_table(records, peer).to_markdown()]
        else:
            for d in directions:
                parts += [f"### Whole network, {d} (sum of median x repeat)",
                          network_table([r for r in records if r.dir == d],
                                        peer).to_markdown()]
        measured = set(directions)
        if {"fwd", "bwd_d"} <= measured and measured & {"bwd_w", "bwd_wb"}:
            parts += [f"### Training step ({' + '.join(TRAINING_STEP)} per layer)",
                      training_step_note(records),
                      training_step_table(records, peer).to_markdown()]
    return "\n\n".join(parts)
