"""``convbench ab``'s run: two trees' workers, the pairing or the count, the records.

:func:`compare_trees` prepares the inputs, starts the workers, checks each
side's first output against the float64 reference, times (or counts) the
kernels paired, and turns what it measured into one record per kernel x layer
x direction with its verdict. :func:`exit_status` says whether the run found
a regression: a ``slower`` verdict, or a kernel x layer that was ``ok`` in
BASE and is not in HEAD (it raised, refused, or its output left its envelope).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convbench.ab import instructions
from convbench.ab.accuracy import side_outcome, write_inputs
from convbench.ab.schedule import AbTask, PairingSettings, Side, WorkerSide, run_pairs
from convbench.ab.sides import WorkerProcess, thread_environment
from convbench.ab.thresholds import Thresholds
from convbench.ab.verdict import judge
from convbench.measure.metrics import ReferenceCache
from convbench.problem import ConvProblem

#: Verdicts of records that were not compared in time.
HEAD_FAILS = "head_fails"
BASE_FAILS = "base_fails"
REFUSED = "refused"
#: Verdicts that make ``ab`` exit 1.
REGRESSIONS = ("slower", HEAD_FAILS)


@dataclass(frozen=True)
class AbSettings:
    """Everything about a run but its trees and tasks."""

    pairing: PairingSettings = field(default_factory=PairingSettings)
    threads: int = 1
    count: str = "time"  # or "instructions"
    cpu: str = instructions.DEFAULT_CPU
    calls: int = 1
    timeout: float | None = 600.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.count not in ("time", "instructions"):
            raise ValueError(f"--count is 'time' or 'instructions', got {self.count!r}")
        if self.calls < 1:
            raise ValueError(f"--calls must be at least 1, got {self.calls}")


@dataclass
class Outcome:
    """The records of a run, with what is needed to print them."""

    records: list[dict[str, Any]]
    workers: dict[str, str]  # the convbench file each side imported
    seconds: float


def exit_status(records: Sequence[dict[str, Any]]) -> int:
    """1 where any record's verdict is a regression (:data:`REGRESSIONS`), else 0."""
    return 1 if any(r.get("verdict") in REGRESSIONS for r in records) else 0


class _Accuracy:
    """Holds each side's first output to its envelope, and remembers the outcome."""

    def __init__(self, seed: int, work: Path, tasks: Sequence[AbTask]) -> None:
        self.seed = seed
        self.work = work
        # A reference per layer, kept until its last kernel is checked: the first
        # pair meets the layers in random order.
        self.left = Counter(t.descriptor for t in tasks)
        self.references: dict[str, ReferenceCache] = {}
        self.outcomes: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    def admit(self, task: AbTask, base: dict[str, Any], head: dict[str, Any]) -> bool:
        p = ConvProblem.parse(task.descriptor)
        references = self.references.setdefault(task.descriptor, ReferenceCache())
        out_base = side_outcome(p, base, output_path(self.work, task, "base"), self.seed,
                                references)
        out_head = side_outcome(p, head, output_path(self.work, task, "head"), self.seed,
                                references)
        self.left[task.descriptor] -= 1
        if self.left[task.descriptor] <= 0:
            self.references.pop(task.descriptor, None)
        self.outcomes[task.key] = (out_base, out_head)
        return out_base["status"] == "ok" and out_head["status"] == "ok"


def output_path(work: Path, task: AbTask, side: str) -> Path:
    """Where a side saves a task's first output."""
    return work / f"out-{side}-{abs(hash(task.key)):x}.npz"


def _inputs(work: Path, seed: int) -> Callable[[AbTask], Path]:
    made: dict[str, Path] = {}

    def inputs(task: AbTask) -> Path:
        if task.descriptor not in made:
            path = work / f"in-{len(made)}.npz"
            made[task.descriptor] = write_inputs(ConvProblem.parse(task.descriptor), path, seed)
        return made[task.descriptor]

    return inputs


def compare_trees(base: Path, head: Path, tasks: Sequence[AbTask], settings: AbSettings,
                  thresholds: Thresholds, progress: Callable[[str], None] | None = None,
                  start_pair: Callable[[int], tuple[Side, Side]] | None = None,
                  clock: Callable[[], float] = time.perf_counter) -> Outcome:
    """Run ``tasks`` on BASE and HEAD paired (timed or counted); one record per task.

    ``start_pair`` and ``clock`` replace the worker processes and the wall
    clock (the tests' fake sides); the trees are then only labels.
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="convbench-ab-") as tmp:
        work = Path(tmp)
        base, head = aliases(work, base, head)
        accuracy = _Accuracy(settings.seed, work, tasks)
        inputs = _inputs(work, settings.seed)
        workers: dict[str, str] = {}

        def start(env: dict[str, str], prefix: Sequence[str] = ()
                  ) -> tuple[WorkerSide, WorkerSide]:
            """BASE's and HEAD's workers, importing their trees at once."""
            processes = []
            try:
                for label, tree in (("BASE", base), ("HEAD", head)):
                    processes.append(WorkerProcess(tree, env, prefix, label=label, wait=False))
                for process in processes:
                    process.wait_ready()
                    workers[process.label] = process.convbench_file
            except BaseException:
                for process in processes:
                    process.kill()
                raise
            return (WorkerSide(processes[0], settings.timeout),
                    WorkerSide(processes[1], settings.timeout))

        if settings.count == "time":
            env = thread_environment(settings.threads)

            def start_workers(i: int) -> tuple[Side, Side]:
                return start(env)

            found = run_pairs(tasks, start_pair or start_workers, settings.pairing, inputs,
                              lambda t, side: output_path(work, t, side), accuracy.admit,
                              clock=clock, progress=progress)
            measured = {k: _timed_figures(v) for k, v in found.items()}
        else:
            measured = _count(tasks, settings, work, inputs, accuracy, start, progress)
        records = [_record(t, accuracy.outcomes.get(t.key), measured.get(t.key),
                           thresholds.of(t.kernel), settings) for t in tasks]
    return Outcome(records, workers, time.perf_counter() - started)


def aliases(work: Path, base: Path, head: Path) -> tuple[Path, Path]:
    """Links to the two trees under names of one length, for the workers to import from.

    A tree's path is in every module's ``__file__``, in ``sys.path`` and in the
    strings a worker builds from them; paths of different lengths leave the
    two processes' heaps laid out differently, and with them the alignment of
    the arrays a kernel allocates -- which changes how many iterations a
    vectorized loop peels. Two worktrees of one commit then counted a few
    hundred instructions apart per layer; through links of equal length they
    count the same.
    """
    links = work / "trees"
    links.mkdir()
    (links / "base").symlink_to(Path(base).resolve(), target_is_directory=True)
    (links / "head").symlink_to(Path(head).resolve(), target_is_directory=True)
    return links / "base", links / "head"


def _timed_figures(times: Any) -> dict[str, Any] | None:
    if times.later_failure is not None:
        return {"later_failure": times.later_failure}
    if not times.clusters:
        return None
    return {"clusters": times.clusters,
            "base_median_s": statistics.median(times.base_windows_s),
            "head_median_s": statistics.median(times.head_windows_s),
            "block_s_max": max(times.block_s)}


def _count(tasks: Sequence[AbTask], settings: AbSettings, work: Path,
           inputs: Callable[[AbTask], Path], accuracy: _Accuracy,
           start: Callable[..., tuple[WorkerSide, WorkerSide]],
           progress: Callable[[str], None] | None) -> dict[str, dict[str, Any]]:
    """Instruction counts: a native pass (Numba cache, outputs), then both under callgrind."""
    shim = instructions.build_shim()
    env = instructions.count_environment(settings.cpu)
    admitted = []
    native = start(env)

    def run_once(side: WorkerSide, name: str, task: AbTask) -> dict[str, Any]:
        try:
            return side.prepare(task, inputs(task), output_path(work, task, name))
        finally:
            side.release(task)

    try:
        with ThreadPoolExecutor(2) as pool:
            for task in tasks:
                inputs(task)  # written once, before both sides read it
                replies = list(pool.map(run_once, native, ("base", "head"), (task, task)))
                if accuracy.admit(task, *replies):
                    admitted.append(task)
    finally:
        for side in native:
            side.close()
    if progress is not None:
        progress(f"native pass: {len(admitted)} of {len(tasks)} kernel x layer run on both "
                 "sides and pass the accuracy check; counting them under callgrind")
    dumps = work / "callgrind"
    dumps.mkdir()
    prefix = instructions.valgrind_prefix(dumps)
    counted: dict[str, dict[str, Any]] = {}
    sides = start(env, prefix)

    def count_one(side: WorkerSide, task: AbTask) -> int:
        reply = side.prepare(task, inputs(task), None)
        if reply.get("status") != "ok":
            raise RuntimeError(f"{task.key} ran natively but not under valgrind: "
                               f"{reply.get('reason')}")
        try:
            return side.count(task, settings.calls, shim, instructions.dump_prefix(dumps))
        finally:
            side.release(task)

    # One thread each: the two sides count at once, on two cores.
    try:
        with ThreadPoolExecutor(2) as pool:
            for task in admitted:
                counts = list(pool.map(count_one, sides, (task, task)))
                counted[task.key] = {"clusters": [[counts[1] / counts[0]]],
                                     "base_instructions": counts[0] / settings.calls,
                                     "head_instructions": counts[1] / settings.calls}
    finally:
        for side in sides:
            side.close()
    return counted


def _record(task: AbTask, accuracy: tuple[dict[str, Any], dict[str, Any]] | None,
            measured: dict[str, Any] | None, threshold: float, settings: AbSettings
            ) -> dict[str, Any]:
    p = ConvProblem.parse(task.descriptor)
    rec: dict[str, Any] = {"type": "ab", "problem": task.descriptor, "name": task.name,
                           "suite": task.suite, "repeat": task.repeat, "kernel": task.kernel,
                           "backend": task.backend, "dir": p.dir, "count": settings.count,
                           "ratio": None, "ci95": None, "threshold": threshold,
                           "verdict": None}
    base, head = accuracy or ({"status": "failed", "reason": "not run"},) * 2
    rec["base"], rec["head"] = base, head
    if base["status"] == "skipped":
        rec["verdict"] = REFUSED
        rec["reason"] = f"BASE refuses it: {base.get('reason')}"
    elif base["status"] != "ok":
        rec["verdict"] = BASE_FAILS
        rec["reason"] = f"BASE {base['status']}: {base.get('reason')}"
    elif head["status"] != "ok":
        rec["verdict"] = HEAD_FAILS
        rec["reason"] = f"ok in BASE, {head['status']} in HEAD: {head.get('reason')}"
    elif measured is None:
        rec["verdict"] = HEAD_FAILS
        rec["reason"] = "ran in the first process pair, was not measured in a later one"
    elif "later_failure" in measured:
        later_base, later_head = measured["later_failure"]
        failed, reply = (("BASE", later_base) if later_base.get("status") != "ok"
                         else ("HEAD", later_head))
        rec["verdict"] = BASE_FAILS if failed == "BASE" else HEAD_FAILS
        rec["reason"] = (f"ran in the first process pair; in a later one {failed} "
                         f"{reply.get('status')}: {reply.get('reason')}")
    else:
        result = judge(measured["clusters"], threshold, settings.seed)
        rec.update(ratio=result.ratio, ci95=list(result.ci95), verdict=result.verdict,
                   pairs=result.pairs, blocks=result.blocks)
        rec.update({k: v for k, v in measured.items() if k != "clusters"})
        rec["block_ratios"] = measured["clusters"]
    return rec
