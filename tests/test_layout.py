"""The layout's promises: what imports what, and what adding a kernel takes.

* GPU kernel modules import neither Numba nor CuPy; no harness module
  imports a kernel module (the registry loads the catalog by name, lazily);
  kernel modules import only the contract side of the harness.
* A new GPU kernel is three files: its algorithm module, its ``.cu`` source
  and its kernel module; the catalog, the CUDA build tests and the emulator
  pick it up with no other edit (shown on a copy of the package).
* Results files written before the layout changed still load and render.
"""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
HARNESS = ROOT / "convbench"
KERNELS = ROOT / "kernels"
#: What kernel modules may import from the harness: the contract side, and the leaf
#: measurement helpers that import nothing of convbench's (the cool-down a timed choice in
#: ``prepare`` waits with).
CONTRACT_MODULES = ("convbench.contract", "convbench.errors", "convbench.problem",
                    "convbench.measure.clocks", "convbench.measure.timing",
                    "convbench.measure.threads", "convbench.measure.cooldown")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, check=False)


def _modules(folder: Path, package: str) -> list[str]:
    out = []
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        if "kernels" in rel.parts[:1] or "__main__" in parts:
            continue
        out.append(".".join([package, *parts]))
    return out


def _imports(path: Path, package: str) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # level 1 is the module's own package, 2 its parent...
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module)
    return names


GPU_MODULES = [f"convbench.kernels.gpu.{p.stem}" for p in sorted((KERNELS / "gpu").glob("*.py"))
               if p.stem != "__init__"] + ["convbench.kernels.baselines.cudnn",
                                           "convbench.kernels.baselines.torch_cudnn"]


@pytest.mark.parametrize("module", GPU_MODULES)
def test_gpu_kernel_modules_import_neither_numba_nor_cupy(module):
    done = _python(f"""
        import sys
        import {module}
        loaded = sorted(m for m in ("numba", "cupy") if m in sys.modules)
        assert not loaded, loaded
        """)
    assert done.returncode == 0, done.stderr


def test_no_harness_module_imports_a_kernel_module_at_import_time():
    modules = _modules(HARNESS, "convbench")
    assert "convbench.measure.runner" in modules and "convbench.cli.sweep" in modules
    done = _python(f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        kernels = sorted(m for m in sys.modules if m.startswith(("convbench.kernels", "kernels")))
        assert not kernels, kernels
        """)
    assert done.returncode == 0, done.stderr


def test_no_import_cycle_between_harness_and_kernels():
    harness_to_kernels = {
        (path.relative_to(ROOT).as_posix(), name)
        for path in HARNESS.rglob("*.py") if "kernels" not in path.relative_to(HARNESS).parts
        for name in _imports(path, "convbench")
        if name.startswith(("convbench.kernels", "kernels"))}
    assert harness_to_kernels == set()
    for path in KERNELS.rglob("*.py"):
        package = "convbench.kernels." + ".".join(path.relative_to(KERNELS).parent.parts)
        for name in _imports(path, package.rstrip(".")):
            if name.startswith("convbench.") and not name.startswith("convbench.kernels"):
                assert name.startswith(CONTRACT_MODULES), (path, name)
            assert not name.startswith("kernels"), (path, name)  # relative inside kernels


def test_the_harness_modules_kernels_may_import_import_no_other_harness_module():
    """A leaf on that list must stay a leaf, or the list would let a cycle in."""
    for name in ("convbench.measure.cooldown", "convbench.measure.clocks"):
        path = HARNESS / (name.removeprefix("convbench.").replace(".", "/") + ".py")
        package = name.rpartition(".")[0]
        assert not [m for m in _imports(path, package) if m.startswith("convbench.")
                    and not m.startswith(CONTRACT_MODULES)], name


def test_installing_convbench_takes_over_no_top_level_kernels_package():
    done = subprocess.run([sys.executable, "-c", "import kernels"], capture_output=True,
                          text=True, cwd="/", check=False)
    assert done.returncode != 0 and "No module named 'kernels'" in done.stderr


# ---------------------------------------------------------------- adding a GPU kernel
TOY_ALGORITHM = '''
"""Naive direct convolution: one output element per thread (the recipe's example)."""


def workspace_bytes(p):
    return 0
'''
TOY_SOURCE = '''
template <typename T>
__device__ void naive_conv2d(const T* __restrict__ x, const T* __restrict__ w,
                             T* __restrict__ y, int N, int C, int H, int W, int K, int R,
                             int S, int P, int Q, int sh, int sw, int pt, int pl) {
    const long long total = (long long)N * K * P * Q;
    CB_GRID_STRIDE_LOOP(i, total) {
        const int q = (int)(i % Q), p = (int)((i / Q) % P);
        const int k = (int)((i / ((long long)P * Q)) % K), n = (int)(i / ((long long)K * P * Q));
        typename Acc<T>::type acc = 0;
        for (int c = 0; c < C; ++c)
            for (int r = 0; r < R; ++r)
                for (int s = 0; s < S; ++s) {
                    const int row = p * sh - pt + r, col = q * sw - pl + s;
                    if (row >= 0 && row < H && col >= 0 && col < W)
                        acc += cb_load(x, (((long long)n * C + c) * H + row) * W + col) *
                               cb_load(w, (((long long)k * C + c) * R + r) * S + s);
                }
        cb_store(y, i, acc);
    }
}
#define DEFINE_NAIVE(SUFFIX, T)                                                      \\
    extern "C" __global__ void naive_conv2d_##SUFFIX(                                \\
        const T* x, const T* w, T* y, int N, int C, int H, int W, int K, int R,      \\
        int S, int P, int Q, int sh, int sw, int pt, int pl) {                       \\
        naive_conv2d<T>(x, w, y, N, C, H, W, K, R, S, P, Q, sh, sw, pt, pl);         \\
    }                                                                                \\
    CB_EXPORT(naive_conv2d_##SUFFIX)
DEFINE_NAIVE(f32, float)
DEFINE_NAIVE(f64, double)
DEFINE_NAIVE(f16, cb_half)
'''
TOY_KERNEL = '''
"""Naive direct convolution on the GPU (dense, no dilation, no bias)."""

from ..algorithms import naive as algorithm
from .base import GpuKernel
from .runtime import elementwise_grid
from .sources import CudaSource

SOURCE = CudaSource("naive", ("naive_conv2d",))


class NaiveKernel(GpuKernel):
    name = "naive"
    sources = (SOURCE,)

    def problem_reason(self, p):
        if p.g != 1 or p.dilation != (1, 1) or p.bias:
            return "naive: dense, undilated, without bias"
        return super().problem_reason(p)

    def workspace_bytes(self, p):
        return algorithm.workspace_bytes(p)

    def prepare_call(self, p, x, w, bias):
        xd, wd, _, y, _ = self.device_operands(p, x, w, bias)
        args = [xd, wd, y, p.mb, p.ic, p.ih, p.iw, p.oc, p.kh, p.kw, p.oh, p.ow, p.sh, p.sw,
                p.ph, p.pw]
        name, grid = self.kernel("naive_conv2d", p), elementwise_grid(y.size)

        def run():
            self.runtime.launch(SOURCE, name, *grid, args)
            return y

        return run


KERNELS = [NaiveKernel()]
'''


def test_a_new_gpu_kernel_is_three_files(tmp_path):
    """Copy the kernel package, add the recipe's three files, and nothing else."""
    import shutil

    copy = tmp_path / "kernels_copy"
    shutil.copytree(KERNELS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "algorithms" / "naive.py").write_text(TOY_ALGORITHM)
    (copy / "gpu" / "cuda" / "naive.cu").write_text(TOY_SOURCE)
    (copy / "gpu" / "naive.py").write_text(TOY_KERNEL)
    done = _python(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np
        import convbench
        from kernels_copy.catalog import builtin_kernels
        from kernels_copy.gpu.runtime import HostRuntime

        found = {{k.name: k for k in builtin_kernels() if k.backend == "gpu"}}
        assert "naive" in found, sorted(found)
        toy = type(found["naive"])(HostRuntime())
        (src,) = toy.sources
        assert src.kernel_names() == ["naive_conv2d_f32", "naive_conv2d_f64", "naive_conv2d_f16"]
        p = convbench.ConvProblem.parse("mb2ic3ih9iw7oc4kh3sh2ph1")
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, p.input_shape).astype(np.float32)
        w = rng.uniform(-1, 1, p.weight_shape).astype(np.float32)
        y = toy.prepare(p, x, w, None)()
        ref = convbench.reference(x, w, stride=2, padding=1)
        assert np.abs(y - ref).max() < 1e-5, np.abs(y - ref).max()
        assert "winograd" in found and "im2col" in found
        print("ok")
        """)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr


# ------------------------------------------------------------- results of older layouts
def test_committed_results_from_before_the_layout_still_load_and_render():
    from convbench.present.tables import layer_table, network_table
    from convbench.store.jsonl import load_run

    # three layers of a sweep committed before the layout changed (and before rounds)
    run = load_run(ROOT / "tests" / "data" / "legacy-resnet50-mb1.jsonl")
    assert len(run.records) == 18 and run.headers
    rec = next(r for r in run.records if r.kernel == "winograd" and r.ok)
    assert rec.median_s == float(rec["time"]["median_s"]) and rec.rel_l2 > 0
    assert rec.key == (rec["problem"], "fwd", "cpu", "winograd")  # no dir: the forward
    text = layer_table(run.records)
    assert text.count("\n") == 18 + 1 and "res2_branch2b" in text
    totals = {row[0]: row for row in network_table(run.records).rows}
    assert totals["onednn"][5].startswith("3/3") and "best-of-convbench" in totals
