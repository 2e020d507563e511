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

``plan(..., dir="bwd_d")`` binds ``w`` the same way (transformed once where
the kernel does) and is called as ``plan(dy) -> dx``;
``plan(..., dir="bwd_w")`` (or ``"bwd_wb"``) binds the shapes, the kernel's
buffers and its compiled code, and is called as ``plan(x, dy) -> dw`` (or
``(dw, db)``): :class:`BackwardPlan`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from convbench.api import as_array_of, select_kernel
from convbench.contract import Kernel, PreparedCall, as_prepared, refusal
from convbench.errors import UnsupportedProblem
from convbench.problem import ConvProblem, normalize_direction, problem_from_arrays
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


class BackwardPlan:
    """A prepared backward convolution: ``plan(dy) -> dx`` (bwd_d) or ``plan(x, dy) -> dw``
    (bwd_w; ``(dw, db)`` for bwd_wb), for operands of one shape and dtype.

    Made by :func:`plan` with ``dir``. As with :class:`Plan`, a call returns
    the plan's own buffers, which the next call overwrites, and a plan is not
    to be shared between threads.

    Attributes
    ----------
    problem : ConvProblem
    kernel : Kernel
    operands : tuple of arrays, or None
        The buffers the kernel was prepared on (``(dy,)`` for bwd_d, ``(x, dy)``
        for bwd_w); a call copies its arguments there unless the kernel takes
        them as they are. None when the kernel is prepared per call.
    """

    def __init__(self, p: ConvProblem, kernel: Kernel, w: Any) -> None:
        runtime = getattr(kernel, "runtime", None)
        xp = getattr(runtime, "xp", None)
        if xp is None:
            xp = _device_module() if kernel.backend == "gpu" else array_module(w)
        self.problem = p
        self.kernel = kernel
        self._xp = xp
        self._w = xp.asarray(w) if p.dir == "bwd_d" else None
        self.operands: tuple[Any, ...] | None = None
        self._call: PreparedCall | None = None
        self._takes_input = bool(getattr(kernel, "takes_input_at_call", False))
        if p.mb == 0 or not getattr(kernel, "reads_input_at_call", False):
            return
        if p.dir == "bwd_d":
            self.operands = (xp.zeros(p.output_shape, dtype=p.dtype),)
            self._call = as_prepared(kernel.prepare(p, self.operands[0], self._w, None))
        else:
            self.operands = (xp.zeros(p.input_shape, dtype=p.dtype),
                             xp.zeros(p.output_shape, dtype=p.dtype))
            self._call = as_prepared(kernel.prepare(p, *self.operands, None))

    @property
    def weights_bound(self) -> bool:
        """Whether the kernel was prepared once, not per call."""
        return self._call is not None

    def _shapes(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        p = self.problem
        if p.dir == "bwd_d":
            return (("dy", p.output_shape),)
        return (("x", p.input_shape), ("dy", p.output_shape))

    def __call__(self, *arrays: Any) -> Any:
        """``dx`` from ``dy`` (bwd_d), or ``dw`` (``(dw, db)``) from ``x, dy``.

        Raises
        ------
        ValueError, TypeError
            An operand of another shape or dtype than the plan's, or on another device.
        """
        p, xp = self.problem, self._xp
        shapes = self._shapes()
        if len(arrays) != len(shapes):
            raise TypeError(f"this {p.dir} plan takes ({', '.join(n for n, _ in shapes)}), "
                            f"got {len(arrays)} arrays")
        for a, (what, shape) in zip(arrays, shapes, strict=True):
            self._check(a, what, shape)
        if p.mb == 0:
            if p.dir == "bwd_d":
                return xp.zeros(p.input_shape, dtype=p.dtype)
            dw = xp.zeros(p.weight_shape, dtype=p.dtype)
            return (dw, xp.zeros(p.oc, dtype=p.dtype)) if p.dir == "bwd_wb" else dw
        if self._call is None:
            operands = [xp.ascontiguousarray(a) for a in arrays]
            if p.dir == "bwd_d":
                out = self.kernel.prepare(p, operands[0], self._w, None)()
            else:
                out = self.kernel.prepare(p, *operands, None)()
            return tuple(as_array_of(xp, o) for o in out) if p.dir == "bwd_wb" else \
                as_array_of(xp, out)
        assert self.operands is not None
        if self._takes_input and all(a.dtype == b.dtype and bool(a.flags.c_contiguous)
                                     for a, b in zip(arrays, self.operands, strict=True)):
            return self._call(*arrays)
        for a, buffer in zip(arrays, self.operands, strict=True):
            if a is not buffer:
                xp.copyto(buffer, a)
        return self._call()

    def _check(self, a: Any, what: str, shape: tuple[int, ...]) -> None:
        p = self.problem
        if array_module(a) is not self._xp or not hasattr(a, "dtype"):
            where = "NumPy" if self._xp.__name__ == "numpy" else "CuPy"
            raise TypeError(f"this plan takes {where} arrays, got {type(a).__name__} for {what}")
        if tuple(a.shape) != shape:
            raise ValueError(f"this {p.dir} plan takes {what} of shape {shape}, got "
                             f"{tuple(a.shape)}; make a plan per shape")
        if getattr(a.dtype, "name", str(a.dtype)) != p.dtype:
            raise TypeError(f"this plan takes {p.dtype} {what}, got {a.dtype}")

    def __repr__(self) -> str:
        how = "bound" if self.weights_bound else "prepared per call"
        return f"<convbench plan {self.kernel.backend} {self.kernel.name} {self.problem} ({how})>"


def _device_module() -> Any:
    """CuPy, for GPU kernels that do not name their runtime (the cuDNN baselines)."""
    import cupy  # noqa: PLC0415 -- only with a GPU kernel in hand

    return cupy


def plan(x_or_shape: Any, w: Any, bias: Any = None, *, stride: Any = 1, padding: Any = 0,
         dilation: Any = 1, groups: int = 1, backend: str = "cpu", budget: float | None = None,
         algo: str = "auto", fpmath: str = "strict", dir: str = "fwd") -> Plan | BackwardPlan:
    """Prepare a convolution once for its weights; return ``plan(x) -> y``.

    Semantics are those of :func:`convbench.conv2d` (and of
    :func:`torch.nn.functional.conv2d`); ``plan(x)`` equals
    ``conv2d(x, w, bias, ..., algo=plan.kernel.name)``. With ``dir="bwd_d"``
    the plan is ``plan(dy) -> dx`` (:func:`convbench.conv2d_backward_data`),
    with ``dir="bwd_w"`` ``plan(x, dy) -> dw`` and with ``dir="bwd_wb"``
    ``plan(x, dy) -> (dw, db)`` (:func:`convbench.conv2d_backward_weights`):
    a :class:`BackwardPlan`, chosen for that direction.

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
    dir : {"fwd", "bwd_d", "bwd_w", "bwd_wb"}
        The direction (benchdnn's names are taken too). For ``bwd_w`` and
        ``bwd_wb``, ``w`` gives only the weights' shape and dtype, and ``bias``
        is not taken (``bwd_wb`` computes its gradient).

    Returns
    -------
    Plan, or BackwardPlan for a backward direction

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
    direction = normalize_direction(dir)
    if direction != "fwd" and bias is not None:
        raise ValueError(f"a {direction} plan takes no bias (bwd_wb computes its gradient), "
                         f"got a bias of shape {tuple(getattr(bias, 'shape', ()))}")
    p, _, w, bias = problem_from_arrays(x, w, bias, stride=stride, padding=padding,
                                        dilation=dilation, groups=groups)
    if backend == "cpu" and array_module(w).__name__ != "numpy":
        raise TypeError("backend='cpu' takes NumPy arrays, got device arrays; use "
                        "backend='gpu' or cupy.asnumpy")
    if fpmath != "strict":
        p = p.with_(fpmath=fpmath)
    if direction != "fwd":
        p = replace(p, dir=direction, bias=direction == "bwd_wb")
    kernel = select_kernel(p, backend, algo, budget)
    reason = refusal(kernel, p)
    if reason is not None:
        raise UnsupportedProblem(f"{backend} {kernel.name} cannot run {p}: {reason}")
    if direction != "fwd":
        return BackwardPlan(p, kernel, w)
    return Plan(p, kernel, w, bias)
