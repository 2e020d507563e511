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


def _fake_clock(monkeypatch, base):
    """perf_counter driven by the candidates; cool-downs counted, not slept."""
    clock = {"now": 0.0, "cool_downs": 0}
    monkeypatch.setattr(base.time, "perf_counter", lambda: clock["now"])

    def cool_down(limit):
        clock["cool_downs"] += 1
        return 0.0

    monkeypatch.setattr(base, "cool_down", cool_down)
    return clock


def test_fastest_absorbs_a_slow_first_call_after_another_candidate(monkeypatch):
    """One whose first call after the other is slow (BLAS's threads waking) still wins,
    in either order: each sample follows an untimed call, as a benchmark's does."""
    from convbench.kernels.cpu import base

    clock = _fake_clock(monkeypatch, base)
    last = {"name": None}

    def a():
        clock["now"] += 0.005
        last["name"] = "a"

    def b():  # 2 ms, but 12 ms for its first call after a call of a
        clock["now"] += 0.012 if last["name"] == "a" else 0.002
        last["name"] = "b"

    assert base.fastest({"a": a, "b": b}) == "b"
    last["name"] = None
    assert base.fastest({"b": b, "a": a}) == "b"
    # and a candidate that is slower wherever it runs does not
    assert base.fastest({"a": a, "c": lambda: clock.__setitem__("now", clock["now"] + 0.009)}) \
        == "a"


def test_fastest_goes_by_the_median_sample_not_the_best_call(monkeypatch):
    """A lucky sample of the slower candidate does not win, an unlucky one of the faster
    one does not lose: on a shared machine single calls spread by 2x."""
    from convbench.kernels.cpu import base

    clock = _fake_clock(monkeypatch, base)

    def spread(typical, odd, odd_calls):
        calls = {"n": 0}

        def call():
            calls["n"] += 1
            clock["now"] += odd if calls["n"] in odd_calls else typical
        return call

    # calls 1 and 2 are the first call and round 1's untimed one; 3 is round 1's sample
    lucky_slow = spread(0.008, 0.003, {3})
    unlucky_fast = spread(0.006, 0.020, {5})
    assert base.fastest({"lucky_slow": lucky_slow, "unlucky_fast": unlucky_fast}) \
        == "unlucky_fast"


def test_fastest_times_rounds_of_samples_after_a_cool_down_and_an_untimed_call(monkeypatch):
    from convbench.kernels.cpu import base

    clock = _fake_clock(monkeypatch, base)
    calls = {"long": 0, "short": 0}

    def long_call():  # 12 ms: one call per sample, a cool-down before each
        calls["long"] += 1
        clock["now"] += 0.012

    def short_call():  # 2**-11 s: 21 calls per sample of at least 10 ms
        calls["short"] += 1
        clock["now"] += 2.0**-11

    rounds = base.FASTEST_ROUNDS
    assert base.FASTEST_SAMPLE_S == 0.01
    assert base.fastest({"long": long_call}) == "long"
    assert calls["long"] == 1 + rounds * (1 + 1)
    assert clock["cool_downs"] == rounds - 1  # none before the first round's sample
    clock["cool_downs"] = 0
    assert base.fastest({"short": short_call}) == "short"
    assert calls["short"] == 1 + rounds * (1 + 21)
    assert clock["cool_downs"] == 0  # calls under FASTEST_COOL_DOWN_FROM_S wake nothing


def test_fastest_warms_a_candidate_for_warm_s_after_a_pause(monkeypatch):
    """After a cool-down that paused, the idle cores come back slowly: the sample waits
    for WARM_S seconds of the candidate's own untimed calls, not one."""
    from convbench.kernels.cpu import base

    clock = _fake_clock(monkeypatch, base)
    monkeypatch.setattr(base, "cool_down", lambda limit: 0.02)  # every pause lasts 20 ms
    calls = {"n": 0}

    def call():  # 12 ms
        calls["n"] += 1
        clock["now"] += 0.012

    assert base.WARM_S == 0.05
    base.fastest({"only": call})
    rounds = base.FASTEST_ROUNDS
    # the first call; round 1 without a pause: one untimed call and the sample;
    # every later round: 5 warm calls (the first sum past 50 ms) and the sample
    assert calls["n"] == 1 + 2 + (rounds - 1) * (5 + 1)


def test_fastest_keeps_a_keyed_choice_per_thread_count(monkeypatch):
    """The same key, candidates and threads: the kept choice, untimed; else timed again."""
    import numba

    from convbench.kernels.cpu import base

    clock = _fake_clock(monkeypatch, base)
    base.forget_choices()
    calls = {"a": 0, "b": 0}

    def candidate(name, seconds):
        def call():
            calls[name] += 1
            clock["now"] += seconds
        return call

    first = {"a": candidate("a", 0.002), "b": candidate("b", 0.001)}
    assert base.fastest(first, key=("layer", 1)) == "b"
    timed = dict(calls)
    slower_now = {"a": candidate("a", 0.001), "b": candidate("b", 0.002)}
    assert base.fastest(slower_now, key=("layer", 1)) == "b"  # kept: nothing called
    assert calls == timed
    assert base.fastest(slower_now, key=("layer", 2)) == "a"  # another key is timed
    assert base.fastest(slower_now) == "a"  # no key: always timed
    threads = numba.get_num_threads()
    if threads > 1:
        # a scoped patch: undo() would also remove the fake clock
        with monkeypatch.context() as fewer_threads:
            fewer_threads.setattr(base.numba, "get_num_threads", lambda: threads - 1)
            assert base.fastest(slower_now, key=("layer", 1)) == "a"
    base.forget_choices()
    assert base.fastest(slower_now, key=("layer", 1)) == "a"
    base.forget_choices()


def test_a_winograd_layer_prepared_again_keeps_its_schedule():
    """A second prepare of the same layer reuses the first one's timed schedule."""
    import numpy as np

    from convbench import ConvProblem
    from convbench.kernels.cpu import base
    from convbench.registry import get_kernel

    base.forget_choices()
    p = ConvProblem.parse("mb2ic32ih12oc32kh3ph1")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(p.input_shape).astype(np.float32)
    w = rng.standard_normal(p.weight_shape).astype(np.float32)
    kernel = get_kernel("winograd")
    first = kernel.prepare(p, x, w, None)
    kept = [k for k in base._CHOICES if k[0][0] == "winograd forward"]
    if len(first.details["schedules"]) < 2:
        assert not kept  # one thread: nothing to choose
        return
    assert len(kept) == 1 and base._CHOICES[kept[0]] == first.details["schedule"]
    other = next(s for s in first.details["schedules"] if s != first.details["schedule"])
    base._CHOICES[kept[0]] = other
    assert kernel.prepare(p, x, w, None).details["schedule"] == other
    base.forget_choices()
