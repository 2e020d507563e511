"""``convbench.conv2d``: run one convolution with a chosen algorithm."""

from __future__ import annotations

from typing import Any

from convbench.contract import Kernel
from convbench.errors import UnsupportedProblem
from convbench.problem import ConvProblem, problem_from_arrays
from convbench.problem.arguments import array_module
from convbench.registry import get_kernel, kernels


def auto_kernel(p: ConvProblem, backend: str = "cpu") -> Kernel:
    """The kernel ``algo="auto"`` picks for ``p`` (documented rule).

    Winograd for 3x3 stride-1 layers with at least 16 input and output
    channels per group (below that the transforms cost more than they save);
    FFT for filters of 7x7 or more with stride 1 and at least 16 channels;
    otherwise im2col; direct for anything the others decline.
    """
    by_name = {k.name: k for k in kernels(backend, kind="kernel")}
    cg, kg = p.ic // p.g, p.oc // p.g
    preferred = []
    if min(cg, kg) >= 16:
        preferred.append("winograd")
        if min(p.kh, p.kw) >= 7 and p.stride == (1, 1):
            preferred.append("fft")
    preferred += ["im2col", "direct"]
    preferred += [name for name in by_name if name not in preferred]
    for name in preferred:
        kernel = by_name.get(name)
        if kernel is not None and kernel.supports(p) is None:
            return kernel
    raise UnsupportedProblem(f"no {backend} kernel supports {p}")


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
        A registered algorithm (see :func:`convbench.algorithms`) or ``"auto"``.
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
    if not isinstance(algo, str):
        raise TypeError(f"algo must be a str, got {algo!r}")
    kernel = auto_kernel(p, backend) if algo == "auto" else get_kernel(algo, backend)
    reason = kernel.supports(p)
    if reason is not None:
        raise UnsupportedProblem(f"{backend} {kernel.name} cannot run {p}: {reason}")
    if p.mb == 0:
        return array_module(x).empty(p.output_shape, dtype=p.dtype)
    return kernel.prepare(p, x, w, bias)()
