"""Every CUDA source compiles for a GPU (nvcc, sm_90) and for the host emulator.

CI has nvcc but no GPU: compiling is the check that the GPU code is valid
CUDA C++, with every kernel the Python side launches defined under its name.
"""

import re

import pytest

from kernels.gpu import sources
from kernels.gpu.runtime import emulator_library

NVCC = sources.find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) not installed")


@needs_nvcc
@pytest.mark.parametrize("source", sorted(sources.KERNELS))
def test_source_compiles_for_sm90_with_every_kernel(source):
    cubin = sources.nvcc_cubin(source, arch="90")
    assert cubin[:4] == b"\x7fELF", "nvcc -cubin must produce an ELF cubin"
    for name in sources.all_kernel_names(source):
        assert name.encode() in cubin, f"{name} missing from {source}.cubin"


@needs_nvcc
def test_nvcc_reports_a_broken_source(monkeypatch):
    broken = sources.cuda_source("im2col").replace("col[i] = v;", "col[i] = undefined_name;")
    monkeypatch.setattr(sources, "cuda_source", lambda name: broken)
    with pytest.raises(RuntimeError, match="undefined_name"):
        sources.nvcc_cubin("im2col")


@needs_nvcc
def test_direct_kernel_fits_its_launch_bounds_without_spilling():
    """128 threads x DIRECT_K_BLOCK accumulators must stay in registers."""
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "direct.cu"
        src.write_text(sources.cuda_source("direct"))
        done = subprocess.run([NVCC, "-cubin", "-arch=sm_90", "-Xptxas", "-v", "-o",
                               str(Path(tmp) / "d.cubin"), str(src)],
                              capture_output=True, text=True, check=True)
    spills = [int(m) for m in re.findall(r"(\d+) bytes spill stores", done.stderr)]
    assert spills and max(spills) == 0, done.stderr


@pytest.mark.parametrize("source", sorted(sources.KERNELS))
def test_source_builds_for_the_host_emulator(source):
    lib = emulator_library(source)
    assert lib.cb_launch is not None


def test_tile_geometry_comes_from_python():
    text = sources.cuda_source("direct")
    for key, value in sources.DEFINES["direct"].items():
        assert f"#define {key} {value}\n" in text


def test_cuda_sources_need_no_headers():
    """NVRTC (CuPy) compiles without include paths: no #include in the GPU text."""
    for source in sources.KERNELS:
        assert "#include" not in sources.cuda_source(source), source


def test_unknown_source_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown CUDA source 'nope'; known: direct"):
        sources.cuda_source("nope")


def test_cupy_compiles_every_source_when_installed():
    pytest.importorskip("cupy", reason="CuPy not installed")
    from cupy.cuda import compiler

    for source in sources.KERNELS:
        compiler.compile_using_nvcc(sources.cuda_source(source), options=("-std=c++17",),
                                    arch="90")
