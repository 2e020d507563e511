"""Every CUDA source compiles for a GPU (nvcc, sm_90) and for the host emulator.

CI has nvcc but no GPU: compiling is the check that the GPU code is valid
CUDA C++, with every kernel the Python side launches defined under its name.
The sources are those the shipped GPU kernels declare, so a new kernel's
source is compiled here without editing this file.
"""

import dataclasses
import re

import pytest

from convbench.kernels.catalog import builtin_kernels
from convbench.kernels.gpu import sources
from convbench.kernels.gpu.direct import SOURCE as DIRECT_SOURCE
from convbench.kernels.gpu.im2col import SOURCE as IM2COL_SOURCE
from convbench.kernels.gpu.runtime import emulator_library

NVCC = sources.find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) not installed")
SOURCES = {src.name: src for k in builtin_kernels() if k.backend == "gpu"
           for src in getattr(k, "sources", ())}


def test_every_cuda_file_belongs_to_a_kernel():
    files = {path.stem for path in sources.CUDA_DIR.glob("*.cu")}
    assert files == set(SOURCES) and {"direct", "im2col", "fft", "winograd"} <= files


@needs_nvcc
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_source_compiles_for_sm90_with_every_kernel(name):
    cubin = sources.nvcc_cubin(SOURCES[name], arch="90")
    assert cubin[:4] == b"\x7fELF", "nvcc -cubin must produce an ELF cubin"
    for kernel in SOURCES[name].kernel_names():
        assert kernel.encode() in cubin, f"{kernel} missing from {name}.cubin"


@needs_nvcc
def test_nvcc_reports_a_broken_source(tmp_path, monkeypatch):
    broken = tmp_path / "im2col.cu"
    broken.write_text(IM2COL_SOURCE.path().read_text().replace("out[j] = v;",
                                                               "out[j] = undefined_name;"))
    (tmp_path / "common.cuh").write_text((sources.CUDA_DIR / "common.cuh").read_text())
    monkeypatch.setattr(sources, "CUDA_DIR", tmp_path)
    with pytest.raises(RuntimeError, match="undefined_name"):
        sources.nvcc_cubin(IM2COL_SOURCE)


@needs_nvcc
def test_direct_kernel_fits_its_launch_bounds_without_spilling():
    """128 threads x DIRECT_K_BLOCK accumulators must stay in registers."""
    _, log = sources.nvcc_build(DIRECT_SOURCE, extra=("-Xptxas", "-v"))
    spills = [int(m) for m in re.findall(r"(\d+) bytes spill stores", log)]
    assert spills and max(spills) == 0, log


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_source_builds_for_the_host_emulator(name):
    lib = emulator_library(SOURCES[name])
    assert lib.cb_launch is not None


def test_tile_geometry_comes_from_python():
    text = DIRECT_SOURCE.text()
    for key, value in DIRECT_SOURCE.defines:
        assert f"#define {key} {value}\n" in text


def test_cuda_sources_need_no_headers():
    """NVRTC (CuPy) compiles without include paths: no #include in the GPU text."""
    for src in SOURCES.values():
        assert "#include" not in src.text(), src.name


def test_unknown_source_is_a_clear_error():
    missing = dataclasses.replace(IM2COL_SOURCE, name="nope")
    with pytest.raises(ValueError, match="no CUDA source .*nope.cu"):
        missing.text()


def test_cupy_compiles_every_source_when_installed():
    pytest.importorskip("cupy", reason="CuPy not installed")
    from cupy.cuda import compiler

    for src in SOURCES.values():
        compiler.compile_using_nvcc(src.text(), options=("-std=c++17",), arch="90")


@needs_nvcc
def test_roof_bandwidth_probes_are_single_kernels_that_compile(tmp_path):
    """The triad is one kernel (3 arrays, 12 bytes/element), not cupy.add(x, 3.0 * x)."""
    import subprocess

    from convbench.measure import roof

    src = tmp_path / "stream.cu"
    src.write_text(roof._GPU_STREAM_SOURCE)
    done = subprocess.run([NVCC, "-cubin", "-arch=sm_90", "-o", str(tmp_path / "s.cubin"),
                           str(src)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    cubin = (tmp_path / "s.cubin").read_bytes()
    assert b"stream_triad" in cubin and b"stream_copy" in cubin
    assert set(roof.GPU_GEMMS) == {"fp32", "tf32", "fp16_fp32acc"}
