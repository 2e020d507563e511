"""The workspace cap holds: what a prepared call holds stays under it, or the kernel refuses.

* FFT on VGG-16 conv1_2's bwd_d (795 MiB of stored spectra) and on a forward layer whose
  smallest tile is over the cap: a plan under the cap, or a refusal with the bytes;
* the refusal's phrase, the cap's environment variable and command-line option;
* measured in fresh processes (``NUMBA_NRT_STATS=1``): each CPU kernel's ``workspace_bytes``
  is at least the peak of Numba's heap and of the resident set, from ``prepare`` through one
  call, on a few problems; and ``benchmarks/workspace_peak.py`` on two tiny layers.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import convbench
from convbench import ConvProblem, UnsupportedProblem
from convbench.cli import main as cli_main
from convbench.contract import (
    WORKSPACE_CAP_ENV,
    WORKSPACE_REFUSAL,
    parse_bytes,
    refusal,
    workspace_refusal,
)
from convbench.kernels.algorithms import fft as fft_algorithm
from convbench.kernels.cpu.base import WORKSPACE_CAP_BYTES
from convbench.kernels.cpu.fft import FftKernel
from convbench.measure.memory import CHILD_ENVIRONMENT
from convbench.problem.suites import load_suite
from convbench.store.jsonl import load_run

ROOT = Path(__file__).parents[1]
MIB = 2**20
VGG_CONV1_2 = 'mb2ic64ih224oc64kh3ph1n"conv1_2"'
#: A forward layer whose shortest FFT lengths (5x5) already need 482 MiB of filter spectra.
WIDE_5X5 = 'mb1ic2048ih7oc2048kh5ph2n"wide"'
#: A layer whose FFT needs more than 1 MiB and whose direct kernel a few KiB.
SMALL = 'mb1ic32ih56oc32kh3ph1n"small"'


def _needed(reason: str) -> int:
    """The bytes a ``workspace: needs N bytes ...`` refusal names."""
    assert reason.startswith(WORKSPACE_REFUSAL), reason
    return int(reason[len(WORKSPACE_REFUSAL):].split()[0])


@pytest.mark.parametrize("batch", [2, 32])
def test_fft_vgg16_conv1_2_bwd_d_plans_under_the_cap(batch):
    """The stored spectra alone are 795 MiB: the plan keeps none (tap-factored) and fits."""
    p = ConvProblem.parse(VGG_CONV1_2).with_(mb=batch, dir="bwd_d")
    kernel = FftKernel()
    plan = kernel.plan(p)
    stored = fft_algorithm.filter_bytes(p, plan.lh, plan.lw, p.itemsize)
    assert stored > 790 * MIB > kernel.workspace_cap
    assert kernel.supports(p) is None
    assert plan.factored and 1 <= plan.batch <= batch
    assert kernel.workspace_bytes(p) <= kernel.workspace_cap == WORKSPACE_CAP_BYTES


def test_fft_under_a_smaller_cap_refuses_with_the_bytes_it_would_need():
    p = ConvProblem.parse(VGG_CONV1_2).with_(dir="bwd_d")
    small = FftKernel(workspace_cap=20 * MIB)
    needed = _needed(small.supports(p))
    assert needed == small.workspace_bytes(p) > 20 * MIB
    with pytest.raises(UnsupportedProblem, match="^workspace: needs .* over the cap of "
                                                 "20971520 bytes"):
        small.prepare(p, None, None, None)
    assert FftKernel(workspace_cap=needed).supports(p) is None


def test_fft_forward_whose_smallest_tile_is_over_the_cap_refuses_with_its_bytes():
    """plan_fft used to take the smallest plan anyway; its bytes are now the refusal's."""
    p = ConvProblem.parse(WIDE_5X5)
    kernel = FftKernel()
    smallest = fft_algorithm.plan_fft(p, 1)
    assert (smallest.lh, smallest.lw) == (5, 5)
    assert fft_algorithm.filter_bytes(p, 5, 5, p.itemsize) > kernel.workspace_cap
    reason = kernel.supports(p)
    assert _needed(reason) == kernel.workspace_bytes(p) > kernel.workspace_cap
    assert "raise it with workspace_cap=, CONVBENCH_WORKSPACE_CAP or --workspace-cap" in reason
    assert refusal(kernel, p) == reason  # what the harness records
    raised = FftKernel(workspace_cap=_needed(reason))
    assert raised.supports(p) is None and raised.plan(p) == smallest


@pytest.mark.parametrize("suite", ["lenet5", "alexnet", "resnet50", "vgg16"])
def test_fft_forward_plans_that_fit_are_unchanged(suite):
    """The accuracy baselines' FFT rounding: the lengths and tiles of plan_fft under the cap."""
    kernel = FftKernel()
    for batch in (1, 2):
        for layer in load_suite(suite, batch=batch):
            p = layer.problem
            want, got = fft_algorithm.plan_fft(p, WORKSPACE_CAP_BYTES), kernel.plan(p)
            assert got == want, p


@pytest.mark.parametrize("desc", ["mb2ic6ih17oc8kh3ph1", "g2mb2ic6ih17oc8kh5ph2dh1",
                                  "g4mb1ic8ih9oc12kh3sh2ph1", "mb1ic5ih11oc7kh2kw3"])
def test_filter_spectra_in_blocks_of_filters_are_the_same_bits(desc):
    p = ConvProblem.parse(desc)
    w = np.random.default_rng(0).standard_normal(p.weight_shape).astype(np.float32)
    plan = fft_algorithm.plan_fft(p, 2**28)
    for dtype in (np.float32, np.float64):
        whole = fft_algorithm.filter_spectra(w, p, plan, dtype, shift=(p.ph, p.pw), scale=0.3)
        adjoint = fft_algorithm.adjoint_filter_spectra(w, p, plan, dtype, scale=0.3)
        for block in (1, 3, 5):
            assert np.array_equal(whole, fft_algorithm.filter_spectra(
                w, p, plan, dtype, shift=(p.ph, p.pw), scale=0.3, block=block))
            assert np.array_equal(adjoint, fft_algorithm.adjoint_filter_spectra(
                w, p, plan, dtype, scale=0.3, block=block))


def test_the_refusal_phrase_and_byte_counts():
    text = workspace_refusal(833617920, 268435456)
    assert text == ("workspace: needs 833617920 bytes (795.0 MiB) of workspace, over the cap "
                    "of 268435456 bytes (256.0 MiB); raise it with workspace_cap=, "
                    "CONVBENCH_WORKSPACE_CAP or --workspace-cap")
    assert text.startswith(WORKSPACE_REFUSAL) and _needed(text) == 833617920
    assert [parse_bytes(t) for t in ("1024", "1KiB", "256 MiB", "1.5GiB", "2GB")] == \
        [1024, 1024, 256 * MIB, 3 * 2**29, 2 * 10**9]
    for bad in ("", "MiB", "-5", "0", "3 parsecs"):
        with pytest.raises(ValueError, match="byte count"):
            parse_bytes(bad)


def test_the_environment_sets_every_kernels_default_cap(monkeypatch):
    p = ConvProblem.parse(VGG_CONV1_2).with_(dir="bwd_d")
    fft = convbench.get_kernel("fft")
    assert fft.workspace_cap == WORKSPACE_CAP_BYTES and fft.supports(p) is None
    monkeypatch.setenv(WORKSPACE_CAP_ENV, "16MiB")
    for kernel in convbench.registry.kernels("cpu"):
        if hasattr(kernel, "tiling_cap"):
            assert kernel.workspace_cap == 16 * MIB, kernel.name
    assert fft.supports(p).startswith(WORKSPACE_REFUSAL)
    assert FftKernel(workspace_cap=WORKSPACE_CAP_BYTES).supports(p) is None  # its own wins


def test_the_command_line_cap_reaches_the_records(tmp_path, monkeypatch):
    monkeypatch.setenv(WORKSPACE_CAP_ENV, "")  # restored after the test; main sets it
    out = tmp_path / "capped.jsonl"
    assert cli_main(["run", SMALL, "--direction", "bwd_d", "--algo", "fft,direct",
                     "--mode", "accuracy", "--workspace-cap", "1MiB",
                     "--out", str(out), "--no-isolate", "--no-progress"]) == 0
    assert os.environ[WORKSPACE_CAP_ENV] == str(MIB)
    by_kernel = {r["kernel"]: r for r in load_run(out).records}
    assert by_kernel["fft"]["status"] == "skipped"
    assert by_kernel["fft"]["reason"].startswith("workspace: needs ")
    assert "over the cap of 1048576 bytes" in by_kernel["fft"]["reason"]
    assert by_kernel["direct"]["status"] == "ok"  # a few KiB of accumulators


def test_a_bad_command_line_cap_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as done:
        cli_main(["run", VGG_CONV1_2, "--workspace-cap", "lots"])
    assert done.value.code == 2 and "byte count" in capsys.readouterr().err


# ------------------------------------------------------------------ measured
MEASURE = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, "benchmarks")
    from convbench.measure.memory import RAW_HEAP, measure_prepared_call, warm_libraries
    RAW_HEAP.install()
    import workspace_peak
    warm_libraries(workspace_peak.on_team_threads)
    workspace_peak.quick_choices()
    from convbench import ConvProblem, get_kernel
    from convbench.kernels.cpu.base import forget_choices
    out = []
    for name, text in json.loads(sys.argv[1]):
        kernel, p = get_kernel(name), ConvProblem.parse(text)
        if kernel.supports(p) is not None:
            continue
        got = measure_prepared_call(kernel, p, forget=forget_choices)
        out.append({"kernel": name, "problem": text, "workspace": kernel.workspace_bytes(p),
                    "cap": kernel.workspace_cap, **got})
    print(json.dumps(out))
''')
#: A 3x3 layer (every kernel, the Winograd channels-last path) and a 5x5 one (FFT's stored
#: backward spectra, im2col's larger lowering), each direction.
MEASURED = ["mb2ic32ih40oc32kh3ph1", "mb2ic8ih30oc16kh5ph2"]
#: Numba's heap as counted also holds a few CPython objects and NRT's headers.
NRT_SLACK = 64 * 1024
#: The resident set also moves with the pages of thread stacks and Python's own heap.
RSS_SLACK = 512 * 1024


def _measure(pairs: list[tuple[str, str]]) -> list[dict]:
    env = {**os.environ, **CHILD_ENVIRONMENT, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(pairs)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_workspace_bytes_cover_what_each_kernel_allocates():
    """NRT's peak (and the resident set's) from prepare through one call, in a fresh process."""
    # oneDNN's memory is torch's: out of the measurement's scope (workspace_peak.OUT_OF_SCOPE).
    names = [k.name for k in convbench.registry.kernels("cpu") if not k.name.startswith("onednn")]
    pairs = [(name, str(ConvProblem.parse(text).with_(dir=d, bias=d == "bwd_wb")))
             for text in MEASURED for d in ("fwd", "bwd_d", "bwd_wb") for name in names]
    got = _measure(pairs)
    assert {r["kernel"] for r in got} == set(names)
    for r in got:
        where = f"{r['kernel']} {r['problem']}"
        assert r["nrt_peak_bytes"] <= r["workspace"] + NRT_SLACK, where
        assert r["rss_growth_bytes"] <= r["workspace"] + RSS_SLACK, where
        assert max(r["nrt_peak_bytes"], r["rss_growth_bytes"]) <= r["cap"], where
    # the accumulators of Numba's threads are Numba's heap, and counted
    direct = [r for r in got if r["kernel"] == "direct" and "--dir" not in r["problem"]]
    assert all(r["nrt_peak_bytes"] > 0 for r in direct)


@pytest.mark.slow
def test_the_benchmark_measures_tiny_layers_within_the_cap(tmp_path):
    suite = tmp_path / "tiny.txt"
    suite.write_text('mb2ic3ih12oc4kh3ph1n"a"\nmb1ic4ih9oc6kh5n"b"\n')
    out = tmp_path / "peak"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "benchmarks/workspace_peak.py", "--suite", str(suite),
                           "--algo", "fft,winograd", "--direction", "fwd,bwd_w", "--out",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["provenance"]["noise"]["verdict"] == "not measured"
    measured = [r for r in data["records"] if r["status"] == "measured"]
    assert len(measured) == 6  # fft: 2 layers x 2 directions; winograd: the 3x3 layer
    assert {r["status"] for r in data["records"]} == {"measured", "not applicable"}
    for r in measured:
        assert max(r["nrt_peak_bytes"], r["rss_growth_bytes"]) <= r["cap"] == WORKSPACE_CAP_BYTES
    assert not data["summary"]["over_cap"] and data["summary"]["largest"]
    text = out.with_suffix(".md").read_text()
    assert text.count("<!-- provenance") == 1 and "| fft | bwd_w |" in text
