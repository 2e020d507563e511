"""cuDNN through PyTorch: ``torch.nn.functional.conv2d`` on CUDA, autotuned; backward too.

The backward directions call aten's ``convolution_backward`` (what autograd
runs for ``torch.nn.grad.conv2d_input`` / ``conv2d_weight``) with the output
mask of the direction: cuDNN's backward-data or backward-filter algorithms.
Its ``input`` (bwd_d) or ``weight`` (bwd_w) argument only gives a shape: a
zero tensor made once. Asymmetric padding pads ``x`` once in ``prepare``
(bwd_w) or crops the padded gradient in the call (bwd_d).

``torch.backends.cudnn.benchmark = True`` makes PyTorch time cuDNN's
algorithms on the first call for each shape and keep the fastest (that first
call is the harness's untimed first call). TF32 is switched on only for
problems that allow it (``fpmath="tf32"``); float32 is otherwise strict.
Inputs arrive as CuPy arrays and are
shared with torch through DLPack, without copies. Skipped with the reason
when torch, its CUDA build or a GPU is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convbench.contract import KernelBase
from convbench.problem import ConvProblem

from ..gpu.base import GPU_DTYPES
from ..gpu.runtime import UNAVAILABLE_REFUSALS, default_runtime
from .onednn import torch_padding

INSTALL_HINT = ("torch with CUDA is not installed: pip install torch (a CUDA build; "
                "convbench's test extra pins the CPU build 2.13.0)")


def _torch() -> Any:
    try:
        import torch  # noqa: PLC0415 -- optional dependency
    except ImportError:
        return None
    return torch


class TorchCudnnBaseline(KernelBase):
    """``torch.nn.functional.conv2d`` on CUDA with ``cudnn.benchmark=True``.

    ``workspace_bytes`` is 0: cuDNN's workspace inside torch is not observable.
    """

    name = "torch_cudnn"
    backend = "gpu"
    kind = "baseline"
    clock = "cuda-events"
    dtypes = GPU_DTYPES
    directions = ("fwd", "bwd_d", "bwd_w", "bwd_wb")
    uses_tf32 = True  # torch's allow_tf32 follows the problem's fpmath
    documented_refusals = (*UNAVAILABLE_REFUSALS, r"^torch \S+ sees no CUDA device",
                           r"^torch \S+ was built without cuDNN")

    def supports(self, p: ConvProblem) -> str | None:
        reason = super().supports(p)
        if reason:
            return reason
        torch = _torch()
        if torch is None:
            return INSTALL_HINT
        if not torch.cuda.is_available():
            return f"torch {torch.__version__} sees no CUDA device (CPU build, or no GPU present)"
        if not torch.backends.cudnn.is_available():
            return f"torch {torch.__version__} was built without cuDNN"
        return default_runtime().unavailable_reason()

    def prepare_call(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> Callable[[], Any]:
        torch = _torch()
        rt = default_runtime()
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = p.math == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = p.math == "tf32"
        f = torch.nn.functional

        def to_torch(a: Any) -> Any:
            return torch.from_dlpack(rt.asarray(a))

        padding, pre_pad = torch_padding(p)
        if p.dir != "fwd":
            return backward_call(torch, rt, p, to_torch(x), to_torch(w), padding, pre_pad)
        xt = to_torch(x)
        if pre_pad is not None:
            xt = f.pad(xt, pre_pad)
        wt = to_torch(w)
        bt = None if bias is None else to_torch(bias)
        xp = rt.xp

        def run() -> Any:
            with torch.no_grad():
                out = f.conv2d(xt, wt, bt, stride=p.stride, padding=padding,
                               dilation=p.dilation, groups=p.g)
            return xp.from_dlpack(out)

        return run


def backward_call(torch: Any, rt: Any, p: ConvProblem, a: Any, b: Any, padding: Any,
                  pre_pad: tuple[int, int, int, int] | None) -> Callable[[], Any]:
    """aten ``convolution_backward`` for ``p.dir``; ``(a, b)`` are ``(dy, w)`` or ``(x, dy)``."""
    f = torch.nn.functional
    xp = rt.xp
    geometry = dict(stride=list(p.stride), padding=list(padding) if isinstance(padding, tuple)
                    else [padding, padding], dilation=list(p.dilation), transposed=False,
                    output_padding=[0, 0], groups=p.g)
    backward = torch.ops.aten.convolution_backward
    if p.dir == "bwd_d":
        dy, w = a, b
        (pt, _), (pl, _) = p.padding
        shape = p.input_shape
        if pre_pad is not None:
            left, right, top, bottom = pre_pad
            shape = (p.mb, p.ic, p.ih + top + bottom, p.iw + left + right)
        x_like = torch.zeros(shape, dtype=dy.dtype, device=dy.device)
        if pre_pad is None:
            def run_data() -> Any:
                with torch.no_grad():
                    dx = backward(dy, x_like, w, None, **geometry,
                                  output_mask=[True, False, False])[0]
                return xp.from_dlpack(dx)

            return run_data
        rows, cols = min(p.ih, shape[2] - pt), min(p.iw, shape[3] - pl)
        dx = torch.zeros(p.input_shape, dtype=dy.dtype, device=dy.device)

        def run_data_cropped() -> Any:
            with torch.no_grad():
                padded = backward(dy, x_like, w, None, **geometry,
                                  output_mask=[True, False, False])[0]
                dx[:, :, :rows, :cols] = padded[:, :, pt:pt + rows, pl:pl + cols]
            return xp.from_dlpack(dx)

        return run_data_cropped
    x, dy = a, b
    if pre_pad is not None:
        x = f.pad(x, pre_pad)
    w_like = torch.zeros(p.weight_shape, dtype=dy.dtype, device=dy.device)
    with_bias = p.dir == "bwd_wb"

    def run_weights() -> Any:
        with torch.no_grad():
            _, dw, db = backward(dy, x, w_like, [p.oc] if with_bias else None, **geometry,
                                 output_mask=[False, True, with_bias])
        return (xp.from_dlpack(dw), xp.from_dlpack(db)) if with_bias else xp.from_dlpack(dw)

    return run_weights


KERNELS = [TorchCudnnBaseline()]
