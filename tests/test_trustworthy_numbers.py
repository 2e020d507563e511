"""The peer at its best, intervals that say what they mean, no winner's curse, "met" by the
interval: each on recorded samples or tiny layers."""

import dataclasses
import math
import random
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

from convbench.measure.peer_workers import merge
from convbench.measure.peers import (
    LayerComparison,
    compute_ratios,
    crossfit_samples,
    geomean_interval,
    geomean_over_passes,
    median_rank_confidence,
    ratio_interval,
    whole_network_ratio,
)
from convbench.measure.stats import (
    RoundVariancePool,
    crossfit_fastest,
    prediction_interval,
    summarize,
)
from convbench.problem import ConvProblem
from convbench.registry import get_kernel, speedup_peer

needs_torch = pytest.mark.skipif(
    get_kernel("onednn").supports(ConvProblem.parse("ic1ih3oc1kh1")) is not None,
    reason="torch (oneDNN) is not installed: pip install 'convbench[compare]'")


# ----------------------------------------------------------------- oneDNN's peers
@needs_torch
@pytest.mark.parametrize("direction", ["fwd", "bwd_d", "bwd_w", "bwd_wb"])
@pytest.mark.parametrize("text", ["mb2ic8ih11oc16kh3ph1", "mb1ic8ih10iw9oc8kh3sh2ph1g2",
                                  "mb1ic4ih9oc8kh3ph1dh2oh7"])
def test_onednn_best_and_onednn_cl_compute_what_the_plain_call_computes(direction, text):
    from convbench.kernels.baselines.onednn import NCHW_CONFIGURATIONS
    from convbench.measure.inputs import make_inputs

    p = dataclasses.replace(ConvProblem.parse(text), dir=direction, bias=direction == "bwd_wb")
    x, w, b = make_inputs(p)
    expected = get_kernel("onednn").prepare(p, x, w, b)()
    for name in ("onednn_best", "onednn_cl"):
        call = get_kernel(name).prepare(p, x, w, b)
        got = call()
        pairs = zip(expected, got, strict=True) if isinstance(expected, tuple) else \
            [(expected, got)]
        for e, g in pairs:
            e, g = np.asarray(e), np.asarray(g)
            assert g.shape == e.shape
            # Another layout or blocking sums in another order: float32 rounding apart.
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * float(np.abs(e).max()))
        details = call.details
        if name == "onednn_best":
            assert details["configuration"] in NCHW_CONFIGURATIONS
            assert details["layout"] == "NCHW"
        else:
            assert details["layout"] == "NHWC"


@needs_torch
def test_onednn_cl_returns_channels_last_and_onednn_best_returns_nchw():
    import torch

    from convbench.measure.inputs import make_inputs

    p = ConvProblem.parse("mb1ic16ih12oc16kh3ph1")
    x, w, b = make_inputs(p)
    y_cl = get_kernel("onednn_cl").prepare(p, x, w, b)()
    y_best = get_kernel("onednn_best").prepare(p, x, w, b)()
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    assert y_best.is_contiguous()


@needs_torch
def test_every_nchw_configuration_is_timed_and_the_fastest_kept():
    from convbench.kernels.baselines.onednn import nchw_configurations
    from convbench.measure.inputs import make_inputs

    p = ConvProblem.parse("mb1ic8ih10oc8kh3ph1")
    x, w, b = make_inputs(p)
    assert set(nchw_configurations(p, x, w, b)) == {"plain", "prepacked", "cl_inside"}
    # float64 has no oneDNN tensors: no prepacked configuration.
    p64 = dataclasses.replace(p, dtype="float64")
    x, w, b = make_inputs(p64)
    assert set(nchw_configurations(p64, x, w, b)) == {"plain", "cl_inside"}


def test_the_cpu_peer_is_onednn_best_and_older_runs_keep_theirs():
    assert speedup_peer("cpu") == "onednn_best"
    assert speedup_peer("cpu", ["im2col", "onednn"]) == "onednn"
    assert speedup_peer("cpu", ["im2col", "onednn", "onednn_best"]) == "onednn_best"
    assert speedup_peer("gpu", ["cudnn"]) == "cudnn"


# ---------------------------------------------------------------------- intervals
def test_five_passes_of_one_process_are_labelled_as_their_confidence():
    assert median_rank_confidence(5, 0, 4) == pytest.approx(0.9375)
    iv = ratio_interval([1.0, 1.1, 0.9, 1.05, 0.95], [0] * 5)
    assert (iv.lo, iv.hi) == (0.9, 1.1) and iv.confidence == pytest.approx(0.9375)
    assert "93.8%" in iv.label and "[min, max]" in iv.label


def test_a_slow_process_widens_the_interval_beyond_what_its_passes_say():
    # Passes agree within a process; the processes disagree by 20%.
    per_pass = [1.0, 1.0, 1.0, 1.2, 1.2, 1.2, 1.1, 1.1, 1.1]
    processes = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    between = ratio_interval(per_pass, processes)
    alone = ratio_interval(per_pass, [0] * 9)
    assert between.level == "processes" and between.hi / between.lo > alone.hi / alone.lo
    assert between.lo < 1.0 and between.hi > 1.2  # t(2) = 4.3 over three processes
    assert "3 processes" in between.label


def test_geomean_interval_takes_the_between_process_level_too():
    values, intervals = [1.1, 1.2], [(1.09, 1.11), (1.19, 1.21)]
    narrow = geomean_interval(values, intervals)
    wide = geomean_interval(values, intervals, process_values=[1.0, 1.3, 1.15])
    assert wide[2] / wide[1] > narrow[2] / narrow[1]
    assert wide[1] < 1.0 < 1.3 < wide[2]


def test_prediction_interval_is_wider_than_the_interval_of_the_median():
    s = summarize([[1.00, 1.01, 0.99], [1.10, 1.11, 1.09], [1.05, 1.04, 1.06]])
    pred = prediction_interval(s)
    assert pred.pi95_s[0] < s.ci95_s[0] and pred.pi95_s[1] > s.ci95_s[1]
    assert pred.df == 2 and "3 rounds" in pred.basis


def test_a_record_whose_rounds_agree_by_chance_borrows_its_kernels_spread():
    lucky = summarize([[1.0], [1.0001], [0.9999]])
    pool = RoundVariancePool()
    for shift in (1.0, 1.2, 0.9, 1.1):
        pool.add("im2col fwd", summarize([[1.0], [shift], [1.05]]))
    alone = prediction_interval(lucky)
    shrunk = prediction_interval(lucky, pool.get("im2col fwd"))
    assert shrunk.pi95_s[1] / shrunk.pi95_s[0] > 5 * (alone.pi95_s[1] / alone.pi95_s[0] - 1) + 1
    assert shrunk.df == 2 + 4 and "shrunk towards 8 df" in shrunk.basis
    one_round = prediction_interval(summarize([[1.0, 1.01, 0.99]]), pool.get("im2col fwd"))
    assert one_round.df == 8 and "one round" in one_round.basis


def test_every_timed_record_of_a_sweep_gets_a_prediction_interval():
    from convbench.measure.runner import SweepSettings, plan_tasks, run_sweep
    from convbench.problem.suites import parse_suite

    (layer,) = parse_suite('mb1ic4ih8oc4kh3ph1n"tiny"')
    settings = SweepSettings(mode="perf", rounds=2, isolate=False, min_reps=3, min_time=0.0,
                             cooldown=0.0, warm_time=0.0)
    outcome = run_sweep(plan_tasks([("t", layer)], ["numpy_im2col"], settings), settings, None)
    (rec,) = outcome.records
    lo, hi = rec["time"]["pi95_s"]
    assert lo < rec["time"]["median_s"] < hi
    assert rec["time"]["pi_df"] >= 1 and rec["time"]["pi_basis"]


# ----------------------------------------------------------------- winner's curse
def _equal_kernels(rng: random.Random, kernels: list[str], passes: int, processes: int,
                   name: str) -> LayerComparison:
    """A layer on which every kernel and the peer take 1 ms, measured with noise: 10% per
    sample and 10% per process, all independent."""
    r = LayerComparison("net", name, f'mb1ic8ih8oc8kh3n"{name}"')
    shift = {(k, p): rng.lognormvariate(0, 0.1) for k in [*kernels, "peer"]
             for p in range(processes)}
    for k in [*kernels, "peer"]:
        r.samples_ms[k] = [shift[k, p] * rng.lognormvariate(0, 0.1)
                           for p in range(processes) for _ in range(passes)]
        r.medians_ms[k] = statistics.median(r.samples_ms[k])
    r.process_of_pass = [p for p in range(processes) for _ in range(passes)]
    compute_ratios(r, ("peer",))
    return r


def test_best_of_several_equal_kernels_is_not_faster_than_the_peer():
    rng = random.Random(20261207)
    kernels = ["a", "b", "c", "d", "e"]
    crossfit, naive, covered = [], [], []
    for _ in range(100):
        layers = [_equal_kernels(rng, kernels, 3, 3, f"l{i}") for i in range(8)]
        ratio, lo, hi, _, _ = whole_network_ratio(layers, kernels, "peer")
        crossfit.append(ratio)
        covered.append(lo <= 1.0 <= hi)
        # The naive pick: the fastest median on the same samples it reports.
        peer = sum(statistics.median(r.samples_ms["peer"]) for r in layers)
        best = sum(min(r.medians_ms[k] for k in kernels) for r in layers)
        naive.append(peer / best)
    # Picking on the reported samples claims a speed-up that is not there; cross-fitting
    # does not.
    assert statistics.median(naive) > 1.08
    assert abs(statistics.median(crossfit) - 1.0) < 0.03
    # A 95% interval: about 95 of 100 such runs contain 1 (seed 20261207).
    assert sum(covered) >= 90, f"{sum(covered)} of 100 intervals contain 1"


def test_the_fastest_tile_is_cross_fitted_too():
    rng = random.Random(7)
    layers = [_equal_kernels(rng, ["w2", "w4", "w6"], 3, 3, f"l{i}") for i in range(6)]
    g = geomean_over_passes(layers, ["w2", "w4", "w6"], "peer")
    assert g.lo <= 1.0 <= g.hi


def test_crossfit_never_reports_a_pass_with_the_kernel_it_chose_on():
    r = LayerComparison("net", "l", "mb1ic8ih8oc8kh3")
    # a is faster in process 0 only, b in processes 1 and 2.
    r.samples_ms = {"a": [1.0, 1.0, 3.0, 3.0, 3.0, 3.0], "b": [2.1] * 6}
    r.process_of_pass = [0, 0, 1, 1, 2, 2]
    samples, choices = crossfit_samples(r, ["a", "b"])
    # Process 0's passes take the kernel fastest on processes 1 and 2 (b); processes 1
    # and 2 take a, chosen on process 0's lucky passes, and report their own 3.0.
    assert choices == ["b", "b", "a", "a", "a", "a"]
    assert samples == [2.1, 2.1, 3.0, 3.0, 3.0, 3.0]


def test_a_sweeps_best_of_is_cross_fitted_by_round():
    # Round r reports the kernel fastest on the other rounds.
    fitted, choices = crossfit_fastest({"a": [[1.0], [3.0], [3.0]], "b": [[2.1], [2.1], [2.1]]})
    assert choices == ["b", "a", "a"] and fitted == [[2.1], [3.0], [3.0]]
    one_round, picks = crossfit_fastest({"a": [[1.0, 3.0, 1.0, 3.0]], "b": [[2.0] * 4]})
    # Even samples report the kernel chosen on the odd ones (b), odd the one chosen on the
    # even ones (a).
    assert picks == ["b/a"] and one_round == [[2.0, 2.0, 3.0, 3.0]]


# --------------------------------------------------------------------------- met
def _vs_onednn():
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "vs_onednn.py"
    spec = importlib.util.spec_from_file_location("vs_onednn_met", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["vs_onednn_met"] = module
    spec.loader.exec_module(module)
    return module


def test_a_target_is_met_only_when_its_interval_clears_it():
    vs = _vs_onednn()
    assert vs.met_text((1.10, 1.02, 1.20), 1.0) == "yes"
    shown = vs.met_text((1.10, 0.95, 1.25), 1.0)
    assert shown.startswith("not shown (point 1.10") and "0.95" in shown
    assert vs.met_text((0.90, 0.85, 1.05), 1.0) == "**no**"


def test_the_report_says_not_shown_where_only_the_point_passes():
    vs = _vs_onednn()
    p = ConvProblem.parse('mb1ic64ih56oc64kh3ph1n"res2_branch2b"')
    r = LayerComparison("resnet50", p.name, str(p))
    # winograd's median is 0.95x oneDNN's median time, so 1/0.95 = 1.05x; its passes
    # straddle 0.9.
    r.samples_ms = {"winograd": [0.95, 1.20, 0.80, 1.00, 0.90], "onednn_best": [1.0] * 5}
    r.medians_ms = {k: statistics.median(v) for k, v in r.samples_ms.items()}
    compute_ratios(r, ("onednn_best",))
    text = vs.report([r], ["winograd"], pairs=5, threads=2)
    row = next(line for line in text.splitlines() if line.startswith("| winograd >= 0.9x"))
    assert "| not shown (point 1.05" in row


# ------------------------------------------------------------- worker processes
def test_merged_processes_tag_their_passes_and_drop_a_kernel_one_process_lost():
    def part(seed):
        rng = random.Random(seed)
        r = LayerComparison("s", "l", "mb1ic8ih8oc8kh3")
        r.samples_ms = {"k": [rng.uniform(1, 2) for _ in range(3)], "peer": [1.5] * 3}
        if seed != 2:
            r.samples_ms["flaky"] = [1.0] * 3
        r.chosen = {"peer": {"configuration": f"c{seed}"}}
        return r

    merged = merge([part(1), part(2), part(3)], ("peer",))
    assert merged.process_of_pass == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert "flaky" not in merged.samples_ms and len(merged.samples_ms["k"]) == 9
    assert [c["peer"]["configuration"] for c in merged.chosen_by_process] == ["c1", "c2", "c3"]
    assert merged.interval_level["k"]["peer"].endswith("3 processes")
    assert math.isfinite(merged.ratios["k"]["peer"])
