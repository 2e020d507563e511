"""``convbench.conv2d`` and its gradients: run one convolution, in one direction, with a
chosen algorithm."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from convbench.contract import Kernel, refusal
from convbench.errors import UnsupportedProblem
from convbench.plans import cache as plan_cache
from convbench.plans.choice import Candidate, choose
from convbench.problem import ConvProblem, problem_from_arrays
from convbench.problem.arguments import (
    array_module,
    problem_for_backward_data,
    problem_for_backward_weights,
    to_host,
)
from convbench.registry import get_kernel, kernels


def auto_kernel(p: ConvProblem, backend: str = "cpu") -> Kernel:
    """The kernel ``algo="auto"`` picks for ``p`` (documented rule), per direction.

    Forward and ``bwd_d``: Winograd for 3x3 stride-1 layers with at least 16
    input and output channels per group (below that the transforms cost more
    than they save); FFT for filters of 7x7 or more with stride 1 and at
    least 16 channels; otherwise im2col; direct for anything the others
    decline. ``bwd_w``/``bwd_wb``: im2col (one long GEMM over ``N*P*Q``),
    else direct. Only kernels that compute the direction are candidates.
    """
    by_name = {k.name: k for k in kernels(backend, kind="kernel")}
    cg, kg = p.ic // p.g, p.oc // p.g
    preferred = []
    if min(cg, kg) >= 16 and p.dir in ("fwd", "bwd_d"):
        preferred.append("winograd")
        if min(p.kh, p.kw) >= 7 and p.stride == (1, 1):
            preferred.append("fft")
    preferred += ["im2col", "direct"]
    preferred += [name for name in by_name if name not in preferred]
    for name in preferred:
        kernel = by_name.get(name)
        if kernel is not None and refusal(kernel, p) is None:
            return kernel
    raise UnsupportedProblem(f"no {backend} kernel supports {p}")


def tuned_kernel(p: ConvProblem, backend: str = "cpu", budget: float | None = None
                 ) -> Kernel | None:
    """The kernel the plan cache chose for ``p`` on this platform, or None.

    The cache is :func:`convbench.plans.cache.default_path` (``$CONVBENCH_PLANS``
    overrides it). A cache tuned on another platform is ignored with one
    warning. With a ``budget`` other than the entry's, the choice is made
    again among the kernels the entry measured, on the entry's metric and with
    its ``allow_vendor``, by their sweep times.

    Raises
    ------
    convbench.plans.choice.BudgetNotMet
        ``budget`` is given and no measured kernel meets it.
    """
    entry = plan_cache.find_entry(p, backend)
    if entry is None:
        return None
    name = entry["choice"]["kernel"]
    if budget is not None and budget != entry["budget"]:
        candidates = [Candidate.from_json(c) for c in entry["candidates"]]
        name = choose(candidates, budget=budget, metric=entry["metric"],
                      allow_vendor=entry["allow_vendor"], problem=entry["problem"]).chosen.kernel
    try:
        kernel = get_kernel(name, backend)
    except ValueError:
        kernel = None
    if kernel is None or refusal(kernel, p) is not None:
        warnings.warn(f"convbench: the plan cache chose {backend} {name!r} for {p}, which "
                      "is not registered or does not support it here; using the documented "
                      "rule", plan_cache.PlanCacheWarning, stacklevel=3)
        return None
    return kernel


def select_kernel(p: ConvProblem, backend: str = "cpu", algo: str = "auto",
                  budget: float | None = None) -> Kernel:
    """The kernel ``algo`` names; for ``"auto"`` the tuned choice, else :func:`auto_kernel`.

    Raises
    ------
    TypeError
        ``algo`` is not a str.
    ValueError
        An unknown algorithm, or ``budget`` with an algorithm other than ``"auto"``.
    convbench.plans.choice.BudgetNotMet
        ``budget`` is given and no kernel the cache measured for ``p`` meets it.
    """
    if not isinstance(algo, str):
        raise TypeError(f"algo must be a str, got {algo!r}")
    if algo != "auto":
        if budget is not None:
            raise ValueError(f"budget applies to algo='auto' (the tuned choice), got "
                             f"algo={algo!r} with budget={budget!r}")
        return get_kernel(algo, backend)
    return tuned_kernel(p, backend, budget) or auto_kernel(p, backend)


def as_array_of(xp: Any, y: Any) -> Any:
    """``y`` as an array of ``xp`` (NumPy or CuPy); a baseline's torch tensor without a copy.

    Vendor baselines compute through torch and return tensors; ``conv2d`` and
    plans return arrays of the kind they were given, whichever kernel ran.
    """
    if isinstance(y, xp.ndarray):
        return y
    if xp is np:
        return to_host(y)
    return xp.asarray(y)  # a CUDA tensor, through __cuda_array_interface__


def conv2d(x: Any, w: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1, algo: str = "direct",
           backend: str = "cpu") -> Any:
    """2-D convolution (cross-correlation) with a chosen algorithm.

    Semantics are those of :func:`torch.nn.functional.conv2d`.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        NumPy for ``backend="cpu"``, CuPy for ``backend="gpu"``.
    w : array, shape (K, C/groups, R, S)
        Same dtype as ``x``.
    bias : array, shape (K,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), ((top, bottom), (left, right)), "same" or "valid"
    groups : int
        Divides C and K; ``groups == C`` is depthwise.
    algo : str
        A registered algorithm (see :func:`convbench.algorithms`) or ``"auto"``:
        the kernel ``convbench tune`` chose for this problem on this platform
        (:func:`tuned_kernel`), else the documented rule (:func:`auto_kernel`).
    backend : {"cpu", "gpu"}

    Returns
    -------
    array, shape (N, K, P, Q), dtype of ``x``

    Raises
    ------
    UnsupportedProblem
        The algorithm cannot run this problem (the message says why).
    ValueError, TypeError
        Bad input; the message says what was expected and what was given.
    """
    p, x, w, bias = problem_from_arrays(x, w, bias, stride=stride, padding=padding,
                                        dilation=dilation, groups=groups)
    kernel = select_kernel(p, backend, algo)
    reason = kernel.supports(p)
    if reason is not None:
        raise UnsupportedProblem(f"{backend} {kernel.name} cannot run {p}: {reason}")
    if p.mb == 0:
        return array_module(x).empty(p.output_shape, dtype=p.dtype)
    return as_array_of(array_module(x), kernel.prepare(p, x, w, bias)())


def _runnable(p: ConvProblem, backend: str, algo: str) -> Kernel:
    """The kernel ``algo`` names for ``p``, or ``UnsupportedProblem`` with its reason."""
    kernel = select_kernel(p, backend, algo)
    reason = refusal(kernel, p)
    if reason is not None:
        raise UnsupportedProblem(f"{backend} {kernel.name} cannot run {p}: {reason}")
    return kernel


def conv2d_backward_data(dy: Any, w: Any, x_shape: Any, stride: Any = 1, padding: Any = 0,
                         dilation: Any = 1, groups: int = 1, algo: str = "direct",
                         backend: str = "cpu") -> Any:
    """Gradient of :func:`conv2d` with respect to its input (backward data).

    Semantics are those of :func:`torch.nn.grad.conv2d_input`: ``dx`` such
    that ``sum(dx * x') == sum(dy * conv2d(x', w, ...))`` for every ``x'`` of
    shape ``x_shape``.

    Parameters
    ----------
    dy : array, shape (N, K, P, Q)
        Gradient of the output. NumPy for ``backend="cpu"``, CuPy for ``"gpu"``.
    w : array, shape (K, C/groups, R, S)
        The weights; same dtype as ``dy``.
    x_shape : sequence of 4 ints
        The input's shape (N, C, H, W). ``dy``'s size must be exactly the
        output size of ``x_shape`` under the parameters; where the stride leaves
        a remainder, several input sizes give the same output, and ``x_shape``
        says which (what torch's ``output_padding`` does).
    stride, padding, dilation, groups
        As for :func:`conv2d` (every padding form, ``"same"`` and ``"valid"`` too).
    algo : str
        A registered algorithm that computes ``bwd_d`` or ``"auto"`` (the tuned
        choice for this problem's ``bwd_d``, else :func:`auto_kernel`'s rule).
    backend : {"cpu", "gpu"}

    Returns
    -------
    array, shape ``x_shape``, dtype of ``dy``

    Raises
    ------
    UnsupportedProblem
        The algorithm cannot compute this problem's ``bwd_d`` (the message says why).
    ValueError, TypeError
        Bad input; the message names the expected and the given shapes or dtypes.

    Examples
    --------
    >>> import numpy as np, convbench
    >>> dy = np.ones((1, 1, 2, 2), dtype=np.float32)
    >>> w = np.ones((1, 1, 2, 2), dtype=np.float32)
    >>> convbench.conv2d_backward_data(dy, w, (1, 1, 3, 3))[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]], dtype=float32)
    """
    p, dy, w = problem_for_backward_data(dy, w, x_shape, stride=stride, padding=padding,
                                         dilation=dilation, groups=groups)
    kernel = _runnable(p, backend, algo)
    xp = array_module(dy)
    if p.mb == 0:
        return xp.zeros(p.input_shape, dtype=p.dtype)
    return as_array_of(xp, kernel.prepare(p, dy, w, None)())


def conv2d_backward_weights(x: Any, dy: Any, w_shape: Any, stride: Any = 1, padding: Any = 0,
                            dilation: Any = 1, groups: int = 1, algo: str = "direct",
                            backend: str = "cpu", bias_grad: bool = False) -> Any:
    """Gradient of :func:`conv2d` with respect to its weights (and bias): backward weights.

    Semantics are those of :func:`torch.nn.grad.conv2d_weight`; with
    ``bias_grad`` also ``db = dy.sum((0, 2, 3))`` (benchdnn's BWD_WB).

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        The forward's input. NumPy for ``backend="cpu"``, CuPy for ``"gpu"``.
    dy : array, shape (N, K, P, Q)
        Gradient of the output; same dtype as ``x``, and exactly the output
        size of ``x`` under the parameters.
    w_shape : sequence of 4 ints
        The weights' shape (K, C/groups, R, S).
    stride, padding, dilation, groups
        As for :func:`conv2d`.
    algo : str
        A registered algorithm that computes ``bwd_w`` (``bwd_wb`` with
        ``bias_grad``) or ``"auto"``.
    backend : {"cpu", "gpu"}
    bias_grad : bool
        Also return the bias gradient.

    Returns
    -------
    array of shape ``w_shape``, or ``(dw, db)`` with ``db`` of shape (K,) if ``bias_grad``

    Raises
    ------
    UnsupportedProblem
        The algorithm cannot compute this problem's direction.
    ValueError, TypeError
        Bad input; the message names the expected and the given shapes or dtypes.

    Examples
    --------
    >>> import numpy as np, convbench
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> dw, db = convbench.conv2d_backward_weights(x, np.ones((1, 1, 2, 2)), (1, 1, 2, 2),
    ...                                            bias_grad=True)
    >>> dw[0, 0], db
    (array([[ 8., 12.],
           [20., 24.]]), array([4.]))
    """
    p, x, dy = problem_for_backward_weights(x, dy, w_shape, stride=stride, padding=padding,
                                            dilation=dilation, groups=groups,
                                            bias_grad=bias_grad)
    kernel = _runnable(p, backend, algo)
    xp = array_module(x)
    if p.mb == 0:
        dw = xp.zeros(p.weight_shape, dtype=p.dtype)
        return (dw, xp.zeros(p.oc, dtype=p.dtype)) if bias_grad else dw
    out = kernel.prepare(p, x, dy, None)()
    if bias_grad:
        return as_array_of(xp, out[0]), as_array_of(xp, out[1])
    return as_array_of(xp, out)
