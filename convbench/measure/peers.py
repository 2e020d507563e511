"""Kernels against their peers, interleaved in one process: ``A B C A B C ...``.

For each layer, every kernel and peer is prepared once and warmed up; then
the calls are interleaved for ``passes`` passes, so that the machine's drift
(other tenants, clocks) hits all of them alike. (A pass is this module's own
loop in one process; a sweep's *rounds* are separate processes, see
:mod:`convbench.measure.runner`.) Each sample times ``reps``
back-to-back calls on the kernels' clock, with ``reps`` calibrated so that a
sample lasts at least ``sample_time``; before every sample the comparison
pauses until the process's other threads are idle, at most ``cooldown``
seconds (:func:`convbench.measure.cooldown.cool_down`), then makes untimed
calls for :data:`~convbench.measure.cooldown.WARM_S` seconds (at least one),
so that every library is measured in its steady state (on 2 cores,
OpenBLAS's and torch's thread pools spin after their calls and take the
cores from whoever runs next, and the cores a pause leaves idle come back
slowly). The ratio of a pass is ``t_peer / t_kernel`` (> 1: the kernel is
faster); a layer's ratio is the median over passes.

Its interval comes from the level that varies most. Passes run in one
process share its state (buffer addresses, thread pools, where the compiled
code landed), and a rerun in another process moves further than the passes
of one process spread. So a comparison runs in several worker processes
(:mod:`convbench.measure.peer_workers`), and where it has passes from two or
more processes the interval is a Student-t interval on the log scale over
the processes' mean log ratios (``processes - 1`` degrees of freedom), never
narrower than the passes alone imply (:func:`ratio_interval`). From one
process only, it is the distribution-free interval of the median over the
passes; with 5 passes that is [min, max], whose confidence is 93.75%, not
95%, and the interval's label says so (:func:`median_rank_confidence`).

Nothing is reported from the samples it was chosen on. Best-of-convbench
(the fastest kernel per layer) and the fastest of a set of kernels (the
Winograd tiles) are cross-fitted (:func:`crossfit_samples`): the sample of a
pass comes from the kernel that was fastest on the *other* processes' passes
(the other passes, with one process), so that the luck of the samples that
picked it does not flatter it. Were every kernel as fast as every other,
best-of-convbench's ratio would be 1 within its interval.
:func:`geomean_over_passes` and :func:`whole_network_ratio` sum or average
the layers pass by pass and take their intervals from those per-pass values,
with the same between-process level.

Kernels that transform their weights once per weight tensor
(``caches_weights``) are also timed as ``NAME+prepare``, with ``prepare`` in
every call: what a framework that does not cache per weight tensor pays.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convbench.contract import refusal
from convbench.measure.clocks import Clock, make_clock
from convbench.measure.cooldown import WARM_S, cool_down, warm_up
from convbench.measure.inputs import make_inputs
from convbench.measure.stats import median_rank_interval
from convbench.measure.timing import bench
from convbench.problem import ConvProblem, to_host
from convbench.registry import get_kernel

#: Suffix of a weight-caching kernel timed with its ``prepare`` in every call.
PER_CALL = "+prepare"


@dataclass
class LayerComparison:
    """One layer's interleaved samples, reduced to medians and ratios.

    Attributes
    ----------
    ratios : dict
        kernel -> peer -> median over passes of ``t_peer / t_kernel``.
    intervals : dict
        kernel -> peer -> (lo, hi), the 95% interval of that median.
    medians_ms : dict
        Every kernel and peer -> median sample time (ms).
    errors : dict
        Kernel -> why it was left out (it raised while being prepared).
    rel_l2 : dict
        Kernel or peer -> ``||y - ref|| / ||ref||`` of its output, when a
        reference was given.
    samples_ms : dict
        Every kernel and peer -> its sample of each pass (ms), in pass order:
        what a sum over layers pairs pass by pass (:func:`whole_network_ratio`).
    repeat : int
        How often the network repeats the layer (the caller says).
    chosen : dict
        Kernel -> what its ``prepare`` chose and reported in its details
        (schedule, layout, tile...): the timings are of those choices (in the
        first process; ``chosen_by_process`` has every process's).
    process_of_pass : list of int
        The worker process each pass ran in (empty: all in one process).
    interval_level : dict
        Kernel -> peer -> what its interval is built from, in words.
    """

    suite: str
    name: str
    problem: str
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)
    intervals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    medians_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    rel_l2: dict[str, float] = field(default_factory=dict)
    samples_ms: dict[str, list[float]] = field(default_factory=dict)
    repeat: int = 1
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)
    process_of_pass: list[int] = field(default_factory=list)
    chosen_by_process: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    interval_level: dict[str, dict[str, str]] = field(default_factory=dict)

    def processes(self, passes: int) -> list[int]:
        """The process of each of ``passes`` passes (one process where none was recorded)."""
        return list(self.process_of_pass) if len(self.process_of_pass) == passes \
            else [0] * passes


def median_rank_confidence(n: int, j: int, k: int) -> float:
    """Confidence that the sorted samples ``j..k`` (0-based) of ``n`` bound the median.

    The number of samples below the median is Binomial(n, 1/2): the interval
    ``[x_(j), x_(k)]`` misses it when at most ``j`` or at least ``k + 1`` lie
    below. With 5 samples, [min, max] holds it with 30/32 = 93.75%.
    """
    return sum(math.comb(n, i) for i in range(j + 1, k + 1)) / 2 ** n


@dataclass(frozen=True)
class IntervalRatio:
    """A ratio with its interval and what the interval is built from.

    Attributes
    ----------
    value, lo, hi : float
    level : str
        ``"processes"`` (Student-t over the processes) or ``"passes"`` (order
        statistics over one process's passes).
    confidence : float
        Its nominal confidence (0.95, or an order-statistic interval's exact one).
    label : str
        The interval's level in words, for tables.
    """

    value: float
    lo: float
    hi: float
    level: str
    confidence: float
    label: str


def ratio_interval(per_pass: list[float], processes: list[int]) -> IntervalRatio:
    """The median of per-pass ratios with the interval of the level that varies most.

    Parameters
    ----------
    per_pass : list of float
        ``t_peer / t_kernel`` of each pass (or any positive per-pass value).
    processes : list of int
        The process of each pass.

    With passes from two or more processes: the log ratios' mean per process
    gives ``P`` values; the standard error is their standard deviation over
    ``sqrt(P)``, at least the one all passes give as if independent, and
    the interval is ``median x exp(+-t_{P-1} se)``. From one process: the
    order-statistic interval of the median over the passes.
    """
    from convbench.measure.stats import t_quantile  # noqa: PLC0415

    if not per_pass:
        raise ValueError("no passes")
    value = statistics.median(per_pass)
    groups: dict[int, list[float]] = {}
    for v, proc in zip(per_pass, processes, strict=True):
        groups.setdefault(proc, []).append(math.log(v))
    if len(groups) >= 2:
        means = [statistics.fmean(g) for g in groups.values()]
        logs = [math.log(v) for v in per_pass]
        between = statistics.stdev(means) / math.sqrt(len(means))
        passes = statistics.stdev(logs) / math.sqrt(len(logs)) if len(logs) > 1 else 0.0
        half = t_quantile(len(means) - 1) * max(between, passes)
        return IntervalRatio(value, value * math.exp(-half), value * math.exp(half),
                             "processes", 0.95,
                             f"95%, t over {len(means)} processes")
    ordered = sorted(per_pass)
    j, k = median_rank_interval(len(ordered))
    confidence = median_rank_confidence(len(ordered), j, k)
    label = (f"[min, max] of {len(ordered)} passes in one process, {confidence:.1%}"
             if (j, k) == (0, len(ordered) - 1) else
             f"{confidence:.1%}, order statistics of {len(ordered)} passes in one process")
    return IntervalRatio(value, ordered[j], ordered[k], "passes", confidence, label)


#: Name of best-of-convbench's cross-fitted samples in a :class:`LayerComparison`.
BEST = "best-of-convbench"


def crossfit_samples(r: LayerComparison, names: list[str]) -> tuple[list[float], list[str]] | None:
    """Per pass, the sample of the fastest of ``names``, chosen on other samples.

    For a pass of process ``p``, the kernel is the one whose median over the
    passes of every *other* process is the smallest; with one process, over
    every other pass. Returns ``(samples, choices)`` aligned with the passes,
    or None where none of ``names`` has samples. The choice never sees the
    sample it then reports, so the result carries no winner's curse.
    """
    ran = [n for n in names if r.samples_ms.get(n)]
    if not ran:
        return None
    count = len(r.samples_ms[ran[0]])
    ran = [n for n in ran if len(r.samples_ms[n]) == count]
    processes = r.processes(count)
    several = len(set(processes)) >= 2
    samples, choices = [], []
    for i in range(count):
        held_out = [k for k in range(count)
                    if (processes[k] != processes[i] if several else k != i)]
        if not held_out:  # a single pass: nothing else to choose on
            held_out = [i]
        pick = min(ran, key=lambda n: statistics.median(r.samples_ms[n][k] for k in held_out))
        samples.append(r.samples_ms[pick][i])
        choices.append(pick)
    return samples, choices


def chosen_details(fn: Any) -> dict[str, Any]:
    """The scalar entries of a prepared call's details: the choices ``prepare`` made."""
    details = getattr(fn, "details", None) or {}
    return {k: v for k, v in details.items() if isinstance(v, (str, int, float, bool))}


def best_kernel(r: LayerComparison, names: list[str]) -> str | None:
    """The fastest of ``names`` on the layer, by median over every sample (None if none of
    them ran). For a label only: figures come from :func:`crossfit_samples`."""
    ran = [n for n in names if n in r.medians_ms]
    return min(ran, key=lambda n: r.medians_ms[n]) if ran else None


def whole_network_ratio(results: list[LayerComparison], names: list[str], peer: str
                        ) -> tuple[float, float, float, float, float] | None:
    """``peer``'s whole-network time over best-of-``names``'s, with its 95% interval.

    Each pass's totals sum ``repeat x sample`` over the layers (the layers'
    pass ``i`` ran in the same process, interleaved with each other's pass
    ``i``); best-of takes, per layer and pass, the cross-fitted sample of
    :func:`crossfit_samples`. The ratio of a pass is ``peer total / best
    total``; the result is their median with :func:`ratio_interval`'s
    interval. Returns ``(median ratio, lo, hi, peer ms, best ms)``, or None
    where a layer lacks the peer or every one of ``names``, or the layers'
    passes differ.
    """
    w = whole_network(results, names, peer)
    return None if w is None else (w[0].value, w[0].lo, w[0].hi, w[1], w[2])


def whole_network(results: list[LayerComparison], names: list[str], peer: str
                  ) -> tuple[IntervalRatio, float, float] | None:
    """:func:`whole_network_ratio` with the interval's level: ``(ratio, peer ms, best ms)``."""
    if not results:
        return None
    peer_totals: list[float] | None = None
    best_totals: list[float] | None = None
    processes: list[int] = []
    for r in results:
        best = crossfit_samples(r, names)
        if best is None or not r.samples_ms.get(peer) or \
                len(best[0]) != len(r.samples_ms[peer]):
            return None
        theirs = [v * r.repeat for v in r.samples_ms[peer]]
        ours = [v * r.repeat for v in best[0]]
        if peer_totals is not None and len(theirs) != len(peer_totals):
            return None
        processes = r.processes(len(theirs))
        peer_totals = theirs if peer_totals is None else [a + b for a, b in
                                                          zip(peer_totals, theirs, strict=True)]
        best_totals = ours if best_totals is None else [a + b for a, b in
                                                        zip(best_totals, ours, strict=True)]
    assert peer_totals is not None and best_totals is not None
    per_pass = [a / b for a, b in zip(peer_totals, best_totals, strict=True)]
    return (ratio_interval(per_pass, processes), statistics.median(peer_totals),
            statistics.median(best_totals))


def geomean(values: list[float]) -> float | None:
    """Geometric mean, or None for no values."""
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def geomean_interval(values: list[float], intervals: list[tuple[float, float]],
                     process_values: list[float] | None = None
                     ) -> tuple[float, float, float] | None:
    """Geometric mean of per-layer ratios with its 95% interval, or None for no values.

    Each layer's interval gives its log-scale standard error (half its log
    width over 1.96); the mean's error is their root sum of squares over the
    count. That treats the layers' errors as independent, which they are
    not where the layers were measured in the same processes: a slow
    process slows all of them. ``process_values``, the geometric mean over
    the layers measured in each process (two or more), adds that level: the
    standard error is then at least their standard deviation over
    ``sqrt(processes)``, with ``processes - 1`` degrees of freedom. Only
    measurement noise counts: the layers are the population.
    """
    from convbench.measure.stats import t_quantile  # noqa: PLC0415

    if not values:
        return None
    z = 1.959963984540054
    logs = [math.log(v) for v in values]
    ses = [(math.log(hi) - math.log(lo)) / (2 * z) for lo, hi in intervals]
    mean = sum(logs) / len(logs)
    half = z * math.sqrt(sum(se * se for se in ses)) / len(ses)
    if process_values is not None and len(process_values) >= 2:
        plogs = [math.log(v) for v in process_values]
        between = statistics.stdev(plogs) / math.sqrt(len(plogs))
        half = max(half, t_quantile(len(plogs) - 1) * between)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def kernel_samples(r: LayerComparison, kernel: str | list[str]) -> list[float] | None:
    """A kernel's samples on a layer; for a list of kernels, the cross-fitted fastest."""
    if isinstance(kernel, str):
        return r.samples_ms.get(kernel) or None
    best = crossfit_samples(r, kernel)
    return None if best is None else best[0]


def geomean_over_passes(results: list[LayerComparison], kernel: str | list[str], peer: str
                        ) -> IntervalRatio | None:
    """The geometric mean over layers of ``t_peer / t_kernel``, pass by pass.

    ``kernel`` is a kernel, or a list of kernels of which each layer takes the
    cross-fitted fastest (:func:`crossfit_samples`). Each pass's value is the
    geometric mean over the layers of that pass's ratio; the result is the
    geometric mean of the layers' median ratios, with the interval
    :func:`ratio_interval` gives the per-pass values (centred on it). None
    where no layer has both, or the layers' passes differ.
    """
    pairs = []
    for r in results:
        ours, theirs = kernel_samples(r, kernel), r.samples_ms.get(peer)
        if ours and theirs and len(ours) == len(theirs):
            pairs.append((r, [tp / tk for tp, tk in zip(theirs, ours, strict=True)]))
    if not pairs or len({len(q) for _, q in pairs}) != 1:
        return None
    count = len(pairs[0][1])
    per_pass = [math.exp(statistics.fmean(math.log(q[i]) for _, q in pairs))
                for i in range(count)]
    value = math.exp(statistics.fmean(math.log(statistics.median(q)) for _, q in pairs))
    iv = ratio_interval(per_pass, pairs[0][0].processes(count))
    scale = value / iv.value
    return IntervalRatio(value, iv.lo * scale, iv.hi * scale, iv.level, iv.confidence,
                         f"{iv.label}; {len(pairs)} layers")


def time_interleaved(calls: dict[str, Callable[[], Any]], *, passes: int, sample_time: float,
                     cooldown: float, clock: Clock,
                     warm_time: float = WARM_S) -> dict[str, list[float]]:
    """Seconds per call of each of ``calls``, one sample per pass, interleaved.

    Each sample follows a cool-down of at most ``cooldown`` seconds and,
    where there was one, ``warm_time`` seconds of untimed calls (at least
    one): the cores the pause left idle take that long to come back
    (:data:`convbench.measure.cooldown.WARM_S`).
    """
    reps = {}
    for name, fn in calls.items():
        once = bench(fn, clock=clock, min_reps=1, min_time=0.0, warmup=0).times_s[0]
        reps[name] = max(1, math.ceil(sample_time / max(once, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(passes):
        for name, fn in calls.items():
            if cool_down(cooldown) > 0:
                warm_up(fn, warm_time)
            samples[name] += bench(fn, clock=clock, min_reps=1, min_time=0.0, warmup=0,
                                   batch=reps[name]).times_s
    return samples


def relative_l2(y: Any, ref: Any) -> float:
    """``||y - ref|| / ||ref||`` in float64 (``y`` on the host or a device); for bwd_wb's
    pair ``(dw, db)`` over both, as one vector."""
    if isinstance(ref, tuple):
        y = np.concatenate([np.asarray(to_host(a), dtype=np.float64).ravel() for a in y])
        ref = np.concatenate([np.ravel(a) for a in ref])
    y64 = np.asarray(to_host(y), dtype=np.float64)
    norm = float(np.linalg.norm(ref))
    diff = float(np.linalg.norm(y64 - ref))
    return diff / norm if norm else diff


def compare_layer(suite: str, p: ConvProblem, names: list[str], peers: tuple[str, ...], *,
                  backend: str = "cpu", passes: int = 5, sample_time: float = 0.02,
                  cooldown: float = 0.15, per_call: bool = True,
                  reference: np.ndarray | None = None) -> LayerComparison:
    """Interleave ``names`` and ``peers`` on ``p``; a kernel that raises is left out and named.

    Parameters
    ----------
    suite : str
        Label of the layer's suite (reported).
    p : ConvProblem
    names : list of str
        convbench kernels (``+prepare`` variants are added for weight-caching ones).
    peers : tuple of str
        Baselines every kernel is compared with.
    backend : {"cpu", "gpu"}
        On a GPU the inputs live on the device and samples are CUDA-event times.
    passes, sample_time, cooldown
        See the module docstring.
    per_call : bool
        Also time weight-caching kernels as ``NAME+prepare``.
    reference : ndarray, optional
        float64 output of ``p`` (in its direction) on :func:`random_inputs`
        (seed 0): every kernel's and peer's ``rel_l2`` against it is recorded.
    """
    x, w, b = make_inputs(p)
    if backend == "gpu":
        import cupy  # noqa: PLC0415 -- only with a GPU

        x, w, b = (None if a is None else cupy.asarray(a) for a in (x, w, b))
    calls: dict[str, Callable[[], Any]] = {}
    errors = {}
    rel_l2: dict[str, float] = {}
    clock_name = None
    for name in [*names, *peers]:
        kernel = get_kernel(name, backend)
        if refusal(kernel, p) is not None:
            continue
        try:
            fn = kernel.prepare(p, x, w, b)
            fn()  # compile / load from cache, first-touch the buffers
            y = fn()
            if reference is not None:
                rel_l2[name] = relative_l2(y, reference)
        except Exception as exc:  # noqa: BLE001 -- one failing kernel must not end the run
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        clock_name = clock_name or kernel.clock
        calls[name] = fn
        if per_call and kernel.caches_weights and name not in peers:
            calls[name + PER_CALL] = lambda kernel=kernel: kernel.prepare(p, x, w, b)()
    result = LayerComparison(suite, p.name, str(p), errors=errors, rel_l2=rel_l2,
                             chosen={n: d for n, fn in calls.items()
                                     if (d := chosen_details(fn))})
    if not calls:
        return result
    samples = time_interleaved(calls, passes=passes, sample_time=sample_time,
                               cooldown=cooldown, clock=make_clock(clock_name or "host"))
    result.medians_ms = {n: statistics.median(s) * 1e3 for n, s in samples.items()}
    result.samples_ms = {n: [v * 1e3 for v in s] for n, s in samples.items()}
    compute_ratios(result, peers)
    return result


def compute_ratios(result: LayerComparison, peers: tuple[str, ...]) -> None:
    """Fill ``ratios``, ``intervals`` and ``interval_level`` of every non-peer sample series
    against every peer (:func:`ratio_interval`, over the passes' processes)."""
    result.ratios, result.intervals, result.interval_level = {}, {}, {}
    for name, ours in result.samples_ms.items():
        if name in peers:
            continue
        result.ratios[name], result.intervals[name], result.interval_level[name] = {}, {}, {}
        for peer in peers:
            theirs = result.samples_ms.get(peer)
            if not theirs or len(theirs) != len(ours):
                continue
            iv = ratio_interval([tp / tk for tp, tk in zip(theirs, ours, strict=True)],
                                result.processes(len(ours)))
            result.ratios[name][peer] = iv.value
            result.intervals[name][peer] = (iv.lo, iv.hi)
            result.interval_level[name][peer] = iv.label
