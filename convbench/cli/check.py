"""``convbench check``: re-measure errors and hold them to the committed accuracy baseline."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from convbench.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_USAGE,
    gpu_missing_reason,
    non_negative_float,
    positive_int,
    sweep_with_progress,
)
from convbench.contract import BACKENDS
from convbench.problem import DT_TO_DTYPE, normalize_dtype


def add_parser(sub: Any, name: str) -> None:
    chk = sub.add_parser(name, help="re-measure errors and compare with the committed "
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
    chk.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    chk.add_argument("--match", help="regex on layer names (or descriptors)")
    chk.add_argument("--seed", type=int, default=0)
    chk.add_argument("--baseline", help="baseline file "
                                        "(default results/accuracy/<backend>-<fill>.json)")
    chk.add_argument("--factor", type=non_negative_float, default=2.0,
                     help="flag errors above factor x baseline (default 2.0; floors apply)")
    chk.add_argument("--update", action="store_true",
                     help="rewrite the baseline entries of what was measured")
    chk.add_argument("--no-isolate", action="store_true", help="measure in this process")
    chk.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace, command: list[str]) -> int:
    from convbench.measure import compare, runner  # noqa: PLC0415
    from convbench.present.tables import findings_table  # noqa: PLC0415
    from convbench.problem.suites import list_suites, select_layers  # noqa: PLC0415
    from convbench.registry import select_kernels  # noqa: PLC0415
    from convbench.store.baselines import (  # noqa: PLC0415
        Baseline,
        baseline_meta,
        default_baseline_path,
    )
    from convbench.store.environment import environment  # noqa: PLC0415

    suites = list_suites() if args.suite == "all" else [s for s in args.suite.split(",") if s]
    dtypes = [normalize_dtype(DT_TO_DTYPE.get(d, d)) for d in args.dtype.split(",") if d]
    if args.backend == "gpu" and (reason := gpu_missing_reason()) is not None:
        print(f"convbench: no GPU present ({reason})", file=sys.stderr)
        return EXIT_USAGE
    names = select_kernels(args.algo, args.backend)
    settings = runner.SweepSettings(backend=args.backend, mode="accuracy", seed=args.seed,
                                    isolate=not args.no_isolate, fill=args.fill)
    pattern = re.compile(args.match) if args.match else None
    tasks = []
    for dtype in dtypes:
        layers = select_layers(suites, batch=args.batch, dtype=dtype, bias=args.bias)
        layers = [(s, x) for s, x in layers if pattern is None or pattern.search(x.name)
                  or pattern.search(x.descriptor)]
        tasks += runner.plan_tasks(layers, names, settings)
    if not tasks:
        raise ValueError("nothing to check: no layer matches")
    path = Path(args.baseline) if args.baseline else default_baseline_path(args.backend,
                                                                           args.fill)
    outcome = sweep_with_progress(tasks, settings, None, set(),
                                  show=False if args.no_progress else None)
    if outcome.interrupted:
        print("interrupted: nothing was compared or written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.update:
        baseline = Baseline.load(path) if path.exists() else Baseline()
        count = baseline.update(outcome.records)
        baseline.meta = baseline_meta({"backend": args.backend, "fill": args.fill,
                                       "seed": args.seed, "batch": args.batch,
                                       "bias": args.bias}, environment(args.backend))
        baseline.save(path)
        print(f"wrote {count} entries to {path} ({len(baseline.entries)} in all)")
        return EXIT_OK
    findings, passed = compare.compare_to_baseline(outcome.records, Baseline.load(path).entries,
                                                   args.factor)
    print(f"checked {len(outcome.records)} measurements against {path}: {passed} passed, "
          f"{len(findings)} finding(s) (factor {args.factor}, floors "
          f"{', '.join(f'{m} {v:g}' for m, v in compare.FLOOR_UNITS.items())})")
    if findings:
        print(findings_table(findings))
        return EXIT_REGRESSION
    return EXIT_OK
