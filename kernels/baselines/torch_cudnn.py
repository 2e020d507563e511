"""cuDNN through PyTorch: ``torch.nn.functional.conv2d`` on CUDA, autotuned.

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
from ..gpu.runtime import default_runtime
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
    uses_tf32 = True  # torch's allow_tf32 follows the problem's fpmath

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


KERNELS = [TorchCudnnBaseline()]
