"""The choice within an error budget, on fake measurements: the budget is respected,
a budget no kernel meets is a clear error naming the closest kernel, baselines are
chosen only when allowed, and tuning turns a sweep's records into those choices.
"""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convbench.measure.runner import SweepOutcome, SweepSettings
from convbench.measure.stats import summarize
from convbench.plans import tuning
from convbench.plans.choice import (
    BudgetNotMet,
    Candidate,
    choose,
    pareto_front,
)
from convbench.problem import ConvProblem
from convbench.problem.suites import SuiteLayer


def cand(kernel, time_ms, rel_l2, kind="kernel", max_rel=None):
    return Candidate(kernel, kind, time_ms * 1e-3,
                     {"rel_l2": rel_l2, "max_rel": rel_l2 * 100 if max_rel is None else max_rel})


LAYER = [cand("direct", 4.0, 2e-7), cand("im2col", 2.0, 3e-7), cand("fft", 1.0, 4e-6),
         cand("winograd", 1.5, 9e-7), cand("onednn", 0.8, 2e-7, kind="baseline")]


def test_the_fastest_kernel_within_the_budget_wins_and_the_next_is_the_runner_up():
    c = choose(LAYER, budget=1e-6)
    assert (c.chosen.kernel, c.runner_up.kernel) == ("winograd", "im2col")
    c = choose(LAYER, budget=5e-7)
    assert (c.chosen.kernel, c.runner_up.kernel) == ("im2col", "direct")
    c = choose(LAYER, budget=1e-5)
    assert (c.chosen.kernel, c.runner_up.kernel) == ("fft", "winograd")
    c = choose(LAYER, budget=2.5e-7)
    assert (c.chosen.kernel, c.runner_up) == ("direct", None)
    assert len(c.candidates) == len(LAYER)


def test_a_baseline_is_timed_but_chosen_only_when_allowed():
    assert choose(LAYER, budget=1e-5).chosen.kernel == "fft"
    assert choose(LAYER, budget=1e-5, allow_vendor=True).chosen.kernel == "onednn"


def test_the_budget_is_on_the_metric_asked_for():
    layer = [cand("a", 1.0, 1e-7, max_rel=1e-3), cand("b", 2.0, 5e-7, max_rel=1e-5)]
    assert choose(layer, budget=1e-6, metric="rel_l2").chosen.kernel == "a"
    assert choose(layer, budget=1e-4, metric="max_rel").chosen.kernel == "b"


def test_a_budget_no_kernel_meets_names_the_closest_kernel_and_its_error():
    with pytest.raises(BudgetNotMet) as info:
        choose(LAYER, budget=1e-7, problem="mb1ic64ih56oc64kh3ph1")
    message = str(info.value)
    assert info.value.closest.kernel == "direct"
    assert message.startswith("no convbench kernel meets rel_l2 <= 1e-07 on mb1ic64ih56oc64kh3ph1")
    assert "the closest is direct with rel_l2 2e-07" in message
    assert "raise the budget to at least that" in message
    assert "--allow-vendor" not in message  # onednn does not meet it either


def test_the_error_points_to_a_baseline_that_would_meet_the_budget():
    layer = [cand("fft", 1.0, 4e-6), cand("onednn", 0.8, 2e-7, kind="baseline")]
    with pytest.raises(BudgetNotMet, match=r"closest is fft with rel_l2 4e-06.*"
                                           r"\(--allow-vendor\): onednn has rel_l2 2e-07"):
        choose(layer, budget=1e-6)


def test_a_missing_or_nan_error_never_meets_a_budget():
    layer = [cand("nan", 0.1, math.nan), Candidate("noerr", "kernel", 1e-4, {}),
             cand("ok", 5.0, 1e-8)]
    assert choose(layer, budget=1.0).chosen.kernel == "ok"
    with pytest.raises(BudgetNotMet, match="no convbench kernel was measured"):
        choose(layer[:2], budget=1.0)


@pytest.mark.parametrize("budget", [0, -1e-6, math.inf, math.nan, "1e-6", True])
def test_a_bad_budget_or_metric_is_rejected(budget):
    with pytest.raises(ValueError, match="budget must be a positive finite number"):
        choose(LAYER, budget=budget)
    with pytest.raises(ValueError, match="metric must be one of rel_l2, max_rel"):
        choose(LAYER, budget=1e-6, metric="max_abs")


candidates = st.lists(st.builds(
    cand, st.sampled_from(["direct", "im2col", "fft", "winograd", "onednn"]),
    st.floats(0.01, 100), st.one_of(st.floats(1e-9, 1e-3), st.just(math.nan)),
    st.sampled_from(["kernel", "baseline"])), min_size=1, max_size=8)


@given(candidates, st.floats(1e-9, 1e-3), st.booleans())
def test_no_choice_exceeds_its_budget_and_none_within_it_is_faster(layer, budget, vendor):
    eligible = [c for c in layer if vendor or c.kind == "kernel"]
    within = [c for c in eligible if c.error("rel_l2") <= budget]
    try:
        c = choose(layer, budget=budget, allow_vendor=vendor)
    except BudgetNotMet as exc:
        assert not within
        finite = [e.error("rel_l2") for e in eligible if not math.isnan(e.error("rel_l2"))]
        assert (exc.closest is None) == (not finite)
        if finite:
            assert exc.closest.error("rel_l2") == min(finite) > budget
        return
    assert c.chosen in eligible and c.chosen.error("rel_l2") <= budget
    assert c.chosen.time_s == min(e.time_s for e in within)
    if c.runner_up is not None:
        assert c.runner_up.error("rel_l2") <= budget and c.runner_up is not c.chosen
        assert c.runner_up.time_s == min(e.time_s for e in within if e is not c.chosen)
    else:
        assert len(within) == 1


def test_the_pareto_front_keeps_what_nothing_beats_on_both_time_and_error():
    front = pareto_front(LAYER, "rel_l2")
    assert [c.kernel for c in front] == ["onednn"]  # fastest and most accurate of all
    front = pareto_front(LAYER[:4], "rel_l2")
    assert [c.kernel for c in front] == ["fft", "winograd", "im2col", "direct"]
    front = pareto_front([*LAYER[:4], cand("slow_bad", 9.0, 1e-5)], "rel_l2")
    assert "slow_bad" not in [c.kernel for c in front]


# ------------------------------------------------------------------ tuning, faked sweep
LAYERS = [("test", SuiteLayer(ConvProblem.parse(d)))
          for d in ('mb1ic16ih14oc16kh3ph1n"a"', 'mb1ic16ih14oc32kh1n"b"')]
#: (layer, kernel) -> (seconds, rel_l2): what the fake sweep "measures".
FAKE = {("a", "direct"): (4e-3, 2e-7), ("a", "fft"): (1e-3, 5e-6),
        ("a", "winograd"): (2e-3, 8e-7), ("a", "onednn"): (5e-4, 2e-7),
        ("b", "direct"): (3e-3, 3e-6), ("b", "fft"): (2e-3, 6e-6),
        ("b", "winograd"): (None, None), ("b", "onednn"): (1e-3, 2e-7)}


def sweep_of(table):
    """A stand-in for run_sweep that "measures" what ``table`` says."""
    def sweep(tasks, settings, writer, done):
        return fake_records(table, tasks, writer)
    return sweep


def fake_records(table, tasks, writer):
    records = []
    for task in tasks:
        t, err = table[(task.layer.name, task.kernel)]
        rec = {"type": "result", "problem": task.layer.descriptor, "name": task.layer.name,
               "kernel": task.kernel, "backend": "cpu",
               "kind": "baseline" if task.kernel == "onednn" else "kernel"}
        if t is None:
            rec.update(status="skipped", reason="needs 3x3")
        else:
            rec.update(status="ok", time={"median_s": t},
                       error={"rel_l2": err, "max_rel": 10 * err})
        if writer is not None:
            writer.write(rec)
        records.append(rec)
    return SweepOutcome(records, False, 0, {"threads": 2})


fake_sweep = sweep_of(FAKE)


def test_tuning_chooses_within_the_budget_and_reports_the_layer_it_cannot_meet(tmp_path):
    outcome = tuning.tune(LAYERS, ["direct", "fft", "winograd", "onednn"],
                          SweepSettings(), budget=1e-6, sweep=fake_sweep)
    (a,) = outcome.chosen
    assert a.layer.name == "a" and a.choice.chosen.kernel == "winograd"
    assert a.choice.chosen.error("rel_l2") <= 1e-6
    (b,) = outcome.failed
    assert b.layer.name == "b"
    assert "the closest is direct with rel_l2 3e-06" in b.failure
    assert "onednn has rel_l2 2e-07" in b.failure
    path = tmp_path / "plans.json"
    assert tuning.save_plans(path, outcome, "cpu") == 1


def test_tuning_with_vendors_allowed_takes_the_vendor_where_it_is_fastest():
    outcome = tuning.tune(LAYERS, ["direct", "fft", "winograd", "onednn"],
                          SweepSettings(), budget=1e-6, allow_vendor=True, sweep=fake_sweep)
    assert [lp.choice.chosen.kernel for lp in outcome.plans] == ["onednn", "onednn"]
    assert [lp.choice.runner_up.kernel if lp.choice.runner_up else None
            for lp in outcome.plans] == ["winograd", None]


def test_tuning_refuses_a_sweep_without_errors():
    with pytest.raises(ValueError, match="mode must be 'both'"):
        tuning.tune(LAYERS, ["direct"], SweepSettings(mode="perf"), budget=1e-6,
                    sweep=fake_sweep)


# ------------------------------------------------------------------------ ties
def timed(kernel, round_ms, rel_l2, kind="kernel"):
    """A candidate measured in rounds: one list of samples (ms) per round."""
    summary = summarize([[v * 1e-3 for v in r] for r in round_ms])
    return Candidate(kernel, kind, summary.median_s, {"rel_l2": rel_l2, "max_rel": rel_l2},
                     summary)


def jitter(ms, spread):
    """Three rounds of 20 samples around ``ms``, the rounds ``spread`` apart."""
    return [[ms * (1 + spread * (r - 1)) * (1 + 0.001 * (i % 5)) for i in range(20)]
            for r in range(3)]


def test_kernels_the_intervals_cannot_tell_apart_are_tied_with_the_choice():
    close = [timed("winograd", jitter(2.0, 0.05), 9e-7), timed("im2col", jitter(2.04, 0.05),
                                                                  3e-7),
             timed("direct", jitter(4.0, 0.01), 2e-7)]
    c = choose(close, budget=1e-6)
    assert c.chosen.kernel == "winograd" and c.tied == ("winograd", "im2col")
    clear = [timed("winograd", jitter(2.0, 0.01), 9e-7), timed("im2col", jitter(2.5, 0.01),
                                                                  3e-7)]
    assert choose(clear, budget=1e-6).tied == ("winograd",)
    # a tie is among admissible kernels only: over the budget, im2col is no contender
    assert choose(close, budget=5e-7).tied == ("im2col",)
    # candidates without intervals are never tied
    assert choose(LAYER, budget=1e-6).tied == ("winograd",)


def test_a_candidates_interval_survives_the_plan_cache():
    c = timed("winograd", jitter(2.0, 0.05), 9e-7)
    back = Candidate.from_json(json.loads(json.dumps(c.to_json())))
    assert back == c and back.summary.ci95_s == pytest.approx(c.summary.ci95_s)
    assert back.summary.round_medians_s == pytest.approx(c.summary.round_medians_s)
    assert Candidate.from_json(cand("a", 1.0, 1e-7).to_json()).summary is None


def rounds_sweep(table):
    """A fake sweep whose records keep samples by round: (layer, kernel) -> (rounds_ms, err)."""
    def sweep(tasks, settings, writer, done):
        records = []
        for task in tasks:
            rounds_ms, err = table[(task.layer.name, task.kernel)]
            s = summarize([[v * 1e-3 for v in r] for r in rounds_ms])
            records.append({
                "type": "result", "problem": task.layer.descriptor, "name": task.layer.name,
                "kernel": task.kernel, "backend": "cpu", "status": "ok",
                "kind": "baseline" if task.kernel == "onednn" else "kernel",
                "time": {"median_s": s.median_s, "ci95_s": list(s.ci95_s),
                         "samples_by_round_s": [[v * 1e-3 for v in r] for r in rounds_ms]},
                "error": {"rel_l2": err, "max_rel": 10 * err}})
        return SweepOutcome(records, False, 0, {"threads": 2})
    return sweep


def test_tuning_records_the_tie_in_the_plan_cache(tmp_path):
    table = {("a", "winograd"): (jitter(2.0, 0.06), 9e-7), ("a", "direct"): (jitter(2.05, 0.06),
                                                                             2e-7),
             ("a", "onednn"): (jitter(1.0, 0.01), 2e-7)}
    outcome = tuning.tune(LAYERS[:1], ["direct", "winograd", "onednn"], SweepSettings(),
                          budget=1e-6, sweep=rounds_sweep(table))
    (a,) = outcome.chosen
    assert a.choice.chosen.kernel == "winograd" and a.choice.tied == ("winograd", "direct")
    path = tmp_path / "plans.json"
    tuning.save_plans(path, outcome, "cpu")
    (entry,) = json.loads(path.read_text())["platforms"].popitem()[1]["entries"].values()
    assert entry["choice"]["kernel"] == "winograd" and entry["tied"] == ["winograd", "direct"]
    assert len(entry["choice"]["time"]["round_medians_s"]) == 3
