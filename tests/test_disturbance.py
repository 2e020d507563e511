"""Other processes' CPU time during a round: seen, retried, and marked when it persists."""

import subprocess
import sys
import time

import pytest

from convbench.measure import disturbance, runner
from convbench.problem.suites import select_layers
from convbench.store.records import Record

LAYER = "mb1ic4ih8oc4kh3ph1"


def test_a_busy_process_beside_the_watch_is_seen_as_foreign_cores():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # the child is past its start-up
        watch = disturbance.CpuWatch()
        watch.start()
        time.sleep(0.5)
        window = watch.stop()
    finally:
        busy.kill()
        busy.wait()
    if window is None:
        pytest.skip("/proc/stat is not readable here")
    # One spinning process is one core; the tick granularity costs at most ~0.2.
    assert window["foreign_cores"] > disturbance.FOREIGN_LIMIT_CORES
    assert "other processes used" in disturbance.disturbance(window)


def window_of(work):
    watch = disturbance.CpuWatch()
    watch.start()
    work()
    return watch.stop()


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_this_process_own_work_is_not_foreign():
    background = window_of(lambda: time.sleep(0.3))
    if background is None:
        pytest.skip("/proc/stat is not readable here")
    busy = window_of(lambda: spin(0.3))
    # Counted as foreign, our own core would add 1.0 to what the machine's other
    # processes were doing anyway.
    assert busy["foreign_cores"] < background["foreign_cores"] + 0.5


@pytest.mark.parametrize("window, expected", [
    (None, None),
    ({"seconds": 0.1, "foreign_cores": 0.0, "steal_cores": 0.0}, None),
    ({"seconds": 0.1, "foreign_cores": 0.95, "steal_cores": 0.0}, "other processes used 0.95"),
    ({"seconds": 0.1, "foreign_cores": 0.0, "steal_cores": 0.2}, "the hypervisor took 0.20"),
])
def test_the_limits_decide_what_is_disturbed(window, expected):
    reason = disturbance.disturbance(window)
    assert (reason is None) if expected is None else expected in reason


class ScriptedWatch:
    """Reports the windows of a script, one per timed round, then quiet ones."""

    script: list[float] = []

    def start(self):
        pass

    def stop(self):
        cores = ScriptedWatch.script.pop(0) if ScriptedWatch.script else 0.0
        return {"seconds": 0.1, "foreign_cores": cores, "steal_cores": 0.0}


def measure_steady(monkeypatch, script, retries=3):
    monkeypatch.setattr(runner, "_busy_streak", 0)
    ScriptedWatch.script = list(script)
    monkeypatch.setattr(runner, "CpuWatch", ScriptedWatch)
    waits = []
    monkeypatch.setattr(runner, "wait_for_quiet", lambda: waits.append(1))
    s = runner.SweepSettings(mode="perf", min_reps=5, min_time=0.01, cooldown=0.0,
                             rounds=2, isolate=False, retries=retries)
    (task,) = runner.plan_tasks(select_layers([], [LAYER]), ["test_steady"], s)
    return Record(runner.measure(task)), waits


def test_a_disturbed_round_is_timed_again_until_it_is_quiet(faulty_env, monkeypatch):
    rec, waits = measure_steady(monkeypatch, [1.0, 0.8, 0.0, 0.0])
    t = rec["time"]
    assert rec.ok and t["retries"] == [2, 0] and len(waits) == 2
    assert t["foreign_cores"] == [0.0, 0.0]
    assert not any("other processes" in why for why in t["unstable_reasons"])


def test_a_round_disturbed_after_every_retry_makes_the_record_unstable(
        faulty_env, monkeypatch):
    rec, waits = measure_steady(monkeypatch, [1.0] * 4, retries=3)
    t = rec["time"]
    assert rec.ok and t["retries"] == [3, 0] and len(waits) == 3
    assert t["unstable"] is True
    assert any(why.startswith("round 0: other processes used 1.00 cores")
               for why in t["unstable_reasons"])


def test_no_retries_keeps_the_first_timing_and_says_so(faulty_env, monkeypatch):
    rec, waits = measure_steady(monkeypatch, [1.0], retries=0)
    assert rec["time"]["retries"] == [0, 0] and not waits
    assert rec["time"]["unstable"] is True


def test_negative_retries_are_refused():
    with pytest.raises(ValueError, match="retries must be >= 0, got -1"):
        runner.SweepSettings(retries=-1)


def test_a_machine_that_stays_busy_stops_the_retries_until_a_round_is_quiet(
        faulty_env, monkeypatch):
    monkeypatch.setattr(runner, "_busy_streak", 0)
    # Rounds 0-1 stay disturbed through all their retries (4 windows each); then the
    # streak is at the limit and round 2 is timed once; round 3 is quiet.
    script = [1.0] * 8 + [1.0] + [0.0]
    ScriptedWatch.script = list(script)
    monkeypatch.setattr(runner, "CpuWatch", ScriptedWatch)
    monkeypatch.setattr(runner, "wait_for_quiet", lambda: None)
    s = runner.SweepSettings(mode="perf", min_reps=5, min_time=0.01, cooldown=0.0,
                             rounds=4, isolate=False, retries=3)
    (task,) = runner.plan_tasks(select_layers([], [LAYER]), ["test_steady"], s)
    t = Record(runner.measure(task))["time"]
    assert runner.BUSY_STREAK_LIMIT == 2
    assert t["retries"] == [3, 3, 0, 0]
    assert t["foreign_cores"] == [1.0, 1.0, 1.0, 0.0]
    assert runner._busy_streak == 0
