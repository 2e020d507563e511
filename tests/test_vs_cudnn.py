"""benchmarks/vs_cudnn.py: its report, its targets, and that a run keeps what it measured."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from convbench.problem import ConvProblem

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "vs_cudnn.py"


@pytest.fixture(scope="module")
def vs_cudnn():
    spec = importlib.util.spec_from_file_location("vs_cudnn", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["vs_cudnn"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["vs_cudnn"]


def measured(vs, suite, desc, math, times_ms, repeat=1, rel_l2=None, errors=None):
    """A Measured layer whose ratios follow from ``times_ms`` as compare_layer's would."""
    p = vs.with_math(ConvProblem.parse(desc), math, ConvProblem.parse(desc).mb)
    ratios = {k: {peer: times_ms[peer] / t for peer in vs.PEERS if peer in times_ms}
              for k, t in times_ms.items() if k not in vs.PEERS}
    comparison = vs.LayerComparison(suite, p.name, str(p), ratios=ratios, medians_ms=times_ms,
                                    errors=errors or {}, rel_l2=rel_l2 or {})
    return vs.Measured(suite, math, p.mb, repeat, comparison)


PEERS_MS = {"cudnn": 1.1, "cudnn_best": 1.0, "torch_cudnn": 1.2}
R3 = 'mb32ic128ih28oc128kh3ph1n"res3_branch2b"'
R1 = 'mb32ic64ih56oc256kh1n"res2_branch2c"'


def test_whole_network_counts_repeats_and_takes_the_best_kernel_per_layer(vs_cudnn):
    a = measured(vs_cudnn, "resnet50", R3, "fp32",
                 {"winograd": 0.5, "im2col": 2.0, **PEERS_MS}, repeat=4)
    b = measured(vs_cudnn, "resnet50", R1, "fp32", {"winograd": 9.0, "im2col": 0.8, **PEERS_MS},
                 repeat=3)
    b.comparison.medians_ms.pop("winograd")  # winograd does not run 1x1 layers
    net = vs_cudnn.network_times([a, b], "resnet50", "fp32", 32, ["im2col", "winograd"])
    assert net["best"] == pytest.approx(0.5 * 4 + 0.8 * 3)
    assert net["cudnn_best"] == pytest.approx(1.0 * 7)
    assert net["im2col"] == pytest.approx(2.0 * 4 + 0.8 * 3)
    assert "winograd" not in net  # not a whole-network time when a layer is missing
    rows = vs_cudnn.target_rows([a, b], ["im2col", "winograd"])
    whole = next(r for r in rows if r.startswith("| fp32 mb32: best-of-convbench"))
    assert whole == "| fp32 mb32: best-of-convbench whole ResNet-50 >= 1.0x cudnn_best | 2 " \
        f"| {7 / 4.4:.2f} | yes |"


def test_winograd_target_is_every_layer_not_the_mean(vs_cudnn):
    fast = measured(vs_cudnn, "resnet50", R3, "fp32", {"winograd": 0.5, **PEERS_MS})
    slow = measured(vs_cudnn, "vgg16", 'mb32ic256ih56oc256kh3ph1n"conv3_2"', "fp32",
                    {"winograd": 0.9, **PEERS_MS})
    small = measured(vs_cudnn, "vgg16", 'mb32ic3ih224oc64kh3ph1n"conv1_1"', "fp32",
                     {"winograd": 5.0, **PEERS_MS})  # C = 3: not a target layer
    rows = vs_cudnn.target_rows([fast, slow, small], ["winograd"])
    row = next(r for r in rows if "winograd >= 1.3x" in r)
    assert row.endswith(f"| 2 | {1 / 0.9:.2f} | **no** |")


def test_fp16_error_target_and_failed_cudnn_layers_are_reported(vs_cudnn):
    ok = measured(vs_cudnn, "resnet50", R3.replace("mb32", "mb1"), "fp16",
                  {"im2col": 0.1, **PEERS_MS}, rel_l2={"im2col": 4e-4, "cudnn": 3e-4})
    bad = measured(vs_cudnn, "resnet50", R1.replace("mb32", "mb1"), "fp16",
                   {"im2col": 0.1, "cudnn_best": 1.0}, rel_l2={"im2col": 3e-3},
                   errors={"cudnn": "RuntimeError: cudnnFinalize Fail"})
    rows = vs_cudnn.target_rows([ok, bad], ["im2col"])
    assert next(r for r in rows if "fp16: rel_l2" in r).endswith("| 2 | 3.00e-03 | **no** |")
    assert rows[-1] == "| every layer ok for cudnn and cudnn_best | 2 | 1 failed | **no** |"
    text = vs_cudnn.report([ok, bad], ["im2col"], pairs=5)
    assert "Left out after an error: res2_branch2c mb1 fp16 cudnn: RuntimeError" in text
    assert "| im2col | 3.00e-03 |" in text  # worst layer per kernel and mode


def test_tf32_errors_sit_next_to_strict_fp32(vs_cudnn):
    layers = [measured(vs_cudnn, "resnet50", R3.replace("mb32", "mb1"), math,
                       {"fft": 0.2, **PEERS_MS}, rel_l2={"fft": err})
              for math, err in (("fp32", 2e-7), ("tf32", 4e-4))]
    table = vs_cudnn.accuracy_table(layers, ["fft"])
    assert table[0] == "| kernel | fp32 rel_l2 (worst layer) | tf32 rel_l2 (worst layer) |"
    assert table[2] == "| fft | 2.00e-07 | 4.00e-04 |"


def test_plan_puts_batch_32_fp32_first_and_quick_is_small(vs_cudnn):
    full = vs_cudnn.plan_layers(False, [32, 1], ["fp32", "fp16", "tf32"])
    assert [(p.mb, p.math) for _, _, p in full[:3]] == [(32, "fp32")] * 3
    assert len(full) == 2 * 3 * (20 + 9)  # unique layers; repeats count in the totals
    assert {p.math for _, _, p in full} == {"fp32", "fp16", "tf32"}
    assert all(p.dtype == "float16" for _, _, p in full if p.math == "fp16")
    quick = vs_cudnn.plan_layers(True, [32], ["fp32", "fp16"])
    assert len(quick) == 2 * 6


def test_ctrl_c_and_the_budget_keep_the_layers_measured(vs_cudnn, monkeypatch, tmp_path):
    import convbench.kernels.gpu.runtime as runtime

    done = []

    def fake_measure(suite, p, kernels, pairs, sample_time, reference):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(p.name)
        return vs_cudnn.LayerComparison(suite, p.name, str(p),
                                        ratios={"im2col": {"cudnn_best": 1.0}},
                                        medians_ms={"im2col": 1.0, **PEERS_MS})

    monkeypatch.setattr(vs_cudnn, "measure_layer", fake_measure)
    monkeypatch.setattr(runtime, "cupy_unavailable_reason", lambda: None)
    monkeypatch.setattr("convbench.store.environment.gpu_environment", lambda: {"name": "fake"})
    out = tmp_path / "run"
    args = ["--quick", "--algo", "im2col", "--batch", "32", "--out", str(out)]
    assert vs_cudnn.main(args) == 130
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [m["comparison"]["name"] for m in saved["layers"]] == done
    assert f"| resnet50 | {done[0]} |" in out.with_suffix(".md").read_text()
    done.clear()
    assert vs_cudnn.main([*args, "--budget", "0"]) == 0
    assert len(json.loads(out.with_suffix(".json").read_text())["layers"]) == 1


def test_without_a_gpu_the_script_says_so(vs_cudnn, capsys):
    from convbench.kernels.gpu.runtime import cupy_unavailable_reason

    if cupy_unavailable_reason() is None:
        pytest.skip("a GPU is present")
    assert vs_cudnn.main(["--quick"]) == 2
    assert "needs a GPU" in capsys.readouterr().err


def test_directions_plan_measure_and_report_apart(vs_cudnn):
    layers = vs_cudnn.plan_layers(True, [32], ["fp32"], ("fwd", "bwd_d", "bwd_wb"))
    dirs = [p.dir for _, _, p in layers]
    per = len(layers) // 3
    assert dirs == ["fwd"] * per + ["bwd_d"] * per + ["bwd_wb"] * per
    assert all(p.bias for _, _, p in layers if p.dir == "bwd_wb")
    fwd = measured(vs_cudnn, "resnet50", R3, "fp32", {"winograd": 0.5, **PEERS_MS})
    bwd = measured(vs_cudnn, "resnet50", R3, "fp32", {"winograd": 2.0, **PEERS_MS})
    bwd.dir = "bwd_d"
    assert vs_cudnn.network_times([fwd, bwd], "resnet50", "fp32", 32, ["winograd"])["best"] == 0.5
    assert vs_cudnn.network_times([fwd, bwd], "resnet50", "fp32", 32, ["winograd"],
                                  "bwd_d")["best"] == 2.0
    text = vs_cudnn.report([fwd, bwd], ["winograd"], 3)
    assert "### batch 32, fp32\n" in text and "### batch 32, fp32, bwd_d\n" in text
    assert "| fp32 mb32 bwd_d: best-of-convbench whole ResNet-50 / cudnn_best (no target: " \
        "reported) | 1 | 0.50 | — |" in text
    # the forward's targets take only forward layers
    assert "| fp32 mb32: best-of-convbench whole ResNet-50 >= 1.0x cudnn_best | 1 | 2.00 | yes |" \
        in text
