"""What the GPU kernels share: dtypes and math modes, the workspace cap, the base class.

Every GPU kernel runs on a :class:`~kernels.gpu.runtime.Runtime`: the
registered instances use CuPy on the current device; tests build instances on
the host emulator. ``supports`` reports a missing CuPy or GPU as the reason a
problem cannot run, so sweeps record a ``skipped`` result instead of crashing.

Each kernel states the precision of every stage of its pipeline for a
problem (:meth:`GpuKernel.precision`: storage, transforms, GEMM operands and
accumulation); the prepared call carries it as ``details["precision"]`` and
:meth:`GpuKernel.math_mode` summarizes it, so a record says what the kernel
really computed in the problem's math mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convbench.contract import MATH_MODE_LABELS, KernelBase, Prepared
from convbench.problem import ConvProblem

from .runtime import UNAVAILABLE_REFUSALS, default_runtime
from .sources import CudaSource, kernel_name

GPU_DTYPES = ("float32", "float16", "float64")

#: Default bound on a GPU kernel's workspace. 1 GiB leaves most of a 16 GiB
#: card to inputs and outputs and is large enough for batch-32 VGG tiles.
GPU_WORKSPACE_CAP_BYTES = 2**30

#: Workspace dtype of transforms, lowered tiles and spectra per storage dtype.
WORK_DTYPE = {"float32": np.float32, "float16": np.float32, "float64": np.float64}


class GpuKernel(KernelBase):
    """Base of convbench's GPU kernels.

    Parameters
    ----------
    runtime : Runtime, optional
        Where to run (default: CuPy on the current device).
    workspace_cap : int
        Upper bound on the bytes the kernel allocates beyond inputs and output.
    """

    backend = "gpu"
    name = "gpu-kernel"
    dtypes = GPU_DTYPES
    #: :meth:`device_operands` keeps a device ``x`` as it is (no copy), and the
    #: kernels read it when their call runs.
    reads_input_at_call = True
    #: The CUDA sources the kernel launches.
    sources: tuple[CudaSource, ...] = ()
    #: A runtime that cannot run: no CuPy, no driver or device, ``CUPY_TF32``, no g++.
    documented_refusals = UNAVAILABLE_REFUSALS

    def __init__(self, runtime: Any = None, workspace_cap: int = GPU_WORKSPACE_CAP_BYTES) -> None:
        self._runtime = runtime
        self.workspace_cap = workspace_cap

    @property
    def runtime(self) -> Any:
        return self._runtime if self._runtime is not None else default_runtime()

    @property
    def clock(self) -> str:  # type: ignore[override] -- the runtime decides
        """``"cuda-events"`` on a device, ``"host"`` on the emulator."""
        return self.runtime.clock

    def precision(self, p: ConvProblem) -> dict[str, str]:
        """The precision of each stage of the kernel's pipeline for ``p`` (stage -> words)."""
        return {"storage": p.dtype}

    def math_note(self, p: ConvProblem) -> str:
        """What the kernel adds to the math mode's label (empty: nothing)."""
        return ""

    def math_mode(self, p: ConvProblem) -> str:
        label = super().math_mode(p)
        note = self.math_note(p)
        return f"{label}; {note}" if note and label != MATH_MODE_LABELS["fp32"] else label

    def with_details(self, p: ConvProblem, run: Any, **details: Any) -> Prepared:
        """``run`` as a prepared call whose details carry :meth:`precision` (and ``details``)."""
        return Prepared(run, {"precision": self.precision(p), **details})

    def problem_reason(self, p: ConvProblem) -> str | None:
        """Why the algorithm cannot run ``p`` on any device (subclasses extend)."""
        return KernelBase.supports(self, p)

    def supports(self, p: ConvProblem) -> str | None:
        return self.problem_reason(p) or self.runtime.unavailable_reason()

    @staticmethod
    def work_itemsize(p: ConvProblem) -> int:
        """Bytes per value of the work arrays (transforms, spectra) for ``p``'s dtype."""
        return np.dtype(WORK_DTYPE[p.dtype]).itemsize

    def kernel(self, base: str, p: ConvProblem) -> str:
        """The extern "C" name of ``base`` for ``p``'s storage dtype."""
        return kernel_name(base, p.dtype)

    def device_operands(self, p: ConvProblem, x: Any, w: Any,
                        bias: Any) -> tuple[Any, Any, Any, Any, bool]:
        """Inputs on the device, the output buffer and a bias operand (never None).

        Host arrays are copied here, in ``prepare``: transfers never fall
        inside the timed call. A device ``x`` is used as it is, so the call
        reads the values it holds when it runs (``reads_input_at_call``).
        ``w=None`` (kernels that only use transformed weights) copies no
        weights and returns ``None`` for them.
        """
        rt = self.runtime
        xp = rt.xp
        xd = rt.asarray(x)
        wd = None if w is None else rt.asarray(w)
        has_bias = bias is not None
        bd = rt.asarray(bias) if has_bias else xp.zeros(1, dtype=p.dtype)
        y = xp.empty(p.output_shape, dtype=p.dtype)
        return xd, wd, bd, y, has_bias
