"""GPU launch and tiling arithmetic on every suite layer (no GPU needed)."""

import pytest
from conftest import documented_refusal

from convbench import ConvProblem
from convbench.kernels.gpu.base import GPU_WORKSPACE_CAP_BYTES
from convbench.kernels.gpu.direct import (
    GRID_YZ_LIMIT,
    K_BLOCK,
    K_GROUPS,
    SHARED_LIMIT_BYTES,
    TILE_P,
    TILE_Q,
    TILED_K,
    TILED_MIN_CHANNELS,
    DirectLaunch,
    GpuDirectKernel,
    halo_shape,
    plan_direct,
)
from convbench.kernels.gpu.fft import GpuFftKernel
from convbench.kernels.gpu.im2col import GpuIm2colKernel
from convbench.kernels.gpu.runtime import (
    ELEMENTWISE_BLOCK,
    MAX_GRID_BLOCKS,
    HostRuntime,
    elementwise_grid,
)
from convbench.kernels.gpu.winograd import GpuWinogradKernel
from convbench.problem.suites import list_suites, load_suite

LAYERS = [pytest.param(layer.problem.with_(mb=mb, dtype=dt), id=f"{suite}-{layer.problem.name}"
                       f"-mb{mb}-{dt}")
          for suite in list_suites() for layer in load_suite(suite)
          for mb, dt in ((1, "float32"), (32, "float64"))]


@pytest.mark.parametrize("p", LAYERS)
def test_direct_launch_fits_cuda_limits(p):
    plan = plan_direct(p)
    assert isinstance(plan, DirectLaunch), plan
    tiled = plan.kernel == "direct_conv2d_tiled"
    assert tiled == (p.oc // p.g > TILED_MIN_CHANNELS) or plan.kernel == "direct_conv2d"
    k_block = TILED_K if tiled else K_BLOCK
    assert plan.block == ((TILE_Q, K_GROUPS, 1) if tiled else (TILE_Q, TILE_P, 1))
    assert 1 <= plan.chunk <= p.ic // p.g
    assert plan.shared_bytes <= SHARED_LIMIT_BYTES
    hh, hw = halo_shape(p)
    acc = 8 if p.dtype == "float64" else 4
    halo = plan.chunk * hh * hw
    if tiled:  # the weights start 16-byte aligned, after the halo
        assert plan.shared_bytes == (-(-halo // 4) * 4 + plan.chunk * p.kh * p.kw * k_block) * acc
    else:
        assert plan.shared_bytes == (halo + plan.chunk * p.kh * p.kw * k_block) * acc
    gx, gy, gz = plan.grid
    # Every output pixel and channel is covered by exactly one (block, thread, k slot).
    assert gx == -(-p.oh // TILE_P) * -(-p.ow // TILE_Q)
    assert gy * k_block >= p.oc and gy == p.g * -(-(p.oc // p.g) // k_block)
    assert gz == p.mb and max(gy, gz) <= GRID_YZ_LIMIT


def test_resnet50_runs_the_register_tiled_direct_kernel():
    from convbench.problem.suites import load_suite

    kernels = {plan_direct(layer.problem).kernel for layer in load_suite("resnet50")}
    assert kernels == {"direct_conv2d_tiled"}


def test_direct_refuses_a_halo_that_cannot_fit():
    p = ConvProblem.parse("mb1ic1ih400iw400oc1kh41kw41sh8sw8")
    reason = plan_direct(p)
    assert isinstance(reason, str) and "shared memory" in reason
    kernel_reason = GpuDirectKernel(HostRuntime()).supports(p)
    assert kernel_reason == reason


@pytest.mark.parametrize("p", LAYERS)
def test_gpu_workspaces_stay_under_the_cap(p):
    for cls in (GpuIm2colKernel, GpuWinogradKernel):
        kernel = cls(HostRuntime())
        if documented_refusal(kernel, p) is None:
            assert kernel.workspace_bytes(p) <= GPU_WORKSPACE_CAP_BYTES, cls.__name__
    fft = GpuFftKernel(HostRuntime())
    if fft.workspace_bytes(p) > GPU_WORKSPACE_CAP_BYTES:  # only when one tile exceeds it
        assert fft.plan(p).batch == 1


@pytest.mark.parametrize("total", [1, 255, 256, 257, 10**6, 10**9])
def test_elementwise_grid_covers_every_item(total):
    (blocks, gy, gz), (threads, by, bz) = elementwise_grid(total)
    assert (gy, gz, by, bz) == (1, 1, 1, 1) and threads == ELEMENTWISE_BLOCK
    assert 1 <= blocks <= MAX_GRID_BLOCKS
    # grid-stride loop: every item is visited when blocks * threads >= 1 (always),
    # and no block is launched without work.
    assert (blocks - 1) * threads < total


def test_math_modes_say_what_each_kernel_computes():
    p = ConvProblem.parse("mb1ic8ih9oc8kh3ph1").with_(dtype="float16")
    kernels = {cls.name: cls(HostRuntime()) for cls in
               (GpuDirectKernel, GpuIm2colKernel, GpuWinogradKernel, GpuFftKernel)}
    modes = {name: k.math_mode(p) for name, k in kernels.items()}
    assert all(m.startswith("fp16 storage, fp32 accumulation") for m in modes.values()), modes
    assert "fp16 x fp16 -> fp32 (tensor cores)" in modes["im2col"]
    assert "fp16 x fp16 -> fp32 (tensor cores)" in modes["winograd"]
    assert "U and V in fp16" in modes["winograd"]
    assert "tf32" in modes["fft"] and "tensor" not in modes["direct"]
    strict = p.with_(dtype="float32")
    tf32 = strict.with_(fpmath="tf32")
    for name, k in kernels.items():
        assert k.math_mode(strict) == "fp32 strict (no TF32)", name
    assert kernels["direct"].math_mode(tf32) == "fp32 strict (no TF32)"  # no GEMM to round
    for name in ("im2col", "winograd", "fft"):
        assert kernels[name].math_mode(tf32).startswith("tf32 operands"), name
        assert "tf32 x tf32 -> fp32 (tensor cores)" in kernels[name].math_mode(tf32)
