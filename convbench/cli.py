"""The ``convbench`` command: list, run, compare."""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path
from typing import Any

from convbench.problem import DT_TO_DTYPE, ConvProblem, normalize_dtype
from convbench.registry import BACKENDS, get_kernel, kernels, load_errors
from convbench.suites import SuiteLayer, list_suites, load_suite, suite_path

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench",
        description="Benchmark convolution algorithms (direct, im2col, FFT, Winograd) "
                    "against the libraries you would otherwise use.")
    sub = parser.add_subparsers(dest="command", required=True)

    lst = sub.add_parser("list", help="list suites or kernels")
    lst.add_argument("what", choices=["suites", "kernels"])
    lst.add_argument("--backend", choices=BACKENDS, default=None)

    run = sub.add_parser("run", help="sweep suite layers x kernels, write JSONL, print tables")
    run.add_argument("descriptors", nargs="*", metavar="DESCRIPTOR",
                     help="benchdnn descriptors to run instead of (or besides) a suite")
    run.add_argument("--suite", help="suite name (see 'convbench list suites') or file path")
    run.add_argument("--backend", choices=BACKENDS, default="cpu")
    run.add_argument("--algo", default="all",
                     help="comma list of kernels and baselines, or 'all' (default)")
    run.add_argument("--batch", type=_positive_int, help="override every layer's mb")
    run.add_argument("--dtype", help="override dtype: f32, f64, f16 (or float32...)")
    run.add_argument("--bias", action="store_true", help="give every layer a bias")
    run.add_argument("--mode", choices=["perf", "accuracy", "both"], default="both")
    run.add_argument("--match", help="regex on layer names (or descriptors)")
    run.add_argument("--threads", type=_positive_int, help="Numba/BLAS/torch threads "
                                                           "(default: all cores)")
    run.add_argument("--min-time", type=_non_negative_float, default=0.2,
                     help="timed seconds per measurement, at least (default 0.2)")
    run.add_argument("--min-reps", type=_positive_int, default=5,
                     help="timed runs per measurement, at least (default 5)")
    run.add_argument("--max-time", type=_non_negative_float, default=30.0,
                     help="stop repeating after this many seconds once min-reps ran")
    run.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
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
    run.add_argument("--timeout", type=_non_negative_float, default=600.0,
                     help="seconds one measurement may take before it is failed (default 600)")
    run.add_argument("--no-isolate", action="store_true",
                     help="measure in this process instead of a worker (debugging)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--strict", action="store_true",
                     help="exit 1 if any measurement failed")
    run.add_argument("--roof", action="store_true",
                     help="measure this machine's roof first (else a cached one is attached)")

    roof = sub.add_parser("roof", help="measure this machine's GEMM and bandwidth limits")
    roof.add_argument("--threads", type=_positive_int, help="threads (default: all cores)")
    roof.add_argument("--backend", choices=BACKENDS, default="cpu")
    roof.add_argument("--into", help="also append the roof as a record to this results file")

    rep = sub.add_parser("report", help="write index.html, README.md and PNG plots of runs")
    rep.add_argument("runs", nargs="+", metavar="RUN.jsonl")
    rep.add_argument("-o", "--out", required=True, help="output directory")
    rep.add_argument("--error-budget", type=_non_negative_float, default=1e-5,
                     help="rel_l2 budget of the 'fastest within budget' winner (1e-5)")
    rep.add_argument("--title", default="convbench report")

    chk = sub.add_parser("check", help="re-measure errors and compare with the committed "
                                       "accuracy baseline; exit 1 on regressions")
    chk.add_argument("--suite", default="all",
                     help="comma list of suites or files, or 'all' shipped suites (default)")
    chk.add_argument("--backend", choices=BACKENDS, default="cpu")
    chk.add_argument("--algo", default="all", help="comma list of kernels/baselines, or all")
    chk.add_argument("--dtype", default="f32,f64", help="comma list of dtypes (f32,f64)")
    chk.add_argument("--fill", choices=["random", "exact"], default="random")
    chk.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True,
                     help="give every layer a bias (default, like benchdnn's FWD_B), so "
                          "that bias handling is checked too")
    chk.add_argument("--batch", type=_positive_int, default=1, help="batch size (default 1)")
    chk.add_argument("--match", help="regex on layer names (or descriptors)")
    chk.add_argument("--seed", type=int, default=0)
    chk.add_argument("--baseline", help="baseline file "
                                        "(default results/accuracy/<backend>-<fill>.json)")
    chk.add_argument("--factor", type=_non_negative_float, default=2.0,
                     help="flag errors above factor x baseline (default 2.0; floors apply)")
    chk.add_argument("--update", action="store_true",
                     help="rewrite the baseline entries of what was measured")
    chk.add_argument("--no-isolate", action="store_true", help="measure in this process")
    chk.add_argument("--no-progress", action="store_true", help="no progress bar")

    cmp_ = sub.add_parser("compare", help="compare two runs; exit 1 on regressions")
    cmp_.add_argument("old")
    cmp_.add_argument("new")
    cmp_.add_argument("--time-tol", type=_non_negative_float, default=0.10,
                      help="flag new/old time above 1 + TOL (default 0.10)")
    cmp_.add_argument("--err-tol", type=_non_negative_float, default=2.0,
                      help="flag new/old rel_l2 above TOL (default 2.0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None and hasattr(signal, "SIGPIPE"):
        # `convbench list suites | head`: stop quietly when the reader goes away.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return cmd_list(args)
        if args.command == "run":
            return cmd_run(args, sys.argv if argv is None else ["convbench", *argv])
        if args.command == "check":
            return cmd_check(args)
        if args.command == "roof":
            return cmd_roof(args)
        if args.command == "report":
            return cmd_report(args)
        return cmd_compare(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"convbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


# ----------------------------------------------------------------------- list
def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "suites":
        print("| suite | layers | conv layers in network | file |")
        print("|---|---:|---:|---|")
        for name in list_suites():
            layers = load_suite(name)
            print(f"| {name} | {len(layers)} | {sum(x.repeat for x in layers)} | "
                  f"{suite_path(name)} |")
        return EXIT_OK
    probes = {name: load_suite(name) for name in ("resnet50", "mobilenet_v1", "alexnet")}
    print("| kernel | backend | kind | resnet50 | mobilenet_v1 | alexnet | status |")
    print("|---|---|---|---:|---:|---:|---|")
    for kernel in kernels(args.backend):
        counts = []
        notes = set()
        for layers in probes.values():
            reasons = [kernel.supports(layer.problem) for layer in layers]
            counts.append(f"{sum(r is None for r in reasons)}/{len(layers)}")
            notes.update(r for r in reasons if r and ("install" in r or "GPU" in r))
        print(f"| {kernel.name} | {kernel.backend} | {kernel.kind} | {' | '.join(counts)} | "
              f"{'; '.join(sorted(notes)) or 'ready'} |")
    for name, error in load_errors().items():
        print(f"plug-in {name} failed to load: {error}", file=sys.stderr)
    return EXIT_OK


# ------------------------------------------------------------------------ run
def _select_layers(args: argparse.Namespace) -> tuple[str, list[SuiteLayer]]:
    dtype = None
    if args.dtype:
        dtype = normalize_dtype(DT_TO_DTYPE.get(args.dtype, args.dtype))
    overrides: dict[str, Any] = {"batch": args.batch, "dtype": dtype,
                                 "bias": True if args.bias else None}
    layers: list[SuiteLayer] = []
    label = "custom"
    if args.suite:
        layers = load_suite(args.suite, **overrides)
        label = Path(args.suite).stem
    for text in args.descriptors:
        p = ConvProblem.parse(text)
        changes: dict[str, Any] = {}
        if args.batch:
            changes["mb"] = args.batch
        if dtype:
            changes["dtype"] = dtype
        if args.bias:
            changes["bias"] = True
        layers.append(SuiteLayer(p.with_(**changes) if changes else p))
    if not layers:
        raise ValueError("nothing to run: give --suite NAME or descriptors")
    if args.match:
        pattern = re.compile(args.match)
        layers = [x for x in layers
                  if pattern.search(x.problem.name) or pattern.search(str(x.problem))]
        if not layers:
            raise ValueError(f"--match {args.match!r} selects no layer")
    return label, layers


def _select_kernels(spec: str, backend: str) -> list[str]:
    if spec == "all":
        names = [k.name for k in kernels(backend)]
        if not names:
            raise ValueError(f"no {backend} kernels are registered")
        return names
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        get_kernel(name, backend)  # raises with the list of known names
    return names


def _gpu_missing_reason() -> str | None:
    from convbench.results import gpu_environment  # noqa: PLC0415

    info = gpu_environment()
    return None if info.get("available") else info.get("reason", "no GPU")


def cmd_run(args: argparse.Namespace, command: list[str]) -> int:
    from convbench import results, runner  # noqa: PLC0415 -- keep 'list' fast

    suite, layers = _select_layers(args)
    if args.backend == "gpu":
        reason = _gpu_missing_reason()
        if reason is not None:
            print(f"convbench: no GPU present ({reason}); --backend gpu needs a CUDA device "
                  "and CuPy (pip install 'convbench[gpu]')", file=sys.stderr)
            return EXIT_USAGE
    names = _select_kernels(args.algo, args.backend)
    settings = runner.SweepSettings(
        backend=args.backend, mode=args.mode, seed=args.seed, min_reps=args.min_reps,
        min_time=args.min_time, max_time=args.max_time, threads=args.threads,
        isolate=not args.no_isolate, timeout=args.timeout or None, fill=args.fill,
        flush_l2=args.flush_l2)
    out = Path(args.out or f"convbench-{suite}-{args.backend}.jsonl")
    done: set[tuple[str, str, str]] = set()
    previous: list[dict[str, Any]] = []
    if args.resume and out.exists():
        previous = results.load_run(out).records
        done = runner.existing_keys(previous)
    tasks = runner.plan_tasks(layers, names, suite, settings)
    config = {"suite": suite, "kernels": names, **runner.settings_dict(settings),
              "batch": args.batch, "match": args.match, "resume": args.resume}
    env = results.environment(args.backend)
    env["roof"] = _roof_for_run(args.roof, args.threads, args.backend)
    import numba  # noqa: PLC0415

    env["threads"] = args.threads or numba.config.NUMBA_NUM_THREADS
    with results.ResultWriter(out) as writer:
        writer.write(results.header_record(command, config, env))
        outcome = _run_with_progress(runner, tasks, settings, writer, done,
                                     show=not args.no_progress and sys.stderr.isatty())
    wanted = {(t.problem, t.backend, t.kernel) for t in tasks}
    shown = {results.record_key(r): r for r in previous if results.record_key(r) in wanted}
    shown.update({results.record_key(r): r for r in outcome.records})
    ordered = [shown[(t.problem, t.backend, t.kernel)] for t in tasks
               if (t.problem, t.backend, t.kernel) in shown]
    baseline = "onednn" if args.backend == "cpu" else "cudnn"
    text = _tables(ordered, baseline, suite, settings, outcome, out)
    print(text)
    if args.table:
        Path(args.table).write_text(text + "\n")
    if outcome.interrupted:
        print(f"\ninterrupted: {len(outcome.records)} records kept in {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = sum(r.get("status") == "failed" for r in outcome.records)
    if failed:
        print(f"{failed} measurement(s) failed; see 'reason' in {out}", file=sys.stderr)
        if args.strict:
            return EXIT_REGRESSION
    return EXIT_OK


def _run_with_progress(runner: Any, tasks: list, settings: Any, writer: Any,
                       done: set, show: bool) -> Any:
    if not show:
        return runner.run_sweep(tasks, settings, writer, done=done)
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    todo = sum((t.problem, t.backend, t.kernel) not in done for t in tasks)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=True) as progress:
        bar = progress.add_task("measuring", total=todo)

        def advance(rec: dict[str, Any]) -> None:
            progress.update(bar, advance=1,
                            description=f"{rec.get('name') or rec['problem']} {rec['kernel']}")

        return runner.run_sweep(tasks, settings, writer, done=done, on_record=advance)


def _tables(records: list, baseline: str, suite: str, settings: Any, outcome: Any,
            out: Path) -> str:
    from convbench import report  # noqa: PLC0415

    threads = (outcome.threads or {}).get("threads")
    head = (f"## {suite}: {settings.backend}, mode {settings.mode}, threads {threads}, "
            f"min {settings.min_reps} reps / {settings.min_time} s, seed {settings.seed}\n\n"
            f"Results: `{out}`")
    if outcome.skipped_existing:
        head += f" ({outcome.skipped_existing} measurements reused from the file)"
    parts = [head, "### Per layer", report.layer_table(records, baseline)]
    if settings.mode != "accuracy":
        parts += ["### Whole network (sum of median x repeat)",
                  report.network_table(records, baseline)]
    return "\n\n".join(parts)


def _roof_for_run(measure: bool, threads: int | None, backend: str) -> dict[str, Any] | None:
    from convbench import roof  # noqa: PLC0415

    if measure:
        result = roof.measure_roof(threads, backend)
        roof.save_cached(result)
        return result
    return roof.load_cached()


# ----------------------------------------------------------------------- roof
def cmd_roof(args: argparse.Namespace) -> int:
    from convbench import roof  # noqa: PLC0415
    from convbench.results import ResultWriter  # noqa: PLC0415

    result = roof.measure_roof(args.threads, args.backend)
    path = roof.save_cached(result)
    print(roof.roof_table(result))
    print(f"\ncached in {path}; 'convbench run' attaches it to each run's environment")
    if args.into:
        with ResultWriter(args.into) as writer:
            writer.write(result)
        print(f"appended to {args.into}")
    return EXIT_OK


# --------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    from convbench.publish import write_report  # noqa: PLC0415

    files = write_report(args.runs, args.out, budget=args.error_budget, title=args.title)
    print(f"wrote {len(files)} files to {args.out}: " + ", ".join(f.name for f in files))
    return EXIT_OK


# ---------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    from convbench import check, runner  # noqa: PLC0415

    suites = list_suites() if args.suite == "all" else [s for s in args.suite.split(",") if s]
    dtypes = [normalize_dtype(DT_TO_DTYPE.get(d, d)) for d in args.dtype.split(",") if d]
    if args.backend == "gpu" and (reason := _gpu_missing_reason()) is not None:
        print(f"convbench: no GPU present ({reason})", file=sys.stderr)
        return EXIT_USAGE
    names = _select_kernels(args.algo, args.backend)
    settings = runner.SweepSettings(backend=args.backend, mode="accuracy", seed=args.seed,
                                    isolate=not args.no_isolate, fill=args.fill)
    pattern = re.compile(args.match) if args.match else None
    tasks = []
    for suite in suites:
        for dtype in dtypes:
            layers = [x for x in load_suite(suite, batch=args.batch, dtype=dtype, bias=args.bias)
                      if pattern is None or pattern.search(x.problem.name)
                      or pattern.search(str(x.problem))]
            tasks += runner.plan_tasks(layers, names, Path(suite).stem, settings)
    if not tasks:
        raise ValueError("nothing to check: no layer matches")
    path = Path(args.baseline) if args.baseline else check.default_baseline_path(
        args.backend, args.fill)
    outcome = _run_with_progress(runner, tasks, settings, None, set(),
                                 show=not args.no_progress and sys.stderr.isatty())
    if outcome.interrupted:
        print("interrupted: nothing was compared or written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.update:
        from convbench.results import environment  # noqa: PLC0415

        baseline = check.Baseline.load(path) if path.exists() else check.Baseline()
        count = baseline.update(outcome.records)
        env = environment(args.backend)
        baseline.meta = {"backend": args.backend, "fill": args.fill, "seed": args.seed,
                         "batch": args.batch, "bias": args.bias, "cpu_model": env["cpu_model"],
                         "versions": env["versions"], "blas": env["blas"]}
        baseline.save(path)
        print(f"wrote {count} entries to {path} ({len(baseline.entries)} in all)")
        return EXIT_OK
    findings, passed = check.compare_to_baseline(outcome.records,
                                                 check.Baseline.load(path), args.factor)
    print(f"checked {len(outcome.records)} measurements against {path}: {passed} passed, "
          f"{len(findings)} finding(s) (factor {args.factor}, floors "
          f"{', '.join(f'{m} {v:g}' for m, v in check.FLOOR_UNITS.items())})")
    if findings:
        print(check.findings_table(findings))
        return EXIT_REGRESSION
    return EXIT_OK


# -------------------------------------------------------------------- compare
def cmd_compare(args: argparse.Namespace) -> int:
    from convbench import report, results  # noqa: PLC0415

    old, new = results.load_run(args.old), results.load_run(args.new)
    rows = results.compare_runs(old, new, time_tol=args.time_tol, err_tol=args.err_tol)
    if not rows:
        print("the two runs share no (problem, kernel) measurement", file=sys.stderr)
        return EXIT_USAGE
    print(report.comparison_table(rows))
    flagged = [r for r in rows if r.regressions]
    print(f"\n{len(rows)} compared, {len(flagged)} regression(s) "
          f"(time tolerance {args.time_tol:.0%}, error tolerance x{args.err_tol})")
    return EXIT_REGRESSION if flagged else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
