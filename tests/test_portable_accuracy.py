"""`convbench check` passes on other platforms' arithmetic and still catches real faults.

Each platform of :mod:`convbench.measure.platforms` changes the summation
orders (OpenBLAS's kernel set, Numba's target CPU, oneDNN's instruction
set) in a fresh process. Under each, every correct kernel and baseline must
stay within its error envelope, every planted fault that changes a layer's
output must be caught, and the smallest fault must lie at least 10x above
the largest legitimate error.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from convbench.measure.compare import fault_bites, margins
from convbench.measure.platforms import PLATFORMS, cpu_flags, platform
from convbench.store.jsonl import load_run

TESTS = Path(__file__).parent
ROOT = TESTS.parent
#: Every layer of LeNet-5 and AlexNet, and two ResNet-50 layers where faults bite:
#: 3x3 stride 1 (Winograd) and 1x1 stride 2; LeNet-5's conv2 is 5x5 unpadded, where
#: an FFT one point short wraps real data round.
LAYERS = ("--suite", "lenet5,alexnet,resnet50", "--match", "^conv|res3_branch2b|res4a_branch1")
FAULTS = (("planted_faults", "direct,im2col,fft,winograd"), ("planted_bias_fault", "im2col"))


def _check(env, out, *args):
    env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-m", "convbench", "check", "--no-progress",
                           "--out", str(out), *LAYERS, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=900, check=False)


def _caught(rec):
    error = rec.get("error") or {}
    return rec.get("status") == "failed" or float(error.get("envelope_ratio", 0)) > 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sse", "haswell"])
def test_check_passes_and_catches_faults_on_another_platform(name, tmp_path):
    emulated = platform(name)
    reason = emulated.unsupported_reason()
    if reason:
        pytest.skip(f"cannot emulate {name}: {reason}")
    legit = _check(emulated.env, tmp_path / "legit.jsonl")
    assert legit.returncode == 0, legit.stdout + legit.stderr
    assert "0 finding(s)" in legit.stdout
    clean = load_run(tmp_path / "legit.jsonl").records
    assert {r.kernel for r in clean if r.ok} >= {"direct", "im2col", "fft", "winograd",
                                                 "onednn", "numpy_im2col"}
    faulty = []
    for module, algos in FAULTS:
        pythonpath = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
        run = _check({**emulated.env, "CONVBENCH_KERNEL_MODULES": module,
                      "PYTHONPATH": pythonpath}, tmp_path / f"{module}.jsonl",
                     "--dtype", "f32", "--algo", algos)
        assert run.returncode == 1, run.stdout + run.stderr
        faulty += load_run(tmp_path / f"{module}.jsonl").records
    by_key = {(r.kernel, r["problem"]): r for r in clean}
    changed = [r for r in faulty if fault_bites(r, by_key[(r.kernel, r["problem"])])]
    assert {r.kernel for r in changed} == {"direct", "im2col", "fft", "winograd"}
    missed = [f"{r.kernel} {r.label}" for r in changed if not _caught(r)]
    assert missed == []
    table = {(m.kernel, m.metric): m for m in margins(clean, changed, ("envelope_ratio",))}
    for kernel in ("direct", "im2col", "fft", "winograd"):
        m = table[(f"{kernel} float32", "envelope_ratio")]
        assert m.largest_legitimate <= 1 and m.ratio >= 10, (name, m)


def test_platforms_name_their_needs():
    assert {p.name for p in PLATFORMS} >= {"native", "sse", "haswell", "zen-generic",
                                           "skylakex"}
    assert platform("sse").unsupported_reason(set()) is None  # any x86-64
    assert platform("haswell").unsupported_reason({"sse2"}) == "this CPU lacks avx2, fma"
    assert platform("haswell").unsupported_reason({"avx2", "fma"}) is None
    with pytest.raises(ValueError, match="unknown platform 'arm'"):
        platform("arm")
    flags = cpu_flags()
    assert not flags or "sse2" in flags  # x86-64: SSE2 is the baseline


def _fingerprint(code_before: str, env: dict | None = None) -> str:
    """The fingerprint in a fresh process on the native platform, or ``env``'s."""
    emulation = {name for p in PLATFORMS for name in p.env}  # set when make test runs emulated
    native = {k: v for k, v in os.environ.items() if k not in emulation}
    done = subprocess.run([sys.executable, "-c", f"{code_before}\n"
                           "from convbench.store.environment import platform_fingerprint\n"
                           "print(platform_fingerprint('cpu')['id'])"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=True,
                          env=dict(native, **(env or {})))
    return done.stdout.strip()


@pytest.mark.slow
def test_the_platform_fingerprint_is_the_platform_not_the_import_order():
    plain = _fingerprint("")
    assert plain == _fingerprint("import torch, scipy.fft")  # torch loads an OpenMP runtime
    assert plain == _fingerprint("import convbench; convbench.algorithms('cpu')")
    assert plain != _fingerprint("", platform("sse").env)
