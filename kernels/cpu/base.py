"""What the Numba CPU kernels share: the base class, the workspace cap, bias, threads.

Every kernel processes large problems in tiles so that what a prepared call
holds beyond its inputs and outputs -- prepared state (spectra, transformed
filters, packed weights) and per-call scratch (lowered matrices, tile
buffers), see :mod:`convbench.contract` -- stays under its cap, and reports
that figure through ``workspace_bytes``. Where even the smallest tiling is
over the cap, ``supports`` refuses the problem with the bytes it would need
(:func:`~convbench.contract.workspace_refusal`). The cap is
:data:`WORKSPACE_CAP_BYTES` unless ``CONVBENCH_WORKSPACE_CAP`` (or the command
line's ``--workspace-cap``) sets another, and a per-kernel attribute
(``workspace_cap``), so a user can trade memory for speed.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Hashable

import numba
import numpy as np
from numba import njit, prange

from convbench.contract import WORKSPACE_CAP_ENV, KernelBase, parse_bytes, workspace_refusal
from convbench.measure.cooldown import WARM_S, cool_down, warm_up
from convbench.measure.threads import use_preferred_layer
from convbench.problem import ConvProblem
from convbench.problem.arguments import aligned_empty

# Pick Numba's threading layer before any parallel kernel starts the pool
# (why: convbench/measure/threads.py).
use_preferred_layer()

#: Default upper bound on a kernel's workspace (lowered matrices, transformed
#: tiles, spectra). 256 MiB keeps VGG-16 conv1_2 at batch 32 well inside a
#: 24 GiB machine while leaving tiles large enough for efficient GEMMs.
WORKSPACE_CAP_BYTES = 256 * 2**20

CPU_DTYPES = ("float32", "float64")
#: What a kernel's libraries allocate out of its sight, allowed in its workspace: BLAS's
#: per-thread packing buffers as a call's GEMMs reach further into them, pocketfft's plans
#: and line buffers, NumPy's small temporaries. Measured at up to 3 MiB beside 220 MiB of
#: counted arrays (benchmarks/workspace_peak.py): a kernel that calls BLAS or an FFT
#: counts 1/LIBRARY_SHARE of its arrays, at most this, and plans inside the cap less it.
LIBRARY_BYTES = 4 * 2**20
LIBRARY_SHARE = 16


def default_workspace_cap() -> int:
    """The cap of a kernel made without one: ``CONVBENCH_WORKSPACE_CAP``, else 256 MiB.

    Read at each use, so that a command line (or a worker process, which
    inherits the variable) may set it after the kernels were made.

    Raises
    ------
    ValueError
        The variable is not a byte count (:func:`~convbench.contract.parse_bytes`).
    """
    text = os.environ.get(WORKSPACE_CAP_ENV, "").strip()
    return parse_bytes(text) if text else WORKSPACE_CAP_BYTES


class CappedWorkspace:
    """A kernel's workspace cap, and the refusal of problems whose workspace is over it.

    Subclasses define ``workspace_bytes(p)``: the smallest workspace their
    tiling reaches under :attr:`workspace_cap`, honestly counted.
    """

    _workspace_cap: int | None = None
    #: Whether the kernel calls BLAS or an FFT: its workspace then includes their
    #: allowance (:meth:`with_libraries`).
    uses_libraries: bool = False

    @property
    def workspace_cap(self) -> int:
        """Upper bound on ``workspace_bytes``; :func:`default_workspace_cap` unless set."""
        return default_workspace_cap() if self._workspace_cap is None else self._workspace_cap

    @workspace_cap.setter
    def workspace_cap(self, value: int | None) -> None:
        self._workspace_cap = None if value is None else int(value)

    @property
    def tiling_cap(self) -> int:
        """What the kernel's own arrays may take: the cap less the libraries' allowance
        for arrays that fill it (so :meth:`with_libraries` of them stays in the cap)."""
        cap = self.workspace_cap
        return cap - min(LIBRARY_BYTES, cap // LIBRARY_SHARE) if self.uses_libraries else cap

    def with_libraries(self, arrays: int) -> int:
        """``arrays`` bytes, plus the libraries' allowance where the kernel calls them:
        1/:data:`LIBRARY_SHARE` of them, at most :data:`LIBRARY_BYTES`."""
        if not self.uses_libraries:
            return arrays
        return arrays + min(LIBRARY_BYTES, arrays // LIBRARY_SHARE)

    def workspace_reason(self, p: ConvProblem) -> str | None:
        """The refusal of ``p`` when its workspace is over the cap (``"workspace: needs ..."``)."""
        needed = self.workspace_bytes(p)  # type: ignore[attr-defined]
        cap = self.workspace_cap
        return None if needed <= cap else workspace_refusal(needed, cap)


class CpuKernel(CappedWorkspace, KernelBase):
    """Base of convbench's CPU kernels: float32 and float64, host clock, a workspace cap.

    A float32 problem that allows TF32 (``fpmath="tf32"``) runs in strict
    float32: TF32 permits rounding the operands, it does not require it.

    The prepared call reads ``x`` when it runs (``reads_input_at_call``): a
    subclass keeps ``x`` itself, or views of it, in its call and never a copy.

    Parameters
    ----------
    workspace_cap : int, optional
        Upper bound on what a prepared call holds beyond its inputs and
        outputs (default: :func:`default_workspace_cap`, read at each use).
    """

    backend = "cpu"
    clock = "host"
    dtypes = CPU_DTYPES
    reads_input_at_call = True
    documented_refusals = (r"^CPU kernels run float32 and float64, got \w+ "
                           r"\(float16 is GPU-only\)$",)

    def __init__(self, workspace_cap: int | None = None) -> None:
        self.workspace_cap = workspace_cap

    def problem_reason(self, p: ConvProblem) -> str | None:
        """Why the algorithm cannot compute ``p`` at all (subclasses narrow it)."""
        return None

    def supports(self, p: ConvProblem) -> str | None:
        reason = self.direction_reason(p)
        if reason is not None:
            return reason
        if p.dtype not in CPU_DTYPES:
            return f"CPU kernels run float32 and float64, got {p.dtype} (float16 is GPU-only)"
        return self.problem_reason(p) or self.workspace_reason(p)


def num_threads() -> int:
    """Threads the kernels use: Numba's setting, which the harness pins."""
    return numba.get_num_threads()


@njit(parallel=True, cache=True)
def add_bias(y: np.ndarray, bias: np.ndarray) -> None:
    """``y[n, k] += bias[k]`` in place, parallel over (n, k)."""
    n_images, channels = y.shape[0], y.shape[1]
    plane = y.shape[2] * y.shape[3]
    flat = y.reshape(n_images * channels, plane)
    for nk in prange(n_images * channels):
        b = bias[nk % channels]
        for i in range(plane):
            flat[nk, i] += b


def empty_output(p: ConvProblem) -> np.ndarray:
    """The output buffer a prepared kernel writes into and returns (cache-line aligned)."""
    return aligned_empty(p.output_shape, p.dtype)


def empty_input(p: ConvProblem) -> np.ndarray:
    """The ``dx`` buffer a prepared bwd_d kernel writes into and returns (cache-line aligned)."""
    return aligned_empty(p.input_shape, p.dtype)


def empty_weights(p: ConvProblem) -> np.ndarray:
    """The ``dw`` buffer a prepared bwd_w kernel writes into and returns (cache-line aligned)."""
    return aligned_empty(p.weight_shape, p.dtype)


def bias_or_zeros(p: ConvProblem, bias: np.ndarray | None) -> np.ndarray:
    """The bias, or zeros: one compiled specialization serves layers with and without."""
    return bias if bias is not None else np.zeros(p.oc, dtype=p.dtype)


#: A candidate whose calls take this long is followed by a cool-down before the next one.
FASTEST_COOL_DOWN_FROM_S = 1e-3
#: The longest of those cool-downs (OpenBLAS's idle threads spin for about 0.1 s).
FASTEST_COOL_DOWN_S = 0.15


#: Rounds in which every candidate is timed once; its median over them decides.
FASTEST_ROUNDS = 5
#: Least seconds of calls per timed sample (at least one call): calls shorter than the
#: clock's noise are timed several in a row, as the benchmarks' samples are.
FASTEST_SAMPLE_S = 0.01


#: What :func:`fastest` chose, by the caller's key, the candidates and the thread count.
_CHOICES: dict[tuple[Hashable, tuple[str, ...], int], str] = {}


def forget_choices() -> None:
    """Forget every choice :func:`fastest` kept: the next ``prepare`` times its own."""
    _CHOICES.clear()


def fastest(candidates: dict[str, Callable[[], object]], key: Hashable = None,
            margin: float = 0.0) -> str:
    """The name of the fastest of ``candidates`` (calls without arguments), timed here.

    With a ``key`` (what the choice is for: the kernel, the problem, its
    workspace), the choice is kept, and a later call with the same key,
    candidates and thread count returns it untimed, as cuDNN's benchmark
    mode keeps its algorithm per shape: a kernel prepared again for the same
    layer (a weight transform in every call, a plan rebuilt) repeats the
    choice and not its cost (:func:`forget_choices`).

    Each is called once (compilation, first touch of its buffers), then
    timed in :data:`FASTEST_ROUNDS` rounds, the order reversed every other
    round. In each round a candidate gets, as a benchmark sample does, a
    cool-down where its calls are long enough for one to matter
    (:func:`convbench.measure.cooldown.cool_down`: the thread pools the
    candidate before woke are left to go idle), one untimed call, then
    the calls of a sample (:data:`FASTEST_SAMPLE_S`). The median sample
    counts, and the earliest candidate wins a tie. For choices that depend
    on the shape and the BLAS build more than any rule of thumb could say.

    Why the median of samples taken like that, rather than the best call:
    on a shared machine single calls of one schedule spread by 2x (a
    lucky call of the slower one wins a minimum), and the first call after
    a pause or after another schedule is slow for some schedules and not
    others (BLAS's threads waking, the team's many hand-offs to idle
    cores), which the untimed calls absorb in the choice as they do in the
    benchmark that reports the result.

    With a ``margin``, the first candidate (the default) is kept unless
    another's median is faster by more than that fraction: on a machine whose
    speed flips between states, a choice between near-equals is a coin toss
    that can land on a slower one.
    """
    names = list(candidates)
    kept = None if key is None else (key, tuple(names), numba.get_num_threads())
    if kept in _CHOICES:
        return _CHOICES[kept]
    batch = {}
    for name in names:
        t0 = time.perf_counter()
        candidates[name]()
        once = max(time.perf_counter() - t0, 1e-9)
        batch[name] = max(1, min(1000, math.ceil(FASTEST_SAMPLE_S / once)))
    samples: dict[str, list[float]] = {name: [] for name in names}
    previous = 0.0
    for r in range(FASTEST_ROUNDS):
        for name in (names if r % 2 == 0 else names[::-1]):
            call = candidates[name]
            if previous >= FASTEST_COOL_DOWN_FROM_S and cool_down(FASTEST_COOL_DOWN_S) > 0:
                warm_up(call, WARM_S)
            else:
                call()
            t0 = time.perf_counter()
            for _ in range(batch[name]):
                call()
            previous = (time.perf_counter() - t0) / batch[name]
            samples[name].append(previous)
    medians = {name: statistics.median(samples[name]) for name in names}
    choice = min(names, key=medians.__getitem__)
    if medians[names[0]] <= (1 + margin) * medians[choice]:
        choice = names[0]  # the default stays unless another beats it by the margin
    if kept is not None:
        _CHOICES[kept] = choice
    return choice
