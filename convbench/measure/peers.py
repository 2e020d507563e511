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
faster); a layer's ratio is the median over passes, with the distribution-free
95% interval of that median (order statistics; with 5 passes it spans them
all). :func:`geomean_interval` gives a group of layers' geometric mean with
the interval the layers' own intervals imply.

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
        (schedule, layout, tile...): the timings are of those choices.
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


def chosen_details(fn: Any) -> dict[str, Any]:
    """The scalar entries of a prepared call's details: the choices ``prepare`` made."""
    details = getattr(fn, "details", None) or {}
    return {k: v for k, v in details.items() if isinstance(v, (str, int, float, bool))}


def best_kernel(r: LayerComparison, names: list[str]) -> str | None:
    """The fastest of ``names`` on the layer, by median (None if none of them ran)."""
    ran = [n for n in names if n in r.medians_ms]
    return min(ran, key=lambda n: r.medians_ms[n]) if ran else None


def whole_network_ratio(results: list[LayerComparison], names: list[str], peer: str
                        ) -> tuple[float, float, float, float, float] | None:
    """``peer``'s whole-network time over best-of-``names``'s, with its 95% interval.

    Best-of takes, per layer, the fastest of ``names`` by median; each pass's
    totals sum ``repeat x sample`` over the layers, so the layers' pass ``i``
    were interleaved with each other's pass ``i``, and the ratio of a pass is
    ``peer total / best total``. Returns ``(median ratio, lo, hi, peer ms,
    best ms)``, the interval distribution-free over the passes, or None where
    a layer lacks the peer or every one of ``names``.
    """
    if not results:
        return None
    peer_totals: list[float] | None = None
    best_totals: list[float] | None = None
    for r in results:
        best = best_kernel(r, names)
        if best is None or peer not in r.samples_ms or best not in r.samples_ms:
            return None
        theirs = [v * r.repeat for v in r.samples_ms[peer]]
        ours = [v * r.repeat for v in r.samples_ms[best]]
        peer_totals = theirs if peer_totals is None else [a + b for a, b in
                                                          zip(peer_totals, theirs, strict=True)]
        best_totals = ours if best_totals is None else [a + b for a, b in
                                                        zip(best_totals, ours, strict=True)]
    assert peer_totals is not None and best_totals is not None
    per_pass = sorted(a / b for a, b in zip(peer_totals, best_totals, strict=True))
    j, k = median_rank_interval(len(per_pass))
    return (statistics.median(per_pass), per_pass[j], per_pass[k],
            statistics.median(peer_totals), statistics.median(best_totals))


def geomean(values: list[float]) -> float | None:
    """Geometric mean, or None for no values."""
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def geomean_interval(values: list[float], intervals: list[tuple[float, float]]
                     ) -> tuple[float, float, float] | None:
    """Geometric mean of per-layer ratios with its 95% interval, or None for no values.

    Each layer's interval gives its log-scale standard error (half its log
    width over 1.96); the mean's error is their root sum of squares over the
    count. Only measurement noise counts: the layers are the population.
    """
    if not values:
        return None
    z = 1.959963984540054
    logs = [math.log(v) for v in values]
    ses = [(math.log(hi) - math.log(lo)) / (2 * z) for lo, hi in intervals]
    mean = sum(logs) / len(logs)
    half = z * math.sqrt(sum(se * se for se in ses)) / len(ses)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


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
                                     if n not in peers and (d := chosen_details(fn))})
    if not calls:
        return result
    samples = time_interleaved(calls, passes=passes, sample_time=sample_time,
                               cooldown=cooldown, clock=make_clock(clock_name or "host"))
    result.medians_ms = {n: statistics.median(s) * 1e3 for n, s in samples.items()}
    result.samples_ms = {n: [v * 1e3 for v in s] for n, s in samples.items()}
    for name in samples:
        if name in peers:
            continue
        result.ratios[name], result.intervals[name] = {}, {}
        for peer in peers:
            if peer not in samples:
                continue
            per_pass = sorted(tp / tk for tp, tk in zip(samples[peer], samples[name],
                                                        strict=True))
            j, k = median_rank_interval(len(per_pass))
            result.ratios[name][peer] = statistics.median(per_pass)
            result.intervals[name][peer] = (per_pass[j], per_pass[k])
    return result
