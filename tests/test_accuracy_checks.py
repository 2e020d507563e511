"""Exact mode, assert_conv_close, convbench check -- and proof that they catch real bugs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import documented_refusal, envelope_ratio, make_task

import convbench
from convbench import ConvProblem, registry
from convbench.measure.compare import check_records, threshold
from convbench.measure.inputs import exact_channels, exact_inputs, make_inputs
from convbench.measure.runner import measure
from convbench.problem.reference import reference_for
from convbench.problem.suites import load_suite
from convbench.store.baselines import Baseline
from convbench.testing import assert_conv_close

TESTS = Path(__file__).parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
import planted_faults  # noqa: E402

# Unpadded on purpose: with zero padding an FFT one point too short only wraps
# padding zeros round, and is harmless.
FAULT_PROBLEM = ConvProblem.parse('--dir=FWD_B mb2ic16ih12oc16kh3n"fault_layer"')
FAULTS = {type(f).__name__: f for f in planted_faults.FAULTS}


# ---------------------------------------------------------------- exact mode
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("desc", [
    "mb2ic16ih12oc16kh3ph1",
    "g2mb1ic8ih9iw7oc4kh5sh2ph2dh1",
    "mb1ic2048ih7oc512kh1",         # the longest ResNet-50 reduction
    "mb1ic832ih7oc128kh5ph2",       # GoogLeNet 5b 5x5: n = 20800
])
def test_exact_mode_direct_and_im2col_are_bit_exact(desc, dtype):
    p = ConvProblem.parse(desc).with_(dtype=dtype, bias=True)
    x, w, b = exact_inputs(p)
    assert np.array_equal(x, np.round(x)) and np.array_equal(w, np.round(w))
    ref = reference_for(p, x, w, b)
    for algo in ("direct", "im2col"):
        y = convbench.get_kernel(algo).prepare(p, x, w, b)()
        np.testing.assert_array_equal(y, ref.astype(dtype), err_msg=algo)


def test_exact_fill_reduces_density_only_when_needed():
    short = ConvProblem.parse("mb1ic64ih8oc8kh3ph1")
    assert exact_channels(short) == 64
    # float16 output must hold every sum in 11 bits: values in {-1, 0, 1}, at most
    # 2047 non-zero terms, so 2047 // 9 = 227 channels keep data.
    half = ConvProblem.parse("--dt=f16 mb1ic512ih8oc8kh3ph1")
    assert exact_channels(half) == 227
    x, _, _ = exact_inputs(half)
    assert np.all(x[:, 227:] == 0) and np.any(x[:, :227] != 0)
    assert set(np.unique(x)) <= {-1.0, 0.0, 1.0}
    with pytest.raises(ValueError, match="fill must be one of"):
        make_inputs(short, fill="ones")


# -------------------------------------------------------- assert_conv_close
@pytest.mark.parametrize("algo", ["direct", "im2col", "fft", "winograd"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_assert_conv_close_accepts_correct_kernels(algo, dtype):
    for layer in load_suite("resnet50", batch=1, dtype=dtype, bias=True):
        p = layer.problem
        if documented_refusal(convbench.get_kernel(algo), p) or p.flops > 3e8:
            continue
        x, w, b = make_inputs(p)
        y = convbench.get_kernel(algo).prepare(p, x, w, b)()
        assert_conv_close(y, x, w, b, stride=p.stride, padding=(p.ph, p.pw), algo=algo)


def test_assert_conv_close_message_names_the_worst_element():
    p = FAULT_PROBLEM
    x, w, b = make_inputs(p)
    y = convbench.conv2d(x, w, b, algo="im2col").copy()
    y[1, 5, 7, 3] += 0.01
    with pytest.raises(AssertionError) as info:
        assert_conv_close(y, x, w, b, algo="im2col")
    text = str(info.value)
    assert "worst y[1, 5, 7, 3]" in text and "reference" in text and "bound" in text
    assert "at 1 of 3200 elements" in text and "n = 144" in text
    with pytest.raises(AssertionError, match="output shape"):
        assert_conv_close(y[:1], x, w, b)
    y[0, 0, 0, 0] = np.nan
    with pytest.raises(AssertionError, match="non-finite values differ"):
        assert_conv_close(y, x, w, b)


# ---------------------------------------------------------- planted faults
def _records(problems, names):
    """Accuracy records measured in-process (so in-process registrations count)."""
    return [measure(make_task(p, name)) for p in problems for name in names]


@pytest.fixture(scope="module")
def clean_baseline():
    """A baseline of the correct kernels on the fault layer and two ResNet-50 layers."""
    problems = [FAULT_PROBLEM] + [x.problem for x in load_suite("resnet50", batch=1, bias=True)
                                  if x.problem.name in ("res3_branch2b", "res5_branch2b")]
    baseline = Baseline()
    baseline.update(_records(problems, ["direct", "im2col", "fft", "winograd", "winograd_4x4",
                                        "winograd_6x6"]))
    return problems, baseline


def test_clean_kernels_pass_every_check(clean_baseline):
    problems, baseline = clean_baseline
    records = _records(problems, ["direct", "im2col", "fft", "winograd"])
    outcome = check_records(records, baseline.entries, same_platform=True)
    assert outcome.findings == [] and outcome.passed == len(records) == 12
    assert all(0 < r["error"]["envelope_ratio"] <= 1 for r in records)
    p = FAULT_PROBLEM
    x, w, b = make_inputs(p)
    for algo in ("direct", "im2col", "fft", "winograd"):
        kernel = convbench.get_kernel(algo)
        y = kernel.prepare(p, x, w, b)()
        assert envelope_ratio(kernel, p, x, w, b, y) <= 1
        assert_conv_close(y, x, w, b, algo=algo)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_planted_fault_is_caught_by_every_check(fault, clean_baseline):
    kernel = FAULTS[fault]
    original = registry.get_kernel(kernel.name)
    p = FAULT_PROBLEM
    x, w, b = make_inputs(p)
    y = kernel.prepare(p, x, w, b)()
    # 1. The error envelope, directly, with a margin of at least 10.
    assert envelope_ratio(original, p, x, w, b, y) > 10, kernel.fault
    # 2. assert_conv_close.
    with pytest.raises(AssertionError, match=f"exceeds the {kernel.name} error envelope"):
        assert_conv_close(y, x, w, b, algo=kernel.name)
    # 3. convbench check, with the fault registered under the built-in's name.
    problems, baseline = clean_baseline
    registry.register(kernel, replace=True)
    try:
        records = _records(problems, [kernel.name])
    finally:
        registry.register(original, replace=True)
    outcome = check_records(records, baseline.entries)  # another platform: envelopes alone
    caught = {f.name for f in outcome.findings}
    assert "fault_layer" in caught, kernel.fault
    assert all(f.what == "envelope_ratio" for f in outcome.findings)
    same = check_records(records, baseline.entries, same_platform=True)  # and as drift
    assert {f.what for f in same.findings} >= {"envelope_ratio", "rel_l2"}


def test_threshold_rules():
    assert threshold("rel_l2", 0.0, "float32", 2.0) == 0.0  # exact must stay exact
    assert threshold("rel_l2", 1e-6, "float32", 2.0) == 2e-6
    assert threshold("rel_l2", 1e-9, "float32", 2.0) == 4 * 2.0**-24  # floor
    assert threshold("bound_ratio", 0.3, "float64", 2.0) == 2.0


def test_drift_fails_on_its_platform_and_informs_on_another():
    rec = _records([FAULT_PROBLEM], ["im2col"])[0]
    assert check_records([rec]).passed == 1  # no baseline: the envelope alone decides
    baseline = Baseline()
    baseline.update([rec])
    drifted = {**rec, "error": {**rec["error"], "rel_l2": 10 * rec["error"]["rel_l2"]}}
    here = check_records([drifted], baseline.entries, same_platform=True)
    assert here.passed == 0 and [f.what for f in here.findings] == ["rel_l2"]
    there = check_records([drifted], baseline.entries, same_platform=False)
    assert there.passed == 1 and there.findings == []
    assert [f.what for f in there.information] == ["rel_l2"]
    failed = {**rec, "status": "failed", "reason": "boom"}
    assert "failed: boom" in check_records([failed], baseline.entries).findings[0].what
    with pytest.raises(ValueError, match="refusing to record a failure"):
        baseline.update([failed])
    beyond = {**rec, "error": {**rec["error"], "envelope_ratio": 1.5}}
    assert check_records([beyond]).findings[0].what == "envelope_ratio"
    nan = {**rec, "error": {**rec["error"], "nonfinite": 3}}
    assert "3 non-finite outputs" in check_records([nan]).findings[0].what


def test_exact_fill_demands_bit_exactness_of_the_direct_family():
    p = FAULT_PROBLEM
    x, w, b = exact_inputs(p)
    for algo in ("direct", "im2col"):
        kernel = convbench.get_kernel(algo)
        y = kernel.prepare(p, x, w, b)()
        assert envelope_ratio(kernel, p, x, w, b, y, fill="exact") == 0.0
        y[0, 0, 0, 0] += 1.0  # one output off by one unit: no longer exact
        assert envelope_ratio(kernel, p, x, w, b, y, fill="exact") == float("inf")


def _check_cli(*args, modules=None):
    env = dict(os.environ)
    if modules:
        env["CONVBENCH_KERNEL_MODULES"] = modules
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "convbench.cli", "check", "--no-progress",
                           *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)


# res3_branch2b: 3x3 stride 1 (Winograd); lenet5 conv2: 5x5 unpadded (where an FFT one
# point too short wraps data round); res4a_branch1: 1x1 stride 2.
SUBSET = ("--suite", "resnet50,lenet5", "--match", "res3_branch2b|res4a_branch1|conv2",
          "--dtype", "f32")


@pytest.mark.parametrize("modules, algos", [
    ("planted_faults", "direct,im2col,fft,winograd,winograd_4x4,winograd_6x6"),
    ("planted_bias_fault", "im2col"),
])
@pytest.mark.slow
def test_convbench_check_cli_flags_planted_faults_against_committed_baseline(modules, algos):
    committed = ROOT / "results" / "accuracy" / "cpu-random.json"
    assert committed.exists(), "the committed accuracy baseline is missing"
    clean = _check_cli(*SUBSET, "--algo", algos)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    faulty = _check_cli(*SUBSET, "--algo", algos, modules=modules)
    assert faulty.returncode == 1, faulty.stdout + faulty.stderr
    flagged = {line.split("|")[2].strip() for line in faulty.stdout.splitlines()
               if line.startswith(("| res", "| conv2"))}
    expected = set(algos.split(","))
    on_3x3 = {line.split("|")[2].strip() for line in faulty.stdout.splitlines()
              if line.startswith("| res3_branch2b")}
    if modules == "planted_faults":
        # res4a_branch1 is 1x1: the Winograd kernels are checked on 3x3 only
        assert {n for n in expected if n.startswith("winograd")} <= on_3x3
    assert expected <= flagged


def test_committed_baselines_cover_every_kernel_and_suite():
    for fill in ("random", "exact"):
        data = json.loads((ROOT / "results" / "accuracy" / f"cpu-{fill}.json").read_text())
        entries = data["entries"]
        assert {e["kernel"] for e in entries} >= {"direct", "im2col", "fft", "winograd",
                                                  "onednn", "numpy_im2col"}
        assert {e["suite"] for e in entries} == {"alexnet", "deepbench", "googlenet", "lenet5",
                                                 "mobilenet_v1", "resnet50", "vgg16"}
        assert {e["dtype"] for e in entries} == {"float32", "float64"}
        fingerprint = data["meta"]["fingerprint"]  # drift is judged on this platform only
        assert fingerprint["backend"] == "cpu" and len(fingerprint["id"]) == 12
        if fill == "exact":
            for e in entries:
                if e["kernel"] in ("direct", "im2col"):
                    assert e["rel_l2"] == 0.0 and e["max_rel"] == 0.0, e
