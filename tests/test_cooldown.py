"""The pause before a measurement ends when the process's other threads are idle."""

import threading
import time
from pathlib import Path

import pytest

from convbench.measure import cooldown


def spinning_thread(seconds):
    def spin():
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            sum(range(1000))
    thread = threading.Thread(target=spin)
    thread.start()
    return thread


@pytest.fixture(autouse=True)
def needs_schedstat():
    if cooldown.other_threads_cpu_ns() is None:
        pytest.skip("/proc/self/task/*/schedstat is not readable here")


def test_with_nothing_spinning_the_pause_is_two_slices():
    time.sleep(0.3)  # whatever an earlier test left spinning (OpenBLAS: ~0.1 s) goes to sleep
    assert cooldown.cool_down(0.5) < 0.1


def test_the_pause_lasts_while_another_thread_spins_and_ends_after_it():
    thread = spinning_thread(0.15)
    waited = cooldown.cool_down(1.0)
    thread.join()
    assert 0.15 <= waited < 0.5


def test_the_pause_never_exceeds_its_limit():
    thread = spinning_thread(0.6)
    waited = cooldown.cool_down(0.1)
    thread.join()
    assert 0.1 <= waited < 0.2


def test_without_per_thread_counters_it_sleeps_the_whole_limit(monkeypatch):
    monkeypatch.setattr(cooldown, "_TASKS", Path("/nonexistent/task"))
    assert cooldown.other_threads_cpu_ns() is None
    assert cooldown.cool_down(0.05) >= 0.05
    assert cooldown.cool_down(0) == 0.0


def test_fastest_times_each_candidate_again_in_the_reverse_order(monkeypatch):
    """A candidate slowed by the one before it (its first calls after it) still wins."""
    from convbench.kernels.cpu import base

    monkeypatch.setattr(base, "cool_down", lambda limit: 0.0)
    clock = {"now": 0.0}
    monkeypatch.setattr(base.time, "perf_counter", lambda: clock["now"])
    since_a = {"calls": 99}  # no call of a yet

    def a():
        clock["now"] += 0.005
        since_a["calls"] = 0

    def b():  # 2 ms, but 12 ms for its first three calls after a call of a
        since_a["calls"] += 1
        clock["now"] += 0.012 if since_a["calls"] <= 3 else 0.002

    assert base.fastest({"a": a, "b": b}) == "b"
    since_a["calls"] = 99
    assert base.fastest({"b": b, "a": a}) == "b"
    # and a candidate that is slower wherever it runs does not
    assert base.fastest({"a": a, "c": lambda: clock.__setitem__("now", clock["now"] + 0.009)}) \
        == "a"


def test_fastest_times_a_candidate_until_its_timings_settle(monkeypatch):
    """One that takes a few calls to reach its speed (14, 11, 10, 8 ms) beats a steady 9 ms."""
    from convbench.kernels.cpu import base

    monkeypatch.setattr(base, "cool_down", lambda limit: 0.0)
    clock = {"now": 0.0}
    monkeypatch.setattr(base.time, "perf_counter", lambda: clock["now"])
    calls = {"slow_start": 0}

    def steady():
        clock["now"] += 0.009
        calls["slow_start"] = 0  # the other candidate starts slow again after this one

    def slow_start():
        calls["slow_start"] += 1
        clock["now"] += {1: 0.018, 2: 0.014, 3: 0.011, 4: 0.010}.get(calls["slow_start"], 0.008)

    assert base.fastest({"steady": steady, "slow_start": slow_start}) == "slow_start"
    timings = []
    monkeypatch.setattr(base.time, "perf_counter",
                        lambda: timings.append(clock["now"]) or clock["now"])
    base.fastest({"steady": steady})
    assert len(timings) == 2 * (2 + 1)  # two timed calls that agree, and the reverse pass
