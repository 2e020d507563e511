"""Other machines' arithmetic on this one: settings that change summation orders.

A correct kernel's rounding errors depend on the order it sums in, and that
order is the platform's: the BLAS kernels OpenBLAS picks for the CPU, the
CPU Numba compiles for (vector width, fused multiply-add), the instruction
set oneDNN dispatches to. These variables choose each of them on one
machine, so that an accuracy rule can be shown to hold on platforms one does
not have (``benchmarks/check_platforms.py``, ``tests/test_portable_accuracy.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EmulatedPlatform:
    """A named set of environment variables, and the CPU features they need.

    Attributes
    ----------
    name : str
    env : dict
        ``OPENBLAS_CORETYPE`` (OpenBLAS's kernel set), ``NUMBA_CPU_NAME``
        (Numba's target CPU), ``ONEDNN_MAX_CPU_ISA`` (oneDNN's instruction
        set cap), with torch's and MKL's matching caps (``ATEN_CPU_CAPABILITY``,
        ``MKL_ENABLE_INSTRUCTIONS``: torch's float64 convolution is an MKL GEMM).
    needs : tuple of str
        ``/proc/cpuinfo`` flags the settings need (running a kernel set the
        CPU lacks would stop on an illegal instruction).
    """

    name: str
    env: dict[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()

    def unsupported_reason(self, flags: set[str] | None = None) -> str | None:
        """Why this CPU cannot emulate the platform, or None."""
        flags = cpu_flags() if flags is None else flags
        missing = [f for f in self.needs if f not in flags]
        return f"this CPU lacks {', '.join(missing)}" if missing else None


#: Four platforms that differ in every variable, from any x86-64 to AVX-512.
PLATFORMS = (
    EmulatedPlatform("native"),
    EmulatedPlatform("sse", {"OPENBLAS_CORETYPE": "Prescott", "NUMBA_CPU_NAME": "generic",
                             "ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default",
                             "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}),
    EmulatedPlatform("haswell", {"OPENBLAS_CORETYPE": "Haswell", "NUMBA_CPU_NAME": "haswell",
                                 "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                                 "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, ("avx2", "fma")),
    EmulatedPlatform("zen-generic", {"OPENBLAS_CORETYPE": "Zen", "NUMBA_CPU_NAME": "generic",
                                     "ONEDNN_MAX_CPU_ISA": "AVX2",
                                     "ATEN_CPU_CAPABILITY": "avx2",
                                     "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, ("avx2", "fma")),
    EmulatedPlatform("skylakex", {"OPENBLAS_CORETYPE": "SkylakeX",
                                  "NUMBA_CPU_NAME": "skylake-avx512",
                                  "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
                                  "ATEN_CPU_CAPABILITY": "avx512",
                                  "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
                     ("avx512f", "avx512dq", "avx512bw", "avx512vl")),
)


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def platform(name: str) -> EmulatedPlatform:
    """The platform called ``name``."""
    for p in PLATFORMS:
        if p.name == name:
            return p
    raise ValueError(f"unknown platform {name!r}; one of {[p.name for p in PLATFORMS]}")
