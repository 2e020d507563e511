"""benchmarks/vs_onednn.py: what it reports, and that a run keeps what it measured."""

import json

import pytest
from benchmark_scripts import loaded_script

from convbench.problem import ConvProblem
from convbench.registry import get_kernel


@pytest.fixture(scope="module")
def vs_onednn():
    with loaded_script("vs_onednn") as module:
        yield module


def _layer(vs_onednn, name, descriptor, medians_ms, ratios):
    return vs_onednn.LayerComparison("resnet50", name, descriptor, ratios=ratios,
                                 medians_ms=medians_ms)


def test_three_times_textbook_counts_layers_and_names_those_beyond_the_roof(vs_onednn):
    # 1x1 layer: 2*64*64*56*56 = 25.7 MFLOP; numpy_im2col in 0.5 ms is 51 GFLOP/s,
    # and 3x that (154) is above a 100 GFLOP/s roof. The 3x3 layer's textbook time
    # (10 ms, 23 GFLOP/s) leaves 3x (69) below it.
    one = _layer(vs_onednn, "one", 'mb1ic64ih56oc64kh1n"one"', {"numpy_im2col": 0.5},
                 {"direct": {"onednn": 0.5, "numpy_im2col": 1.5}})
    three = _layer(vs_onednn, "three", 'mb1ic64ih56oc64kh3ph1n"three"',
                   {"numpy_im2col": 10.0},
                   {"direct": {"onednn": 0.7, "numpy_im2col": 3.5}})
    lines = vs_onednn.three_times_textbook([one, three], ["direct"], roof_gflops=100.0)
    assert "direct 1.50 (1/2)" in lines[0] and lines[0].endswith("**no** |")
    assert "On 1 of 2 layers" in lines[1] and "one mb1" in lines[1]
    assert "three mb1" not in lines[1]


def test_target_met_only_when_every_kernel_is_three_times_faster(vs_onednn):
    fast = _layer(vs_onednn, "one", 'mb1ic64ih56oc64kh1n"one"', {"numpy_im2col": 5.0},
                  {"direct": {"onednn": 0.5, "numpy_im2col": 3.2}})
    lines = vs_onednn.three_times_textbook([fast], ["direct", "fft"], roof_gflops=None)
    assert lines == ["| every kernel >= 3x numpy_im2col: worst layer (layers >= 3x) | | "
                     "direct 3.20 (1/1) | yes |"]


needs_torch = pytest.mark.skipif(
    get_kernel("onednn").supports(ConvProblem.parse("ic1ih3oc1kh1")) is not None,
    reason="torch (oneDNN) is not installed: pip install 'convbench[compare]'")


@needs_torch
def test_a_raising_kernel_is_left_out_and_named(vs_onednn, faulty_env):
    p = ConvProblem.parse('mb1ic8ih12oc16kh3ph1n"small"')
    r = vs_onednn.measure_layer("resnet50", p, ["test_raising", "im2col"], pairs=5,
                                sample_time=0.001, cooldown=0.0)
    assert "planted failure" in r.errors["test_raising"]
    assert "test_raising" not in r.ratios and r.ratios["im2col"]["onednn_best"] > 0
    text = vs_onednn.report([r], ["test_raising", "im2col"], pairs=5, threads=1)
    assert "Left out after an error: small mb1 test_raising: RuntimeError" in text


@needs_torch
def test_a_kernel_that_caches_its_weight_transform_is_also_timed_without_the_cache(vs_onednn):
    # 512 x 512 filters on a 2x2 image: U = G g G^T costs far more than the one tile.
    p = ConvProblem.parse('mb1ic512ih2oc512kh3ph1n"small3x3"')
    r = vs_onednn.measure_layer("vgg16", p, ["direct", "winograd"], pairs=5,
                                sample_time=0.001, cooldown=0.0)
    assert set(r.ratios) == {"direct", "winograd", "winograd+prepare"}
    # prepare (U = G g G^T, buffers) in every call can only add time.
    assert r.medians_ms["winograd+prepare"] > r.medians_ms["winograd"]
    text = vs_onednn.report([r], ["direct", "winograd"], pairs=5, threads=1)
    assert "| onednn_best ms | configuration | onednn_best / onednn_cl | direct x onednn_best " \
        "| winograd x onednn_best | winograd+prepare x onednn_best | direct x numpy_im2col | " \
        "winograd x numpy_im2col |" in text
    row = next(line for line in text.splitlines() if line.startswith("| winograd+prepare:"))
    assert row.startswith("| winograd+prepare: filter transform in every call") and \
        f"| 1 | {r.ratios['winograd+prepare']['onednn_best']:.2f} [" in row and \
        row.endswith("| (reference) |")
    lo, hi = r.intervals["winograd+prepare"]["onednn_best"]
    assert lo <= r.ratios["winograd+prepare"]["onednn_best"] <= hi


def test_ctrl_c_keeps_the_layers_measured(vs_onednn, monkeypatch, tmp_path):
    done = []

    def measure(suite, p, names, pairs, sample_time, cooldown, peers, workers, per_call):
        if done:
            raise KeyboardInterrupt
        done.append(p.name)
        return vs_onednn.LayerComparison(
            suite, p.name, str(p), ratios={"im2col": {"onednn_best": 1.0, "numpy_im2col": 2.0}},
            medians_ms={"im2col": 1.0, "onednn_best": 1.0, "numpy_im2col": 2.0})

    monkeypatch.setattr(vs_onednn, "measure_layer", measure)
    monkeypatch.setattr(vs_onednn, "gemm_gflops", lambda repeats: {"numpy_matmul": 100.0})
    monkeypatch.setattr(vs_onednn.sys, "argv", [
        "vs_onednn.py", "--quick", "--algo", "im2col", "--threads", "1", "--processes", "1",
        "--pairs", "5",
        "--out", str(tmp_path / "run")])
    if get_kernel("onednn").supports(ConvProblem.parse("ic1ih3oc1kh1")) is not None:
        pytest.skip("torch (oneDNN) is not installed: the script stops before measuring")
    assert vs_onednn.main() == 130
    saved = json.loads((tmp_path / "run.json").read_text())
    assert [layer["name"] for layer in saved["layers"]] == done
    assert saved["gemm_roof_gflops"] == 100.0
    assert f"| resnet50 | {done[0]} |" in (tmp_path / "run.md").read_text()


@pytest.mark.parametrize("paused, warm_calls", [(0.02, 5), (0.0, 0)])
def test_each_sample_after_a_pause_follows_warm_s_of_untimed_calls(monkeypatch, paused,
                                                                    warm_calls):
    """Where the cool-down paused, a sample waits for WARM_S seconds of warm calls (the idle
    cores coming back); where it did not, one untimed call, as before."""
    import time

    from convbench.measure import peers
    from convbench.measure.clocks import make_clock

    assert peers.WARM_S == 0.05
    clock = {"now": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(peers, "cool_down", lambda limit: paused)
    calls = {"n": 0}

    def call():  # 12 ms
        calls["n"] += 1
        clock["now"] += 0.012

    samples = peers.time_interleaved({"k": call}, passes=2, sample_time=0.0, cooldown=0.15,
                                     clock=make_clock("host"))
    assert samples["k"] == pytest.approx([0.012, 0.012])
    # the calibration (a first call and a timed one), then per pass the warm calls,
    # bench's own first call and the sample
    assert calls["n"] == 2 + 2 * (warm_calls + 1 + 1)
