"""Pairing: BASE and HEAD timed in ABBA blocks, over fresh process pairs in random order.

For each of ``pairs`` process pairs (two fresh workers, one per side, alive
at once), every kernel x layer is prepared on both sides, in an order shuffled
anew for each pair, and timed in ``blocks`` blocks. A block is four windows,
ABBA or BAAB (drawn at random), each window being the worker's cool-down, its
warm calls and ``window_s`` seconds of timed calls -- and, where the side
changes, first a wait until the other side's threads are idle (its BLAS
threads spin on after its window); one block lasts about
four times ``cooldown_s + warm_s + window_s``, under a second with the
defaults, far shorter than the drifts of a shared machine (tens of seconds).
The block's paired ratio is :func:`convbench.ab.verdict.block_ratio` of its
window medians. The first pair also saves each side's first output, for the
accuracy check.

The sides are anything with :class:`Side`'s methods: worker processes in a
run, a fake clock in the tests.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from convbench.ab.sides import wait_until_idle
from convbench.ab.verdict import block_ratio
from convbench.measure.cooldown import WARM_S

#: Fewest process pairs: the interval over pairs needs several to mean anything.
MIN_PAIRS = 5


@dataclass(frozen=True)
class AbTask:
    """One kernel x layer (x direction) to compare."""

    kernel: str
    descriptor: str
    name: str = ""
    suite: str = ""
    repeat: int = 1
    backend: str = "cpu"

    @property
    def key(self) -> str:
        return f"{self.kernel} {self.descriptor}"


@dataclass(frozen=True)
class PairingSettings:
    """How the sides are paired and timed (see the module docstring)."""

    pairs: int = MIN_PAIRS
    blocks: int = 2
    window_s: float = 0.07
    cooldown_s: float = 0.08
    warm_s: float = WARM_S
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pairs < MIN_PAIRS:
            raise ValueError(f"--pairs must be at least {MIN_PAIRS} (the interval is over "
                             f"process pairs), got {self.pairs}")
        if self.blocks < 1:
            raise ValueError(f"--blocks must be at least 1, got {self.blocks}")
        if not self.window_s > 0:
            raise ValueError(f"--window must be positive, got {self.window_s}")


class Side(Protocol):
    """One side's worker, as the pairing uses it."""

    def prepare(self, task: AbTask, inputs: Path, output: Path | None) -> dict[str, Any]:
        """Prepare ``task``'s kernel and make its first call; the worker's reply."""

    def time(self, task: AbTask, settings: PairingSettings) -> list[float]:
        """One window's timed calls (seconds each), after its cool-down and warm calls."""

    def release(self, task: AbTask) -> None:
        """Drop ``task``'s prepared call."""

    def settle(self, limit: float) -> None:
        """Wait, at most ``limit`` s, until this side's threads are idle (before the other
        side's window)."""

    def close(self) -> None:
        """End the worker."""


@dataclass
class TaskTimes:
    """What the pairing measured of one task."""

    clusters: list[list[float]] = field(default_factory=list)  # block ratios per pair
    base_windows_s: list[float] = field(default_factory=list)  # window medians, BASE
    head_windows_s: list[float] = field(default_factory=list)
    block_s: list[float] = field(default_factory=list)  # each block's wall time
    #: Both sides' replies where a later pair failed what the first pair ran.
    later_failure: tuple[dict[str, Any], dict[str, Any]] | None = None


#: Called with a task and both sides' first-pair replies; True where it is to be timed.
Admit = Callable[[AbTask, dict[str, Any], dict[str, Any]], bool]


def run_pairs(tasks: Sequence[AbTask], start_pair: Callable[[int], tuple[Side, Side]],
              settings: PairingSettings, inputs: Callable[[AbTask], Path],
              outputs: Callable[[AbTask, str], Path], admit: Admit,
              clock: Callable[[], float] = time.perf_counter,
              progress: Callable[[str], None] | None = None) -> dict[str, TaskTimes]:
    """Time every admitted task over ``settings.pairs`` fresh process pairs.

    Parameters
    ----------
    tasks : sequence of AbTask
    start_pair : callable
        ``start_pair(i)`` starts pair ``i``'s two workers: ``(base, head)``.
    settings : PairingSettings
    inputs : callable
        The ``.npz`` file of a task's inputs.
    outputs : callable
        Where a side (``"base"``, ``"head"``) saves a task's first output (first pair).
    admit : callable
        Decides, from both sides' first-pair replies, whether a task is timed
        (both ran, and their outputs passed the accuracy check).
    clock : callable
        The block's wall clock (a fake one in the tests).
    progress : callable, optional
        Gets a line after each pair.
    """
    rng = random.Random(settings.seed)
    found = {t.key: TaskTimes() for t in tasks}
    admitted = {t.key: True for t in tasks}
    for i in range(settings.pairs):
        started = clock()
        base, head = start_pair(i)
        try:
            order = list(tasks)
            rng.shuffle(order)
            for task in order:
                if not admitted[task.key]:
                    continue
                _one_task(task, i, base, head, settings, rng, inputs, outputs,
                          found[task.key], admitted, admit, clock)
        finally:
            base.close()
            head.close()
        if progress is not None:
            timed = sum(admitted.values())
            progress(f"pair {i + 1}/{settings.pairs}: {timed} kernel x layer timed, "
                     f"{clock() - started:.0f} s")
    return found


def _one_task(task: AbTask, pair: int, base: Side, head: Side, settings: PairingSettings,
              rng: random.Random, inputs: Callable[[AbTask], Path],
              outputs: Callable[[AbTask, str], Path], times: TaskTimes,
              admitted: dict[str, bool], admit: Admit, clock: Callable[[], float]) -> None:
    first = pair == 0
    sides = {"A": base, "B": head}
    replies = {}
    # Which side prepares first is drawn too: a prepare may leave the machine warm.
    prepare_order = rng.sample(["A", "B"], 2)
    for label in prepare_order:
        where = outputs(task, "base" if label == "A" else "head") if first else None
        replies[label] = sides[label].prepare(task, inputs(task), where)
    try:
        if first and not admit(task, replies["A"], replies["B"]):
            admitted[task.key] = False
            return
        if not first and not all(r.get("status") == "ok" for r in replies.values()):
            admitted[task.key] = False  # ran in the first pair, not in this one: say so
            times.later_failure = (replies["A"], replies["B"])
            return
        ratios = []
        previous = prepare_order[-1]  # its threads may still spin from the first call
        for _ in range(settings.blocks):
            order = rng.choice(["ABBA", "BAAB"])
            t0 = clock()
            medians = []
            for s in order:
                if previous is not None and previous != s:
                    sides[previous].settle(settings.cooldown_s)
                medians.append(statistics.median(sides[s].time(task, settings)))
                previous = s
            times.block_s.append(clock() - t0)
            ratios.append(block_ratio(order, medians))
            times.base_windows_s += [m for s, m in zip(order, medians, strict=True) if s == "A"]
            times.head_windows_s += [m for s, m in zip(order, medians, strict=True) if s == "B"]
        times.clusters.append(ratios)
    finally:
        base.release(task)
        head.release(task)


@dataclass
class WorkerSide:
    """A :class:`Side` that is a :class:`~convbench.ab.sides.WorkerProcess`."""

    process: Any
    timeout: float | None = None

    def prepare(self, task: AbTask, inputs: Path, output: Path | None) -> dict[str, Any]:
        return self.process.request("prepare", self.timeout, key=task.key,
                                    problem=task.descriptor, kernel=task.kernel,
                                    backend=task.backend, inputs=str(inputs),
                                    output=str(output) if output else None)

    def time(self, task: AbTask, settings: PairingSettings) -> list[float]:
        return self.process.request("time", self.timeout, key=task.key,
                                    window_s=settings.window_s,
                                    cooldown_s=settings.cooldown_s,
                                    warm_s=settings.warm_s)["samples_s"]

    def count(self, task: AbTask, calls: int, shim: Path, dump_prefix: str) -> int:
        return int(self.process.request("count", self.timeout, key=task.key, calls=calls,
                                        shim=str(shim), dump_prefix=dump_prefix)
                   ["instructions"])

    def release(self, task: AbTask) -> None:
        self.process.request("release", self.timeout, key=task.key)

    def settle(self, limit: float) -> None:
        wait_until_idle(self.process.pid, limit)

    def close(self) -> None:
        self.process.close()
