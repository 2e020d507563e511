"""The sweep's rounds end to end: separate worker processes, shuffled orders, what a
record keeps, and planted instabilities that must never come out as a clean winner."""

import pytest

from convbench.measure import runner
from convbench.measure.stats import summarize
from convbench.present.tables import layer_marks
from convbench.problem.suites import select_layers
from convbench.store.records import Record

LAYER = "mb1ic4ih8oc4kh3ph1"


def sweep(kernels, **settings):
    layers = select_layers([], [LAYER])
    s = runner.SweepSettings(mode="perf", min_reps=10, min_time=0.02, cooldown=0.01,
                             **settings)
    return runner.run_sweep(runner.plan_tasks(layers, kernels, s), s, None)


@pytest.fixture
def counter(tmp_path, monkeypatch):
    path = tmp_path / "processes"
    monkeypatch.setenv("CONVBENCH_TEST_COUNTER", str(path))
    return path


@pytest.mark.slow
def test_each_round_runs_in_its_own_process_and_the_record_keeps_every_round(
        faulty_env, counter):
    outcome = sweep(["test_steady", "test_alternating_processes"], rounds=3)
    recs = {r["kernel"]: Record(r) for r in outcome.records}
    steady = recs["test_steady"]
    t = steady["time"]
    assert steady.ok and t["rounds"] == 3 and len(t["samples_by_round_s"]) == 3
    assert all(len(r) >= 10 for r in t["samples_by_round_s"])
    assert t["times_s"] == [v for r in t["samples_by_round_s"] for v in r]
    assert t["median_s"] == pytest.approx(summarize(t["samples_by_round_s"]).median_s)
    assert t["ci95_s"][0] <= t["median_s"] <= t["ci95_s"][1]
    assert t["cooldown_s"] == 0.01 and t["warmup"] == 2 and "incomplete" not in t
    # three worker processes asked for their parity: one per round
    assert counter.read_text() == "3"
    flaky = recs["test_alternating_processes"]["time"]["round_medians_s"]
    assert flaky[1] > 2 * flaky[0] and flaky[1] > 2 * flaky[2]  # process 1 was the slow one


def test_kernels_take_their_turns_in_a_new_order_every_round():
    tasks = [runner.Task(layer, name, runner.SweepSettings())
             for _, layer in select_layers([], [LAYER]) for name in "abcdefgh"]
    orders = {tuple(t.kernel for t in runner.round_order(tasks, 0, 0, r)) for r in range(5)}
    assert len(orders) == 5 and all(sorted(o) == list("abcdefgh") for o in orders)
    assert runner.round_order(tasks, 0, 0, 1) == runner.round_order(tasks, 0, 0, 1)


@pytest.mark.slow
def test_planted_instabilities_are_marked_and_never_win_cleanly(faulty_env, counter):
    outcome = sweep(["test_steady", "test_alternating", "test_alternating_processes"],
                    rounds=3)
    recs = [Record(r) for r in outcome.records]
    by_name = {r.kernel: r for r in recs}
    assert by_name["test_alternating"].unstable
    assert any("p90/p10" in why for why in by_name["test_alternating"]["time"]
               ["unstable_reasons"])
    assert by_name["test_alternating_processes"].unstable
    marks = layer_marks(recs)
    for name in ("test_alternating", "test_alternating_processes"):
        assert marks.get(name) != "★"


def test_accuracy_alone_takes_one_round(faulty_env):
    layers = select_layers([], [LAYER])
    s = runner.SweepSettings(mode="accuracy", rounds=3)
    outcome = runner.run_sweep(runner.plan_tasks(layers, ["direct"], s), s, None)
    (rec,) = outcome.records
    assert rec["status"] == "ok" and rec["time"] is None and rec["error"]["rel_l2"] < 1e-6


def test_a_layer_cut_short_is_written_incomplete_and_measured_again_on_resume(faulty_env):
    layers = select_layers([], [LAYER])
    s = runner.SweepSettings(mode="perf", rounds=3, min_reps=2, min_time=0)
    task = runner.plan_tasks(layers, ["test_steady"], s)[0]
    one_round = runner.measure_round(task, 0)
    rec = runner.combine_rounds(task, [one_round])
    assert rec["incomplete"] and rec["time"]["incomplete"] and rec["time"]["rounds"] == 1
    assert runner.existing_keys([rec]) == set()
    full = runner.combine_rounds(task, [one_round] * 3)
    assert runner.existing_keys([full]) == {task.key}


@pytest.mark.slow
def test_a_failing_round_makes_the_record_and_stops_its_rounds(faulty_env):
    outcome = sweep(["test_raising", "test_steady"], rounds=2)
    recs = {r["kernel"]: r for r in outcome.records}
    assert recs["test_raising"]["status"] == "failed"
    assert "planted failure" in recs["test_raising"]["reason"]
    assert recs["test_steady"]["time"]["rounds"] == 2


def fake_rounds(monkeypatch, interrupt_at=None):
    """measure_round replaced by a recorder of (layer, round) that returns a steady round."""
    seen = []

    def fake(task, r, references=None):
        if len(seen) == interrupt_at:
            raise KeyboardInterrupt
        seen.append((task.layer.problem.ic, r))
        rec = runner.base_record(task)
        rec.update(status="ok", round=r, time={"samples_s": [1e-3, 1.01e-3, 0.99e-3],
                                              "prepare_s": 0.0, "first_call_s": 0.0})
        return rec
    monkeypatch.setattr(runner, "measure_round", fake)
    return seen


def three_layers(block, rounds=3):
    layers = select_layers([], [f"mb1ic{c}ih8oc4kh3ph1" for c in (1, 2, 3)])
    s = runner.SweepSettings(mode="perf", rounds=rounds, isolate=False, round_block=block)
    return runner.plan_tasks(layers, ["direct"], s), s


def test_rounds_of_a_block_of_layers_are_interleaved_round_by_round(monkeypatch):
    seen = fake_rounds(monkeypatch)
    tasks, s = three_layers(block=2)
    written = []
    outcome = runner.run_sweep(tasks, s, None, on_record=lambda r: written.append(
        (r["problem"], len(seen))))
    assert seen == [(1, 0), (2, 0), (1, 1), (2, 1), (1, 2), (2, 2), (3, 0), (3, 1), (3, 2)]
    # The first block's two records are written when its last round ends, before layer 3.
    assert [n for _, n in written] == [6, 6, 9]
    assert all(r["time"]["rounds"] == 3 for r in outcome.records)


def test_block_zero_is_the_whole_sweep(monkeypatch):
    seen = fake_rounds(monkeypatch)
    tasks, s = three_layers(block=0, rounds=2)
    runner.run_sweep(tasks, s, None)
    assert seen == [(1, 0), (2, 0), (3, 0), (1, 1), (2, 1), (3, 1)]


def test_ctrl_c_inside_a_block_writes_its_records_incomplete(monkeypatch):
    fake_rounds(monkeypatch, interrupt_at=3)  # after round 0 of both layers and one of round 1
    tasks, s = three_layers(block=2)
    outcome = runner.run_sweep(tasks, s, None)
    assert outcome.interrupted
    recs = {r["problem"]: r for r in outcome.records}
    assert len(recs) == 2 and all(r["incomplete"] for r in recs.values())
    assert sorted(r["time"]["rounds"] for r in recs.values()) == [1, 2]
    assert runner.existing_keys([runner.Record(r) for r in outcome.records]) == set()
