"""``convbench ab BASE HEAD``: two source trees timed paired; exit 1 on a regression.

``convbench ab --calibrate BASE`` runs BASE against itself and stores each
kernel's threshold for this machine (see :mod:`convbench.ab.thresholds`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from convbench.cli.common import (
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_USAGE,
    add_direction_option,
    non_negative_float,
    positive_float,
    positive_int,
)
from convbench.contract import BACKENDS

#: What ``--algo`` means by default: convbench's own CPU kernels that the issue's study
#: compares (every kernel with ``all``; baselines are libraries, not the code under test).
DEFAULT_ALGOS = "im2col,winograd,direct"


def add_parser(sub: Any, name: str) -> None:
    from convbench.cli.sweep import add_layer_options  # noqa: PLC0415

    ab = sub.add_parser(name, help="time two source trees paired (A/B); exit 1 on a regression",
                        description="Time the kernels of two convbench source trees (BASE and "
                                    "HEAD) paired: ABBA blocks over fresh process pairs. Exit 1 "
                                    "where a kernel x layer is slower in HEAD, or ok in BASE "
                                    "and failing in HEAD.")
    ab.add_argument("trees", nargs="+", metavar="TREE",
                    help="BASE and HEAD: two source trees (checkouts, git worktrees), or two "
                         "revisions with --repo; with --calibrate, BASE alone")
    ab.add_argument("--repo", metavar="DIR",
                    help="the TREEs are revisions of this git repository, checked out into "
                         "temporary worktrees")
    ab.add_argument("--calibrate", action="store_true",
                    help="run BASE against itself (A/A) and store each kernel's threshold "
                         "for this machine and thread count in the user's cache directory")
    ab.add_argument("--suite", default="resnet50",
                    help="comma list of suite names or files (default resnet50)")
    ab.add_argument("--backend", choices=BACKENDS, default="cpu")
    ab.add_argument("--algo", default=DEFAULT_ALGOS,
                    help=f"comma list of kernels, or 'all' (default {DEFAULT_ALGOS})")
    add_layer_options(ab)
    add_direction_option(ab)
    ab.add_argument("--threads", type=positive_int,
                    help="Numba/BLAS threads of each worker (default: all cores)")
    ab.add_argument("--count", choices=["time", "instructions"], default="time",
                    help="time (default), or instructions: callgrind's count of the calls, "
                         "on one thread (exact; needs valgrind)")
    ab.add_argument("--cpu", default="haswell",
                    help="--count instructions: the AVX2 target both sides compile and "
                         "dispatch for (default haswell)")
    ab.add_argument("--calls", type=positive_int, default=1,
                    help="--count instructions: calls counted per figure, after prepare's "
                         "first call (default 1: the count is the same every time)")
    ab.add_argument("--threshold", type=positive_float,
                    help="t for every kernel (a ratio >= 1 + t may be 'slower'); default: "
                         "this machine's calibration, else 0.10")
    ab.add_argument("--pairs", type=positive_int, default=5,
                    help="fresh process pairs, at least 5 (default 5)")
    ab.add_argument("--blocks", type=positive_int, default=2,
                    help="ABBA blocks per process pair and kernel x layer (default 2)")
    ab.add_argument("--window", type=positive_float, default=0.07,
                    help="timed seconds of each window of a block (default 0.07)")
    ab.add_argument("--cooldown", type=non_negative_float, default=0.08,
                    help="longest pause before each window's warm calls, and longest wait "
                         "for the other side's threads to go idle (default 0.08)")
    ab.add_argument("--seed", type=int, default=0,
                    help="seed of the inputs, the orders and the bootstrap (default 0)")
    ab.add_argument("--timeout", type=positive_float, default=600.0,
                    help="seconds a worker may take over one request (default 600)")
    ab.add_argument("--out", help="JSONL file to write the records to")
    ab.add_argument("--table", help="also write the printed Markdown to this file")


def _check_trees(args: argparse.Namespace) -> tuple[str, ...]:
    """The trees' labels; the trees themselves checked first where they are folders."""
    from convbench.ab.trees import check_tree  # noqa: PLC0415

    wanted = 1 if args.calibrate else 2
    if len(args.trees) != wanted:
        takes = "--calibrate takes BASE alone" if args.calibrate else "ab takes BASE and HEAD"
        raise ValueError(f"{takes}: got {len(args.trees)} tree(s) ({' '.join(args.trees)})")
    labels = ("BASE", "HEAD")[:wanted]
    if not args.repo:
        for tree, label in zip(args.trees, labels, strict=True):
            check_tree(tree, label)
    return labels


@contextlib.contextmanager
def _trees(args: argparse.Namespace) -> Iterator[list[Path]]:
    from convbench.ab.trees import check_tree, checked_out  # noqa: PLC0415

    labels = _check_trees(args)
    if args.repo:
        with checked_out(args.repo, args.trees) as paths:
            yield [check_tree(p, label) for p, label in zip(paths, labels, strict=True)]
        return
    yield [check_tree(p, label) for p, label in zip(args.trees, labels, strict=True)]


def _tasks(args: argparse.Namespace) -> tuple[list[Any], str]:
    from convbench.ab.schedule import AbTask  # noqa: PLC0415
    from convbench.cli.common import selected_work  # noqa: PLC0415
    from convbench.cli.sweep import layer_overrides  # noqa: PLC0415
    from convbench.registry import get_kernel  # noqa: PLC0415

    args.descriptors = []
    layers, suite, names = selected_work(args, layer_overrides(args))
    if args.count == "instructions":
        if args.backend != "cpu":
            raise ValueError("--count instructions counts CPU kernels: use --backend cpu")
        libraries = [n for n in names if get_kernel(n, args.backend).kind == "baseline"]
        if libraries and args.algo != "all":
            what = "is a baseline" if len(libraries) == 1 else "are baselines"
            raise ValueError(f"--count instructions compares convbench's own kernels; "
                             f"{', '.join(libraries)} {what} "
                             "(a library such as oneDNN, whose code neither tree changes, and "
                             "which Valgrind cannot run on one AVX2 thread as it runs here): "
                             "leave it out of --algo")
        names = [n for n in names if n not in libraries]
    tasks = [AbTask(kernel=k, descriptor=layer.descriptor, name=layer.name, suite=label,
                    repeat=layer.repeat, backend=args.backend)
             for label, layer in layers if layer.problem is not None for k in names]
    if not tasks:
        raise ValueError("nothing to compare: no layer convbench can model was selected")
    return tasks, suite


def main(args: argparse.Namespace, command: list[str]) -> int:
    from convbench.ab import instructions  # noqa: PLC0415
    from convbench.ab.controller import AbSettings, compare_trees, exit_status  # noqa: PLC0415
    from convbench.ab.schedule import PairingSettings  # noqa: PLC0415
    from convbench.ab.sides import WorkerError  # noqa: PLC0415
    from convbench.ab.thresholds import thresholds_for  # noqa: PLC0415
    from convbench.ab.trees import commit_of  # noqa: PLC0415
    from convbench.measure.threads import default_threads  # noqa: PLC0415
    from convbench.store.environment import platform_fingerprint  # noqa: PLC0415

    _check_trees(args)
    counting = args.count == "instructions"
    if counting and args.calibrate:
        raise ValueError("--calibrate measures the noise of time; instruction counts have none")
    if counting and (reason := instructions.missing_tools()) is not None:
        raise FileNotFoundError(f"--count instructions: {reason}")
    tasks, suite = _tasks(args)
    threads = 1 if counting else (args.threads or default_threads())
    pairing = PairingSettings(pairs=args.pairs, blocks=args.blocks, window_s=args.window,
                              cooldown_s=args.cooldown, seed=args.seed)
    settings = AbSettings(pairing=pairing, threads=threads, count=args.count, cpu=args.cpu,
                          calls=args.calls, timeout=args.timeout, seed=args.seed)
    fingerprint = platform_fingerprint(args.backend)
    kernels = list(dict.fromkeys(t.kernel for t in tasks))
    if args.calibrate:
        thresholds = thresholds_for(kernels, fingerprint["id"], threads, override=1.0)
    else:
        thresholds = thresholds_for(kernels, fingerprint["id"], threads, args.threshold,
                                    instructions=counting)
        print("Thresholds (t):\n" + "\n".join(f"  {line}" for line in thresholds.lines()),
              file=sys.stderr)
    with _trees(args) as trees:
        base, head = trees[0], trees[-1]
        about = {"suite": suite, "base": str(base), "head": str(head),
                 "base_commit": commit_of(base), "head_commit": commit_of(head),
                 "threads": threads, "count": args.count, "cpu": args.cpu if counting else None,
                 "calls": args.calls if counting else None, "calibrate": args.calibrate,
                 "pairing": asdict(pairing) if not counting else None,
                 "algo": kernels, "match": args.match, "batch": args.batch,
                 "direction": args.direction}
        print(f"convbench ab: {len(tasks)} kernel x layer, BASE {base}, HEAD {head}",
              file=sys.stderr)
        from convbench.measure import noise  # noqa: PLC0415

        start = None if counting else noise.snapshot()
        try:
            outcome = compare_trees(base, head, tasks, settings, thresholds,
                                    progress=lambda line: print(line, file=sys.stderr))
        except WorkerError as exc:
            # A HEAD whose worker dies fails the comparison; BASE's cannot be judged.
            print(f"convbench ab: error: {exc}", file=sys.stderr)
            return EXIT_REGRESSION if exc.label == "HEAD" and not args.calibrate \
                else EXIT_USAGE
        machine = None if counting else noise.noise(start, noise.snapshot())
    about["workers"] = outcome.workers
    about["seconds"] = round(outcome.seconds, 1)
    if args.calibrate:
        return _finish_calibration(args, command, outcome, about, fingerprint, threads, machine)
    code = exit_status(outcome.records)
    return _finish(args, command, outcome.records, about, thresholds.lines(), code, fingerprint,
                   machine)


def _environment(fingerprint: dict[str, Any], about: dict[str, Any]) -> dict[str, Any]:
    """The environment each record carries (the header has the whole of it)."""
    from convbench.store.environment import cpu_model  # noqa: PLC0415

    return {"fingerprint": fingerprint.get("id"), "cpu_model": cpu_model(),
            "threads": about["threads"], "count": about["count"], "cpu": about["cpu"],
            "python": sys.version.split()[0]}


def _finish(args: argparse.Namespace, command: list[str], records: list[dict[str, Any]],
            about: dict[str, Any], threshold_lines: list[str], code: int,
            fingerprint: dict[str, Any], machine: dict[str, Any] | None) -> int:
    from convbench.ab.report import text  # noqa: PLC0415

    env_short = _environment(fingerprint, about)
    for rec in records:
        rec.update(base_commit=about["base_commit"], head_commit=about["head_commit"],
                   environment=env_short)
    printed = text(records, about, threshold_lines, code)
    print(printed)
    if args.out or args.table:
        _write(args, command, records, about, printed, machine)
    return code


def _provenance(command: list[str], about: dict[str, Any], machine: dict[str, Any] | None
                ) -> dict[str, Any]:
    from convbench.store import provenance  # noqa: PLC0415

    if about["count"] == "instructions":
        repetitions: Any = {"count": "instructions", "calls": about["calls"],
                            "process_pairs": 1, "threads": 1}
        noise = provenance.noise_verdict(None, "instruction counts do not depend on "
                                               "machine noise")
    else:
        repetitions = {"count": "time", **about["pairing"], "threads": about["threads"]}
        noise = provenance.noise_verdict(machine)
    return provenance.provenance(repetitions=repetitions, noise=noise, command=command)


def _write(args: argparse.Namespace, command: list[str], records: list[dict[str, Any]],
           about: dict[str, Any], printed: str, machine: dict[str, Any] | None) -> None:
    from convbench.store import provenance  # noqa: PLC0415
    from convbench.store.environment import environment  # noqa: PLC0415
    from convbench.store.jsonl import header_record, write_records  # noqa: PLC0415

    prov = _provenance(command, about, machine)
    if args.out:
        Path(args.out).unlink(missing_ok=True)  # a run's file holds that run alone
        header = header_record(command, {"ab": about, "backend": args.backend},
                               environment(args.backend), prov)
        tail = [{"type": "noise", **machine}] if machine is not None else []
        write_records(args.out, [header, *records, *tail])
    if args.table:
        Path(args.table).write_text(provenance.with_markdown(printed, prov) + "\n")


def _finish_calibration(args: argparse.Namespace, command: list[str], outcome: Any,
                        about: dict[str, Any], fingerprint: dict[str, Any], threads: int,
                        machine: dict[str, Any] | None) -> int:
    from convbench.ab import thresholds as th  # noqa: PLC0415

    by_kernel: dict[str, list[list[list[float]]]] = {}
    for rec in outcome.records:
        if rec.get("block_ratios"):
            by_kernel.setdefault(rec["kernel"], []).append(rec["block_ratios"])
    if not by_kernel:
        raise ValueError("the A/A run timed nothing: no threshold to calibrate")
    found = {k: th.calibrate_kernel(layers, seed=args.seed) for k, layers in by_kernel.items()}
    path = th.save(fingerprint, threads, found,
                   {"base_commit": about["base_commit"], "suite": about["suite"],
                    "match": about["match"], "batch": about["batch"],
                    "pairing": about["pairing"]})
    lines = [f"{k}: t = {v.t:.3f} (A/A over {v.layers} layers x {v.pairs} pairs; quantile "
             f"{v.quantile:.4f} = 1 - {v.alpha}/{v.layers})" for k, v in found.items()]
    print(f"Calibrated thresholds for machine {fingerprint['id']}, {threads} threads, stored "
          f"in {path}:\n" + "\n".join(f"  {line}" for line in lines), file=sys.stderr)
    for rec in outcome.records:
        if rec["kernel"] in found and rec.get("ratio") is not None:
            from convbench.ab.verdict import verdict  # noqa: PLC0415

            t = found[rec["kernel"]].t
            rec.update(threshold=t, verdict=verdict(rec["ratio"], tuple(rec["ci95"]), t))
    _finish(args, command, outcome.records, about, lines, EXIT_OK, fingerprint, machine)
    return EXIT_OK
