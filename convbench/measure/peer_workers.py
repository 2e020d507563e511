"""Interleaved comparisons in several worker processes, merged into one.

:func:`convbench.measure.peers.compare_layer` interleaves kernels and peers
within one process. Its passes share that process's state, so their spread
understates what a rerun in a fresh process moves. :class:`PeerWorkers`
keeps ``processes`` worker processes alive for a whole benchmark (each
spawned once, with the benchmark's thread counts, so that importing and
compiling happen once per process) and runs every layer's comparison in
each of them in turn, in an order rotated from layer to layer; the passes
are then merged into one :class:`~convbench.measure.peers.LayerComparison`
whose ``process_of_pass`` says which process each pass ran in, and whose
intervals are built over the processes
(:func:`convbench.measure.peers.ratio_interval`).

With ``processes=1`` everything runs in this process, as before.
"""

from __future__ import annotations

import multiprocessing
import statistics
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from convbench.measure.peers import LayerComparison, compare_layer, compute_ratios
from convbench.problem import ConvProblem

#: Worker processes of a comparison unless asked otherwise: the fewest that give a
#: between-process interval with a usable Student-t quantile (t(2) = 4.30).
DEFAULT_PROCESSES = 3

_pinned: Any = None


def _start_worker(threads: int | None) -> None:
    """Pin the worker's thread counts for its lifetime, as the parent pins its own."""
    global _pinned
    from convbench.measure.threads import pinned_threads  # noqa: PLC0415

    _pinned = pinned_threads(threads)
    _pinned.__enter__()


def _compare(suite: str, p: ConvProblem, names: list[str], peers: tuple[str, ...],
             kwargs: dict[str, Any]) -> LayerComparison:
    return compare_layer(suite, p, names, peers, **kwargs)


class PeerWorkers:
    """``processes`` spawned workers that each measure every layer (a context manager).

    Parameters
    ----------
    processes : int
        Worker processes (1: measure in this process).
    threads : int or None
        Thread count pinned in each worker (None: the defaults).
    """

    def __init__(self, processes: int = DEFAULT_PROCESSES, threads: int | None = None) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.processes = processes
        self.threads = threads
        self._pools: list[ProcessPoolExecutor] = []
        self._calls = 0

    def __enter__(self) -> PeerWorkers:
        if self.processes > 1:
            context = multiprocessing.get_context("spawn")
            self._pools = [ProcessPoolExecutor(1, mp_context=context,
                                               initializer=_start_worker,
                                               initargs=(self.threads,))
                           for _ in range(self.processes)]
        return self

    def __exit__(self, *exc: object) -> None:
        for pool in self._pools:
            pool.shutdown(wait=not exc[0], cancel_futures=True)
        self._pools = []

    def compare(self, suite: str, p: ConvProblem, names: list[str], peers: tuple[str, ...],
                **kwargs: Any) -> LayerComparison:
        """One layer in every worker, its passes merged (see the module docstring)."""
        if not self._pools:
            return compare_layer(suite, p, names, peers, **kwargs)
        return merge(self.run_each(_compare, suite, p, names, peers, kwargs), peers)

    def run_each(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """``fn(*args)`` in every worker, one after another in an order rotated from call to
        call; the results in worker order. ``fn`` must be importable by name (a module's
        top-level function). With one process: one result, from this process."""
        if not self._pools:
            return [fn(*args)]
        order = [(self._calls + i) % self.processes for i in range(self.processes)]
        self._calls += 1
        results = {index: self._pools[index].submit(fn, *args).result() for index in order}
        return [results[i] for i in range(self.processes)]


def merge(parts: list[LayerComparison], peers: tuple[str, ...]) -> LayerComparison:
    """One layer's comparisons from several processes as one, passes tagged by process.

    A kernel that failed or was left out in any process is left out of the
    merged timings (its error is kept), so that every series has the same passes.
    """
    first = parts[0]
    merged = LayerComparison(first.suite, first.name, first.problem, repeat=first.repeat)
    for part in parts:
        for name, error in part.errors.items():
            merged.errors.setdefault(name, error)
    names = [n for n in first.samples_ms if all(n in part.samples_ms for part in parts)]
    for name in names:
        merged.samples_ms[name] = [v for part in parts for v in part.samples_ms[name]]
        merged.medians_ms[name] = statistics.median(merged.samples_ms[name])
    merged.process_of_pass = [i for i, part in enumerate(parts)
                              for _ in range(len(part.samples_ms[names[0]]) if names else 0)]
    merged.rel_l2 = dict(first.rel_l2)
    merged.chosen = dict(first.chosen)
    merged.chosen_by_process = [dict(part.chosen) for part in parts]
    compute_ratios(merged, peers)
    return merged
