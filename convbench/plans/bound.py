"""``convbench.plan``: a convolution with its weights bound, transformed once, called per input.

As NNPACK's precompute mode does for inference, :func:`plan` does the
once-per-weight-tensor work when it is made (Winograd's ``U = G g G^T``,
FFT's filter spectra, im2col's and direct's weight layouts, buffers, JIT
compilation) and each call only transforms the input and multiplies.

A kernel whose prepared call reads ``x`` when it runs
(``reads_input_at_call``, see :mod:`convbench.contract`) is prepared once on
an input buffer that the plan owns. A kernel whose prepared call also takes
the input as its argument (``takes_input_at_call``: all of convbench's) is
handed the caller's array as it is, when it is C-contiguous with the plan's
native dtype; otherwise, and for kernels that only read at call time, a call
copies its argument into that buffer (:attr:`Plan.input`; no copy when the
argument *is* the buffer). On a 1x1 layer at batch 8 that copy costs up to
half as much as the convolution. Any other kernel, a third party's among
them, is prepared again in every call, which is correct but repeats its
weight transform.
"""

from __future__ import annotations

from typing import Any

from convbench.api import as_array_of, select_kernel
from convbench.contract import Kernel, PreparedCall, as_prepared
from convbench.errors import UnsupportedProblem
from convbench.problem import ConvProblem, problem_from_arrays
from convbench.problem.arguments import array_module


class Plan:
    """A prepared convolution: ``plan(x) -> y`` for inputs of one shape and dtype.

    Made by :func:`plan`. The array a call returns is the plan's own output
    buffer, which the next call overwrites (copy it to keep it), unless the
    kernel allocates a new output per call. For the same reason a plan is not
    to be called from several threads at once; make one plan per thread.

    Attributes
    ----------
    problem : ConvProblem
    kernel : Kernel
        The kernel chosen (``kernel.name`` is the algorithm).
    input : array or None
        The buffer the prepared kernel was prepared on. A call copies its
        argument here unless the kernel takes it as it is (see the module
        docstring); a caller that writes its input here and calls
        ``plan(plan.input)`` never pays the copy. None when the kernel is
        prepared per call.
    """

    def __init__(self, p: ConvProblem, kernel: Kernel, w: Any, bias: Any) -> None:
        # Inputs live where the kernel computes: a GPU kernel's runtime (CuPy, or
        # NumPy on the host emulator) decides, so that the buffer is never copied
        # again in prepare and the prepared call sees what a call writes into it.
        runtime = getattr(kernel, "runtime", None)
        xp = getattr(runtime, "xp", None)
        if xp is None:
            xp = _device_module() if kernel.backend == "gpu" else array_module(w)
        self.problem = p
        self.kernel = kernel
        self._xp = xp
        self._w = xp.asarray(w)
        self._bias = None if bias is None else xp.asarray(bias)
        self.input: Any = None
        self._call: PreparedCall | None = None
        self._takes_input = False
        self._output: Any = None
        if p.mb == 0:
            return
        if getattr(kernel, "reads_input_at_call", False):
            # Zeros, not empty: what a kernel does with the buffer in prepare stays finite.
            self.input = xp.zeros(p.input_shape, dtype=p.dtype)
            self._call = as_prepared(kernel.prepare(p, self.input, self._w, self._bias))
            self._takes_input = bool(getattr(kernel, "takes_input_at_call", False))

    @property
    def weights_bound(self) -> bool:
        """Whether the kernel was prepared once (weights transformed once), not per call."""
        return self._call is not None

    def __call__(self, x: Any) -> Any:
        """Convolve ``x`` (shape ``problem.input_shape``, dtype ``problem.dtype``).

        Raises
        ------
        ValueError, TypeError
            ``x`` has another shape or dtype than the plan, or lives on another device.
        """
        p = self.problem
        if x is not self.input:
            self._check(x)
        if p.mb == 0:
            return self._xp.empty(p.output_shape, dtype=p.dtype)
        if self._call is None:
            y = self.kernel.prepare(p, self._xp.ascontiguousarray(x), self._w, self._bias)()
            return as_array_of(self._xp, y)
        if x is self.input:
            self._output = self._call()
            return self._output
        if self._takes_input and self._can_read_in_place(x):
            self._output = self._call(x)
        else:
            self._xp.copyto(self.input, x)
            self._output = self._call()
        return self._output

    def _can_read_in_place(self, x: Any) -> bool:
        """Whether the kernel can read ``x`` as it is: the buffer's layout, and not
        the output it is about to overwrite (``plan(plan(x))`` on a 1x1 layer)."""
        return (x.dtype == self.input.dtype and bool(x.flags.c_contiguous)
                and (self._output is None or not self._xp.may_share_memory(x, self._output)))

    def _check(self, x: Any) -> None:
        p = self.problem
        shape, dtype = tuple(getattr(x, "shape", ())), getattr(x, "dtype", None)
        if array_module(x) is not self._xp or not hasattr(x, "dtype"):
            where = "NumPy" if self._xp.__name__ == "numpy" else "CuPy"
            raise TypeError(f"this plan takes {where} arrays, got {type(x).__name__}")
        if shape != p.input_shape:
            raise ValueError(f"this plan takes inputs of shape {p.input_shape}, got {shape}; "
                             "make a plan per input shape")
        if getattr(dtype, "name", str(dtype)) != p.dtype:
            raise TypeError(f"this plan takes {p.dtype} inputs, got {dtype}")

    def __repr__(self) -> str:
        how = "weights bound" if self.weights_bound else "prepared per call"
        return f"<convbench plan {self.kernel.backend} {self.kernel.name} {self.problem} ({how})>"


def _device_module() -> Any:
    """CuPy, for GPU kernels that do not name their runtime (the cuDNN baselines)."""
    import cupy  # noqa: PLC0415 -- only with a GPU kernel in hand

    return cupy


def plan(x_or_shape: Any, w: Any, bias: Any = None, *, stride: Any = 1, padding: Any = 0,
         dilation: Any = 1, groups: int = 1, backend: str = "cpu", budget: float | None = None,
         algo: str = "auto", fpmath: str = "strict") -> Plan:
    """Prepare a convolution once for its weights; return ``plan(x) -> y``.

    Semantics are those of :func:`convbench.conv2d` (and of
    :func:`torch.nn.functional.conv2d`); ``plan(x)`` equals
    ``conv2d(x, w, bias, ..., algo=plan.kernel.name)``.

    Parameters
    ----------
    x_or_shape : array or tuple of 4 ints
        An input (only its shape and dtype are used) or its shape
        ``(N, C, H, W)``; with a shape, the dtype is ``w``'s.
    w : array, shape (K, C/groups, R, S)
        NumPy for ``backend="cpu"``; NumPy or CuPy for ``backend="gpu"``,
        whose plans take and return CuPy arrays.
    bias : array, shape (K,), optional
    stride, padding, dilation, groups
        As in :func:`convbench.conv2d`.
    backend : {"cpu", "gpu"}
    budget : float, optional
        With ``algo="auto"``: the largest error allowed, on the metric the
        plan cache was tuned with; the fastest kernel the cache measured
        within it is taken. None takes the cache's choice as tuned.
    algo : str
        ``"auto"`` (the plan cache's choice for this problem and platform,
        else the documented rule :func:`convbench.auto_kernel`) or a
        registered algorithm.
    fpmath : {"strict", "tf32"}
        ``"tf32"`` lets float32 problems use TF32 operands (GPU kernels that
        do; the cache keeps such plans apart from strict ones).

    Returns
    -------
    Plan

    Raises
    ------
    UnsupportedProblem
        The algorithm cannot run this problem.
    convbench.plans.choice.BudgetNotMet
        ``budget`` is given and no kernel the cache measured meets it.
    ValueError, TypeError
        Bad input (the message says what was expected and what was given).
    """
    w_like = w
    if isinstance(x_or_shape, (tuple, list)):
        shape = tuple(x_or_shape)
        if len(shape) != 4 or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"x_or_shape must be an array or a shape (N, C, H, W) of "
                             f"non-negative ints, got {x_or_shape!r}")
        xp = array_module(w_like)
        if not hasattr(w_like, "dtype"):
            raise TypeError(f"w must be an array, got {type(w_like).__name__}")
        x = xp.zeros(shape, dtype=w_like.dtype)
    else:
        x = x_or_shape
    p, _, w, bias = problem_from_arrays(x, w, bias, stride=stride, padding=padding,
                                        dilation=dilation, groups=groups)
    if backend == "cpu" and array_module(w).__name__ != "numpy":
        raise TypeError("backend='cpu' takes NumPy arrays, got device arrays; use "
                        "backend='gpu' or cupy.asnumpy")
    if fpmath != "strict":
        p = p.with_(fpmath=fpmath)
    kernel = select_kernel(p, backend, algo, budget)
    reason = kernel.supports(p)
    if reason is not None:
        raise UnsupportedProblem(f"{backend} {kernel.name} cannot run {p}: {reason}")
    return Plan(p, kernel, w, bias)
