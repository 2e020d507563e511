"""Timing statistics, error metrics and the results store."""

import itertools
import json

import numba
import numpy as np
import pytest

from convbench.measure.compare import compare_runs
from convbench.measure.metrics import UNIT_ROUNDOFF, Reference, error_metrics
from convbench.measure.threads import pinned_threads
from convbench.measure.timing import Timing, bench
from convbench.store.jsonl import ResultWriter, iter_jsonl, load_run, write_records


def _fake_clock(step):
    ticks = itertools.count()
    return lambda: next(ticks) * step


class StepClock:
    """A clock on which every timed run takes ``step`` seconds."""

    name = "step"

    def __init__(self, step):
        self.step = step

    def start(self):
        pass

    def stop(self):
        return self.step

    def synchronize(self):
        pass

    def flush_l2(self):
        pass


def test_bench_reaches_min_reps_and_min_time():
    calls = []
    timing = bench(lambda: calls.append(1), clock=StepClock(1.0), min_reps=3, min_time=10.0,
                   warmup=2)
    # 1 s a run: min_reps alone would stop at 3, min_time needs 10 runs.
    assert timing.reps == 10 and all(t == 1.0 for t in timing.times_s)
    assert len(calls) == 1 + 2 + timing.reps  # first call and warm-up are not timed


def test_bench_min_reps_dominates_for_slow_calls():
    timing = bench(lambda: None, clock=StepClock(5.0), min_reps=7, min_time=0.0)
    assert timing.reps == 7


def test_bench_max_time_stops_after_min_reps():
    # The wall clock advances 1 s a read. It is read before and after the first call,
    # at the start of the timed runs, and after each run from the min_reps-th on, so
    # the elapsed time after run k is k - 1 s: past 10 s after 12 runs.
    timing = bench(lambda: None, clock=StepClock(1.0), min_reps=2, min_time=1e9,
                   max_time=10.0, wall=_fake_clock(1.0))
    assert timing.reps == 12


def test_bench_batches_short_calls_and_divides_their_time():
    calls = []
    timing = bench(lambda: calls.append(1), clock=StepClock(4.0), min_reps=3, min_time=0.0,
                   warmup=0, batch=4)
    assert timing.times_s == [1.0, 1.0, 1.0] and len(calls) == 1 + 3 * 4
    with pytest.raises(ValueError, match="batch must be >= 1"):
        bench(lambda: None, batch=0)


def test_timing_statistics():
    t = Timing(prepare_s=0.5, first_call_s=3.0, times_s=[4.0, 1.0, 2.0, 3.0, 5.0])
    assert t.median_s == 3.0 and t.min_s == 1.0
    assert t.percentile(10) == pytest.approx(1.4) and t.percentile(90) == pytest.approx(4.6)
    assert t.compile_s == 0.0
    s = t.summary()
    assert s["reps"] == 5 and s["p90_s"] == pytest.approx(4.6) and s["prepare_s"] == 0.5


def test_bench_warms_for_warm_time_after_the_pause():
    """Warm calls continue past ``warmup`` until they add up to ``warm_time`` seconds."""
    calls = []
    # the wall clock advances 2**-7 s (7.8 ms) a read, so each warm call lasts that long
    timing = bench(lambda: calls.append(1), clock=StepClock(0.01), min_reps=2, min_time=0.0,
                   warmup=1, warm_time=0.05, wall=_fake_clock(2.0**-7))
    assert len(calls) == 1 + 7 + timing.reps  # 7 x 7.8 ms is the first sum past 50 ms
    calls.clear()
    bench(lambda: calls.append(1), clock=StepClock(0.01), min_reps=2, min_time=0.0, warmup=7,
          warm_time=0.05, wall=_fake_clock(2.0**-4))
    assert len(calls) == 1 + 7 + 2  # warmup calls that already last longer are all made


@pytest.mark.parametrize("bad", [dict(min_reps=0), dict(min_time=-1), dict(warm_time=-1)])
def test_bench_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        bench(lambda: None, **bad)


def test_pinned_threads_sets_and_restores():
    before = numba.get_num_threads()
    with pinned_threads(1) as info:
        assert numba.get_num_threads() == 1
        assert info["threads"] == 1 and info["numba_threads"] == 1
        assert all(pool["num_threads"] == 1 for pool in info["blas"])
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError):
        with pinned_threads(0):
            pass


def _reference(ref, scale):
    return Reference(ref, scale, scale, np.ones((1, 1, 1, 1)))


def test_error_metrics_on_known_errors():
    ref = np.array([1.0, -2.0, 4.0, 0.0])
    scale = np.array([2.0, 2.0, 8.0, 1.0])
    y = ref + np.array([0.0, 2.0**-20, -(2.0**-18), 0.0])
    envelope = np.array([1.0, 2.0**-19, 2.0**-19, 0.0])
    m = error_metrics(y.astype(np.float32), _reference(ref, scale), "float32", envelope)
    assert m["max_abs"] == 2.0**-18
    assert m["rel_l2"] == pytest.approx(np.sqrt(2.0**-40 + 2.0**-36) / np.sqrt(21))
    assert m["max_rel"] == pytest.approx(2.0**-18 / 4.0)  # worst of 2^-21 and 2^-20
    # |err| / (u * scale): 2^-20 / (2^-24 * 2) = 8 and 2^-18 / (2^-24 * 8) = 8.
    assert m["bound_ratio"] == pytest.approx(8.0)
    # |err| / envelope: 0, 1/2, 2 and 0/0 = 0.
    assert m["envelope_ratio"] == pytest.approx(2.0)
    assert UNIT_ROUNDOFF["float32"] == 2.0**-24
    exact = error_metrics(ref, _reference(ref, scale), "float64", np.zeros(4))
    assert exact["rel_l2"] == 0.0 and exact["envelope_ratio"] == 0.0
    off = error_metrics(ref + 1e-300, _reference(ref, scale), "float64", np.zeros(4))
    assert off["envelope_ratio"] == float("inf")  # x / 0 for x > 0
    assert "envelope_ratio" not in error_metrics(ref, _reference(ref, scale), "float64")


def test_error_metrics_nonfinite_output_is_infinitely_wrong():
    ref = np.ones(3)
    m = error_metrics(np.array([1.0, np.nan, 1.0]), _reference(ref, ref), "float64", ref)
    assert m["nonfinite"] == 1 and m["rel_l2"] == float("inf")
    assert m["envelope_ratio"] == float("inf")


def _rec(problem="mb1ic3ih8oc4kh3", kernel="direct", median=1.0, rel=1e-7, status="ok"):
    """A record of three rounds of ten samples around ``median``, the rounds 1% apart."""
    rounds = [[median * (1 + 0.01 * (r - 1)) * (1 + 0.002 * (i - 5)) for i in range(10)]
              for r in range(3)]
    return {"type": "result", "problem": problem, "backend": "cpu", "kernel": kernel,
            "name": "x", "status": status, "reason": None,
            "time": {"median_s": median, "samples_by_round_s": rounds},
            "error": {"rel_l2": rel}}


def test_writer_flushes_each_record_and_loader_reads_them(tmp_path):
    path = tmp_path / "run.jsonl"
    with ResultWriter(path) as writer:
        writer.write({"type": "header", "environment": {}})
        writer.write(_rec())
        # Already on disk before the writer closes: a crash now loses nothing.
        assert len(path.read_text().splitlines()) == 2
        writer.write(_rec(kernel="fft", rel=float("inf")))
    run = load_run(path)
    assert len(run.headers) == 1 and len(run.records) == 2
    assert run.records[1]["error"]["rel_l2"] == "inf"  # strict JSON, no Infinity token
    json.loads(path.read_text().splitlines()[2])


def test_torn_last_line_is_skipped_and_appending_goes_on(tmp_path):
    path = tmp_path / "run.jsonl"
    write_records(path, [_rec()])
    with open(path, "a") as f:
        f.write('{"type": "result", "problem": "mb1')  # killed mid-write
    with pytest.warns(RuntimeWarning, match="torn line"):
        assert len(load_run(path).records) == 1
    write_records(path, [_rec(kernel="fft")])
    with pytest.warns(RuntimeWarning):
        assert [r["kernel"] for r in iter_jsonl(path)] == ["direct", "fft"]


def test_compare_flags_planted_regressions_and_passes_identical(tmp_path):
    old_path, new_path = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old = [_rec(), _rec(kernel="fft"), _rec(kernel="im2col")]
    write_records(old_path, old)
    write_records(new_path, old)
    rows = compare_runs(load_run(old_path), load_run(new_path))
    assert len(rows) == 3 and not any(r.regressions for r in rows)
    write_records(new_path, [_rec(median=1.25), _rec(kernel="fft", rel=5e-7),
                             _rec(kernel="im2col", median=1.05)])
    rows = {r.key[-1]: r for r in compare_runs(load_run(old_path), load_run(new_path))}
    assert rows["direct"].regressions == ["time x1.25"] and rows["direct"].verdict == "slower"
    assert rows["fft"].regressions == ["rel_l2 x5.00"]
    assert rows["im2col"].regressions == []  # within the 10% time tolerance
    assert rows["im2col"].verdict == "same" and rows["im2col"].time_ratio.above_one
    assert compare_runs(load_run(old_path), load_run(new_path), time_tol=0.3)[0].regressions \
        == []


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(ValueError, match="holds no convbench records"):
        load_run(path)
