"""The plan cache: what algo="auto" and convbench.plan find, what they refuse, and
concurrent writers (processes merging, two `convbench tune` runs) losing nothing.
"""

import json
import multiprocessing
import os
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import random_inputs

import convbench
from convbench.api import select_kernel
from convbench.plans import cache
from convbench.plans.choice import BudgetNotMet, Candidate, Choice
from convbench.problem import ConvProblem

P3 = ConvProblem.parse('mb2ic16ih12oc16kh3ph1n"res_like"')  # the rule picks winograd
CANDIDATES = [Candidate("winograd", "kernel", 1e-3, {"rel_l2": 9e-7, "max_rel": 1e-4}),
              Candidate("direct", "kernel", 3e-3, {"rel_l2": 2e-7, "max_rel": 1e-5}),
              Candidate("im2col", "kernel", 2e-3, {"rel_l2": 3e-7, "max_rel": 2e-5}),
              Candidate("onednn", "baseline", 5e-4, {"rel_l2": 2e-7, "max_rel": 1e-5})]


@pytest.fixture(autouse=True)
def plans_file(tmp_path, monkeypatch):
    """A fresh cache file in CONVBENCH_PLANS, and no warning remembered from another test."""
    path = tmp_path / "plans.json"
    monkeypatch.setenv(cache.PLANS_ENV, str(path))
    cache._warned.clear()
    cache._documents.clear()
    yield path
    cache._warned.clear()
    cache._documents.clear()


def write_plan(path, p, chosen, fingerprint=None, backend="cpu"):
    """Cache ``p`` with ``chosen`` as its choice among CANDIDATES (fake measurements)."""
    pick = next(c for c in CANDIDATES if c.kernel == chosen)
    choice = Choice(str(p), "rel_l2", 1e-6, False, pick, None, tuple(CANDIDATES))
    cache.merge_entries(path, fingerprint or cache.current_fingerprint(backend),
                        {cache.entry_key(p): cache.make_entry(choice, p, backend, 2)})


def other_platform(backend="cpu"):
    fp = dict(cache.current_fingerprint(backend), cpu_isa="sse", numba_cpu="pentium")
    fp["id"] = "0123456789ab"
    return fp


def test_the_default_location_is_documented_and_the_variable_overrides_it(monkeypatch,
                                                                          tmp_path):
    monkeypatch.delenv(cache.PLANS_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_path() == tmp_path / "xdg" / "convbench" / "plans.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(cache.default_path()).endswith(".cache/convbench/plans.json")
    monkeypatch.setenv(cache.PLANS_ENV, str(tmp_path / "mine.json"))
    assert cache.default_path() == tmp_path / "mine.json"


def test_the_key_is_the_problem_without_its_name_with_dtype_and_math_mode():
    assert cache.entry_key(P3) == "mb2ic16ih12oc16kh3ph1|float32|fp32"
    assert cache.entry_key(P3.with_(name="other")) == cache.entry_key(P3)
    assert cache.entry_key(P3.with_(fpmath="tf32")) == \
        "--attr-fpmath=tf32 mb2ic16ih12oc16kh3ph1|float32|tf32"
    assert cache.entry_key(P3.with_(dtype="float64")).endswith("|float64|fp64")
    assert cache.entry_key(P3.with_(mb=8)) != cache.entry_key(P3)


def test_auto_without_a_cache_is_the_documented_rule(plans_file):
    assert not plans_file.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_kernel(P3, "cpu").name == convbench.auto_kernel(P3).name == "winograd"


def test_conv2d_and_plan_take_the_cached_choice(plans_file):
    write_plan(plans_file, P3, "direct")
    x, w, b = random_inputs(P3)
    assert select_kernel(P3, "cpu").name == "direct"
    assert convbench.plan(x, w, padding=1).kernel.name == "direct"
    y = convbench.conv2d(x, w, padding=1, algo="auto")
    np.testing.assert_array_equal(y, convbench.conv2d(x, w, padding=1, algo="direct"))
    assert not np.array_equal(y, convbench.conv2d(x, w, padding=1, algo="winograd"))
    # Another batch size is another problem: the rule.
    assert select_kernel(P3.with_(mb=3), "cpu").name == "winograd"


def test_a_budget_chooses_again_among_the_kernels_the_cache_measured(plans_file):
    write_plan(plans_file, P3, "winograd")
    x, w, _ = random_inputs(P3)
    assert convbench.plan(x, w, padding=1).kernel.name == "winograd"
    assert convbench.plan(x, w, padding=1, budget=5e-7).kernel.name == "im2col"
    assert convbench.plan(x, w, padding=1, budget=2.5e-7).kernel.name == "direct"
    with pytest.raises(BudgetNotMet, match="the closest is direct with rel_l2 2e-07"):
        convbench.plan(x, w, padding=1, budget=1e-7)


def test_a_cache_from_another_platform_is_ignored_with_one_warning(plans_file):
    write_plan(plans_file, P3, "direct", fingerprint=other_platform())
    x, w, _ = random_inputs(P3)
    with pytest.warns(cache.PlanCacheWarning) as caught:
        for _ in range(3):
            assert select_kernel(P3, "cpu").name == "winograd"
            convbench.conv2d(x, w, padding=1, algo="auto")
            assert convbench.plan(x, w, padding=1).kernel.name == "winograd"
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "another platform (fingerprint 0123456789ab" in message
    assert "cpu_isa: 'sse' there" in message and "convbench tune" in message


def test_plans_of_another_backend_are_no_reason_to_warn(plans_file):
    gpu_like = dict(other_platform(), backend="gpu")
    write_plan(plans_file, P3, "direct", fingerprint=gpu_like)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_kernel(P3, "cpu").name == "winograd"


def test_this_platforms_plans_are_used_beside_another_platforms(plans_file):
    write_plan(plans_file, P3, "im2col", fingerprint=other_platform())
    write_plan(plans_file, P3, "direct")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_kernel(P3, "cpu").name == "direct"
    doc = json.loads(plans_file.read_text())
    assert len(doc["platforms"]) == 2


def test_a_file_that_is_not_a_plan_cache_is_ignored_with_one_warning(plans_file):
    plans_file.write_text('{"something": "else"}')
    with pytest.warns(cache.PlanCacheWarning, match="is not a plan cache") as caught:
        for _ in range(2):
            assert select_kernel(P3, "cpu").name == "winograd"
    assert len(caught) == 1
    with pytest.raises(ValueError, match="is not a plan cache"):
        cache.merge_entries(plans_file, cache.current_fingerprint("cpu"), {})


def test_a_newer_file_is_read_again(plans_file):
    write_plan(plans_file, P3, "direct")
    assert select_kernel(P3, "cpu").name == "direct"
    write_plan(plans_file, P3, "im2col")
    assert select_kernel(P3, "cpu").name == "im2col"


# ---------------------------------------------------------------- concurrent writers
def _merge_many(path, fingerprint, worker, count):
    for i in range(count):
        p = P3.with_(mb=1000 * worker + i + 1)
        entry = {"problem": str(p), "choice": {"kernel": "direct"}, "worker": worker}
        cache.merge_entries(path, fingerprint, {cache.entry_key(p): entry})


def test_concurrent_writers_lose_no_entry(plans_file):
    fp = cache.current_fingerprint("cpu")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_merge_many, args=(plans_file, fp, w, 30)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    entries = json.loads(plans_file.read_text())["platforms"][fp["id"]]["entries"]
    assert len(entries) == 120
    assert sorted({e["worker"] for e in entries.values()}) == [0, 1, 2, 3]
    assert not list(plans_file.parent.glob(".plans.json.*.tmp"))  # no temporary file left


def test_the_cache_file_is_as_readable_as_any_file_the_user_writes(plans_file):
    old = os.umask(0o022)
    try:
        write_plan(plans_file, P3, "direct")
    finally:
        os.umask(old)
    assert stat.S_IMODE(plans_file.stat().st_mode) == 0o644  # not mkstemp's 0600


def _tune(out, *descriptors, budget="1e-5", extra=()):
    return subprocess.Popen(
        [sys.executable, "-m", "convbench.cli", "tune", *descriptors, "--budget", budget,
         "--algo", "direct,im2col", "--min-reps", "2", "--min-time", "0", "--no-progress",
         "--out", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=out.parent)


@pytest.mark.slow
def test_two_tune_commands_on_one_file_both_land(plans_file):
    a = _tune(plans_file, 'mb1ic8ih10oc8kh3ph1n"first"', extra=("--records", "a.jsonl"))
    b = _tune(plans_file, 'mb1ic8ih10oc16kh1n"second"', 'mb2ic4ih6oc4kh3n"third"',
              extra=("--records", "b.jsonl"))
    for proc in (a, b):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert "merged into" in out
    doc = json.loads(plans_file.read_text())
    (platform,) = doc["platforms"].values()
    assert sorted(platform["entries"]) == ["mb1ic8ih10oc16kh1|float32|fp32",
                                           "mb1ic8ih10oc8kh3ph1|float32|fp32",
                                           "mb2ic4ih6oc4kh3|float32|fp32"]
    for entry in platform["entries"].values():
        assert entry["choice"]["kernel"] in ("direct", "im2col")
        assert entry["choice"]["error"]["rel_l2"] <= 1e-5
        assert {c["kernel"] for c in entry["candidates"]} == {"direct", "im2col"}


@pytest.mark.slow
def test_tune_names_the_closest_kernel_when_no_kernel_meets_the_budget(plans_file):
    proc = _tune(plans_file, 'mb1ic8ih10oc8kh3ph1n"tight"', budget="1e-12")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    assert "tight: no convbench kernel meets rel_l2 <= 1e-12" in err
    assert "the closest is " in err and "raise the budget to at least that" in err
    assert "none within budget" in out and not plans_file.exists()
    # In float64 the same budget is met, and the plan is kept under float64 and fp64.
    proc = _tune(plans_file, 'mb1ic8ih10oc8kh3ph1n"tight"', budget="1e-12",
                 extra=("--dtype", "f64"))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    (platform,) = json.loads(plans_file.read_text())["platforms"].values()
    assert list(platform["entries"]) == ["--dt=f64 mb1ic8ih10oc8kh3ph1|float64|fp64"]
