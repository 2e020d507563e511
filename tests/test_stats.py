"""Statistics of times measured in rounds: medians, intervals, stability, ratios, verdicts,
rankings, and what the tables and compare make of them."""

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from convbench.measure import stats
from convbench.measure.compare import compare_runs
from convbench.present.tables import layer_marks, layer_table, network_table
from convbench.store.jsonl import Run
from convbench.store.records import Record


def rounds_around(medians, n=20, jitter=0.002):
    """One round per median, ``n`` samples each, spread by ``jitter`` around it."""
    return [[m * (1 + jitter * ((i % 7) - 3) / 3) for i in range(n)] for m in medians]


def test_each_round_weighs_the_same_in_the_median():
    # a slow round that collected 3 samples counts as much as a fast one with 30
    assert stats.weighted_median([[1.0] * 30, [3.0] * 3]) == 2.0
    assert stats.weighted_median([[1.0, 2.0, 3.0]]) == 2.0
    with pytest.raises(ValueError, match="no samples"):
        stats.weighted_median([[]])


def test_the_interval_is_a_t_interval_on_the_rounds_log_medians():
    s = stats.summarize(rounds_around([1.0, 1.1, 1.2], jitter=0))
    logs = [math.log(m) for m in (1.0, 1.1, 1.2)]
    half = scipy_stats.t.ppf(0.975, 2) * statistics.stdev(logs) / math.sqrt(3)
    assert s.df == 2 and s.rounds == 3
    assert s.ci95_s == pytest.approx((s.median_s * math.exp(-half),
                                      s.median_s * math.exp(half)))
    assert s.ci95_s[0] < s.median_s < s.ci95_s[1]


def test_rounds_that_agree_by_chance_keep_the_rounds_own_uncertainty():
    agree = stats.summarize(rounds_around([1.0, 1.0, 1.0], jitter=0.05))
    assert agree.log_se == agree.within_log_se > 0
    assert agree.ci95_s[1] > agree.median_s * 1.01


def test_one_round_has_only_its_within_round_interval():
    s = stats.summarize(rounds_around([2.0], n=50, jitter=0.01))
    assert s.rounds == 1 and math.isinf(s.df)
    assert s.ci95_s[0] < 2.0 < s.ci95_s[1] and s.ci95_s[1] / s.ci95_s[0] < 1.02


def test_bad_samples_are_refused():
    for bad in ([[]], [[1.0, 0.0]], [[1.0, math.inf]]):
        with pytest.raises(ValueError, match="positive and finite"):
            stats.summarize(bad)


def test_a_steady_record_is_stable():
    s = stats.summarize(rounds_around([1.0, 1.02, 0.99]))
    assert not s.unstable and s.why_unstable == ()


def test_alternating_calls_make_a_record_unstable():
    alternating = [[1e-3 if i % 2 else 2e-4 for i in range(40)] for _ in range(3)]
    s = stats.summarize(alternating)
    assert s.unstable and any("p90/p10" in why for why in s.why_unstable)


def test_rounds_far_apart_make_a_record_unstable():
    s = stats.summarize(rounds_around([1.0, 1.5, 1.0]))
    assert s.unstable and any("round medians differ by 50%" in w for w in s.why_unstable)
    # 8% apart with tight rounds: disjoint intervals beyond the 5% gap
    s = stats.summarize(rounds_around([1.0, 1.08, 1.0], n=40, jitter=0.001))
    assert s.unstable and any("disagree beyond their intervals" in w for w in s.why_unstable)
    # 3% apart is a shift the intervals may not cover, but not worth a flag
    assert not stats.summarize(rounds_around([1.0, 1.03, 1.0], n=40, jitter=0.001)).unstable


def test_pairing_by_round_cancels_what_two_kernels_share():
    # both kernels slowed alike in round 1 (a shared noisy moment): paired, the ratio is sure
    a = stats.summarize(rounds_around([1.0, 1.3, 1.0]))
    b = stats.summarize(rounds_around([2.0, 2.6, 2.0]))
    paired, unpaired = stats.ratio(b, a, paired=True), stats.ratio(b, a)
    assert paired.value == pytest.approx(2.0) and paired.paired and not unpaired.paired
    assert paired.hi / paired.lo < 1.1 < unpaired.hi / unpaired.lo
    assert paired.above_one and not stats.ratio(a, a, paired=True).above_one


@pytest.mark.parametrize("factor, spread, expected", [
    (1.15, 0.01, "slower"), (1 / 1.15, 0.01, "faster"), (1.05, 0.01, "same"),
    (1.0, 0.01, "same"), (1.15, 0.20, "unclear"), (1 / 1.3, 0.25, "unclear")])
def test_verdicts_need_significance_and_an_effect_beyond_the_tolerance(factor, spread,
                                                                       expected):
    old = stats.summarize(rounds_around([1.0, 1.0 + spread, 1.0 - spread]))
    new = stats.summarize(rounds_around([factor, factor * (1 - spread), factor * (1 + spread)]))
    assert stats.verdict(stats.ratio(new, old)) == expected


def test_a_clean_win_needs_confidence_a_margin_and_a_stable_winner():
    fast = stats.summarize(rounds_around([1.0, 1.01, 0.99]))
    slow = stats.summarize(rounds_around([1.5, 1.52, 1.49]))
    close = stats.summarize(rounds_around([1.02, 1.03, 1.01]))
    assert stats.ranking({"a": fast, "b": slow}) == stats.Ranking("a", ("a",), True)
    assert stats.ranking({"a": fast, "b": close, "c": slow}).tied == ("a", "b")
    wobbly = stats.summarize(rounds_around([0.6, 1.2, 0.6]))
    r = stats.ranking({"w": wobbly, "b": slow})
    assert r.fastest == "w" and not r.clean


def test_the_whole_network_total_takes_its_interval_from_round_totals():
    parts = [(stats.summarize(rounds_around([1.0, 1.1, 1.0], jitter=0)), 2),
             (stats.summarize(rounds_around([3.0, 3.3, 3.0], jitter=0)), 1)]
    t = stats.total(parts)
    assert t.median_s == pytest.approx(2 * 1.0 + 3.0)
    assert t.round_medians_s == pytest.approx((5.0, 5.5, 5.0))
    assert t.ci95_s[0] < 5.0 < t.ci95_s[1]


@given(st.lists(st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=30), min_size=1,
                max_size=6))
def test_every_interval_holds_its_median(rounds):
    s = stats.summarize(rounds)
    assert s.ci95_s[0] <= s.median_s <= s.ci95_s[1]
    assert min(min(r) for r in rounds) <= s.median_s <= max(max(r) for r in rounds)


# ------------------------------------------------------------ tables and compare
def record(kernel, medians, kind="kernel", problem="mb1ic8ih8oc8kh3ph1", jitter=0.002):
    rounds = rounds_around(medians, jitter=jitter)
    s = stats.summarize(rounds)
    return Record({"type": "result", "problem": problem, "name": "l", "backend": "cpu",
                   "kernel": kernel, "kind": kind, "status": "ok", "repeat": 1,
                   "flops": 10**6, "gflops": 1e-3 / s.median_s,
                   "time": {"median_s": s.median_s, "ci95_s": list(s.ci95_s),
                            "unstable": s.unstable, "samples_by_round_s": rounds},
                   "error": {"rel_l2": 1e-7, "bound_ratio": 1.0}})


def test_the_table_marks_a_clear_winner_and_shares_a_tie():
    clear = [record("im2col", [1.0, 1.01, 0.99]), record("onednn", [2.0, 2.01, 1.99], "baseline")]
    assert layer_marks(clear) == {"im2col": "★"}
    tie = [record("im2col", [1.0, 1.05, 0.96]), record("winograd", [1.01, 0.97, 1.04]),
           record("onednn", [2.0, 2.01, 1.99], "baseline")]
    assert layer_marks(tie) == {"im2col": "≈", "winograd": "≈"}
    vendor = [record("onednn", [1.0, 1.01, 0.99], "baseline"), record("im2col", [2.0, 2.0, 2.0]),
              record("fft", [2.01, 2.0, 1.99]), record("direct", [4.0, 4.0, 4.0])]
    assert layer_marks(vendor) == {"onednn": "★", "im2col": "≈☆", "fft": "≈☆"}
    text = layer_table(vendor)
    assert "| 0.50 [" in text  # im2col's speed over onednn, with its interval


def test_an_unstable_record_is_marked_and_never_a_clean_winner():
    recs = [record("winograd", [0.5, 1.5, 0.5]), record("im2col", [1.0, 1.0, 1.0])]
    assert recs[0].unstable
    marks = layer_marks(recs)
    assert marks["winograd"] != "★"
    row = next(line for line in layer_table(recs).splitlines() if "| winograd |" in line)
    assert " ~ |" in row


def test_the_network_table_gives_intervals_of_the_time_and_of_the_ratio():
    recs = [record("im2col", [1.0, 1.01, 0.99]), record("onednn", [2.0, 2.02, 1.98], "baseline"),
            record("im2col", [3.0, 3.03, 2.97], problem="mb1ic8ih8oc8kh1"),
            record("onednn", [3.0, 3.0, 3.0], "baseline", problem="mb1ic8ih8oc8kh1")]
    rows = {row[0]: row for row in network_table(recs).rows}
    assert rows["im2col"][1].startswith("4000.00 [") and rows["im2col"][4].startswith("1.25 [")
    # A rerun of the whole network is predicted wider than the interval of this run.
    assert rows["im2col"][2].startswith("[") and rows["im2col"][2] != rows["im2col"][1]
    assert rows["best-of-convbench"][5] == "2/2"


def test_compare_of_two_runs_gives_verdicts_and_flags_only_significant_slowdowns():
    old = Run(records=[record("a", [1.0, 1.01, 0.99]), record("b", [1.0, 1.01, 0.99]),
                       record("c", [1.0, 1.01, 0.99])])
    new = Run(records=[record("a", [1.0, 0.99, 1.01]), record("b", [1.2, 1.21, 1.19]),
                       record("c", [1.3, 0.8, 1.6])])
    rows = {r.key[-1]: r for r in compare_runs(old, new)}
    assert rows["a"].verdict == "same" and not rows["a"].regressions
    assert rows["b"].verdict == "slower" and rows["b"].regressions == ["time x1.20"]
    assert rows["c"].verdict == "unclear" and not rows["c"].regressions
