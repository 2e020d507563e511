"""``convbench ab``: verdicts, bootstrap, thresholds and the pairing, on a fake clock.

The pairing runs against :mod:`tests.ab_fakes`' machine model (two speed states
1.9x apart that flip every 10-30 s, a slow drift, per-process and per-call
noise), so that A/A, a 12% slowdown, a speed-up and an unresolvable case are
decided by the same code as a real run, in seconds and without timing anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ab_fakes import FakeClock, FakeMachine, FakeSide

from convbench import cli
from convbench.ab import thresholds as th
from convbench.ab.controller import (
    BASE_FAILS,
    HEAD_FAILS,
    REFUSED,
    AbSettings,
    compare_trees,
    exit_status,
)
from convbench.ab.schedule import AbTask, PairingSettings
from convbench.ab.verdict import block_ratio, bootstrap_interval, judge, verdict

#: Eight small layers (3x3, 1x1, strided): the fake clock times them, the reference checks them.
LAYERS = ['mb1ic8ih10oc8kh3ph1n"l1"', 'mb1ic8ih12oc16kh1n"l2"', 'mb1ic16ih8oc8kh3ph1n"l3"',
          'mb1ic8ih9oc8kh3sh2ph1n"l4"', 'mb1ic4ih16oc8kh3ph1n"l5"', 'mb1ic16ih6oc16kh1n"l6"',
          'mb1ic8ih7oc4kh3ph1n"l7"', 'mb1ic12ih8oc12kh3ph1n"l8"']
KERNELS = ("im2col", "winograd", "direct")


def tasks() -> list[AbTask]:
    return [AbTask(kernel=k, descriptor=d, name=d.split('"')[1]) for d in LAYERS
            for k in KERNELS]


def fake_run(head_slowdown=None, *, threshold=0.05, seed=1, process_sigma=0.02,
             head_wrong=None, head_refuses=None, base_refuses=None):
    """A whole ``ab`` run of :func:`tasks` on fake sides; its records."""
    clock = FakeClock()
    machine = FakeMachine(clock, seed=seed, process_sigma=process_sigma)
    started = []

    def start_pair(i):
        pair = (FakeSide(machine, refuses=base_refuses),
                FakeSide(machine, head_slowdown, head_wrong, head_refuses))
        started.append(pair)
        return pair

    thresholds = th.Thresholds({k: threshold for k in KERNELS}, {k: "test" for k in KERNELS})
    settings = AbSettings(pairing=PairingSettings(seed=seed), threads=2, seed=seed)
    outcome = compare_trees(Path("base"), Path("head"), tasks(), settings, thresholds,
                            start_pair=start_pair, clock=clock)
    assert len(started) == settings.pairing.pairs >= 5
    assert all(side.closed for pair in started for side in pair)
    return outcome.records


def verdicts(records, kernel):
    return [r["verdict"] for r in records if r["kernel"] == kernel]


# ---------------------------------------------------------------- the rule itself
@pytest.mark.parametrize(("ratio", "ci", "expected"), [
    (1.12, (1.06, 1.18), "slower"),
    (1.12, (0.99, 1.18), "unclear"),   # beyond 1 + t but the interval reaches 1, and 1 + 2t
    (1.04, (1.02, 1.06), "same"),      # significant but below 1 + t
    (0.90, (0.86, 0.94), "faster"),
    (1 / 1.05, (0.93, 0.99), "faster"),  # exactly 1/(1 + t)
    (1.0, (0.85, 1.02), "unclear"),    # reaches below 1 - 2t
    (1.0, (0.95, 1.05), "same"),
    (1.05, (1.01, 1.09), "slower"),    # exactly 1 + t
])
def test_verdict_follows_the_rule(ratio, ci, expected):
    assert verdict(ratio, ci, 0.05) == expected


def test_verdict_refuses_a_threshold_that_is_not_positive():
    with pytest.raises(ValueError, match="threshold must be positive, got 0"):
        verdict(1.0, (0.9, 1.1), 0.0)


def test_block_ratio_cancels_a_linear_drift():
    # BASE 1.0 and HEAD 1.1 under a drift of +0.1 per window: ABBA sums the drift evenly.
    drift = [0.0, 0.1, 0.2, 0.3]
    assert block_ratio("ABBA", [1.0 + drift[0], 1.1 + drift[1], 1.1 + drift[2],
                                1.0 + drift[3]]) == pytest.approx(2.5 / 2.3)
    assert block_ratio("BAAB", [2.0, 1.0, 1.0, 2.0]) == 2.0
    with pytest.raises(ValueError, match="two of each side"):
        block_ratio("ABAA", [1, 1, 1, 1])


def test_bootstrap_interval_is_seeded_and_spans_the_pairs():
    clusters = [[1.01, 1.03], [0.98, 1.0], [1.05, 1.04], [0.99, 1.02], [1.0, 1.01]]
    first = bootstrap_interval(clusters, seed=3)
    assert first == bootstrap_interval(clusters, seed=3)
    assert min(min(c) for c in clusters) <= first[0] <= first[1] <= max(max(c) for c in clusters)
    # Unequal clusters take the slower path to the same kind of answer.
    ragged = [*clusters[:-1], [1.0]]
    lo, hi = bootstrap_interval(ragged, seed=3)
    assert 0.98 <= lo <= hi <= 1.05


def test_judge_of_identical_pairs_has_a_point_interval():
    result = judge([[1.2], [1.2], [1.2], [1.2], [1.2]], 0.05)
    assert result.ci95 == pytest.approx((1.2, 1.2))
    assert result.verdict == "slower"
    assert (result.pairs, result.blocks) == (5, 5)


# ---------------------------------------------------------------- the fake-clock runs
def test_a_over_a_is_same_and_exits_0():
    records = fake_run()
    assert {r["verdict"] for r in records} == {"same"}
    assert exit_status(records) == 0
    assert all(r["pairs"] == 5 and r["blocks"] == 10 for r in records)


def test_a_12_percent_slowdown_of_one_kernel_is_slower_on_it_alone_and_exits_1():
    records = fake_run({"im2col": 1.12})
    assert set(verdicts(records, "im2col")) == {"slower"}
    for kernel in ("winograd", "direct"):
        assert "slower" not in verdicts(records, kernel)
    assert exit_status(records) == 1
    ratios = [r["ratio"] for r in records if r["kernel"] == "im2col"]
    assert all(1.05 < x < 1.25 for x in ratios)  # 1.12 times the five pairs' process luck


def test_a_speedup_is_faster_and_exits_0():
    records = fake_run({"winograd": 0.85})
    assert set(verdicts(records, "winograd")) == {"faster"}
    assert set(verdicts(records, "im2col")) == {"same"}
    assert exit_status(records) == 0


def test_processes_that_differ_more_than_the_threshold_are_unclear():
    # Fresh processes 25% apart: five pairs cannot place a ratio within +-2t of 1.
    records = fake_run(process_sigma=0.25)
    wide = [r for r in records if r["verdict"] == "unclear"]
    assert len(wide) >= len(records) / 2
    assert all(r["ci95"][0] < 0.9 or r["ci95"][1] > 1.1 for r in wide)


def test_head_output_outside_its_envelope_exits_1_although_it_is_not_slower():
    records = fake_run(head_wrong={"direct"})
    direct = [r for r in records if r["kernel"] == "direct"]
    assert {r["verdict"] for r in direct} == {HEAD_FAILS}
    assert all("outside its envelope" in r["reason"] for r in direct)
    assert all(r["ratio"] is None for r in direct)  # not timed
    assert set(verdicts(records, "im2col")) == {"same"}
    assert exit_status(records) == 1


def test_a_refusal_in_head_of_what_base_ran_exits_1_and_one_in_base_is_left_out():
    records = fake_run(head_refuses={"im2col"})
    assert set(verdicts(records, "im2col")) == {HEAD_FAILS}
    assert exit_status(records) == 1
    records = fake_run(base_refuses={"im2col"}, head_refuses={"im2col"})
    assert set(verdicts(records, "im2col")) == {REFUSED}
    assert exit_status(records) == 0
    assert BASE_FAILS not in {r["verdict"] for r in records}


# ---------------------------------------------------------------- thresholds
def test_calibration_from_a_over_a_resolves_the_12_percent_slowdown():
    aa = fake_run(threshold=0.5)
    found = {k: th.calibrate_kernel([r["block_ratios"] for r in aa if r["kernel"] == k])
             for k in KERNELS}
    for k in KERNELS:
        assert th.MIN_THRESHOLD <= found[k].t < 0.10
        assert found[k].layers == len(LAYERS)
        assert found[k].quantile == pytest.approx(1 - 0.05 / len(LAYERS))
    records = fake_run({"im2col": 1.12}, threshold=max(v.t for v in found.values()), seed=2)
    assert set(verdicts(records, "im2col")) == {"slower"}
    assert exit_status([r for r in records if r["kernel"] != "im2col"]) == 0


def test_more_layers_raise_the_threshold():
    layer = [[1.02, 0.99], [0.97, 1.01], [1.03, 1.0], [0.98, 1.02], [1.01, 0.99]]
    few = th.calibrate_kernel([layer] * 2)
    many = th.calibrate_kernel([layer] * 40)
    assert many.t > few.t
    assert few.t == th.calibrate_kernel([layer] * 2).t  # seeded


def test_calibrate_refuses_nothing_to_calibrate():
    with pytest.raises(ValueError, match="no A/A ratios"):
        th.calibrate_kernel([[], [[]]])


def test_thresholds_are_stored_per_machine_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fp = {"id": "abc123def456", "backend": "cpu"}
    k = th.KernelThreshold(t=0.07, layers=20, pairs=5, quantile=0.9975, alpha=0.05)
    path = th.save(fp, 2, {"im2col": k}, {"base_commit": "0123456789"})
    assert path == tmp_path / "convbench" / "ab" / "thresholds-abc123def456.json"
    assert json.loads(path.read_text())["settings"]["threads=2"]["kernels"]["im2col"]["t"] == 0.07
    got = th.thresholds_for(["im2col", "direct"], "abc123def456", 2)
    assert got.of("im2col") == 0.07 and "calibrated" in got.source["im2col"]
    assert got.of("direct") == th.DEFAULT_THRESHOLD
    assert "ab --calibrate BASE" in got.source["direct"]
    # Another thread count, another machine: not this calibration.
    assert th.thresholds_for(["im2col"], "abc123def456", 1).of("im2col") == th.DEFAULT_THRESHOLD
    assert th.thresholds_for(["im2col"], "ffffffffffff", 2).of("im2col") == th.DEFAULT_THRESHOLD
    over = th.thresholds_for(["im2col"], "abc123def456", 2, override=0.2)
    assert over.of("im2col") == 0.2 and over.source["im2col"] == "--threshold"


def test_cache_dir_defaults_to_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert th.cache_dir() == tmp_path / ".cache" / "convbench" / "ab"


# ---------------------------------------------------------------- the command line
def test_ab_refuses_bad_trees_and_settings(tmp_path, capsys):
    assert cli.main(["ab", str(tmp_path / "nowhere"), str(tmp_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert cli.main(["ab", str(tmp_path), str(tmp_path), "--match", "conv1"]) == 2
    assert "has no convbench/__init__.py" in capsys.readouterr().err
    assert cli.main(["ab", str(tmp_path), "--match", "conv1"]) == 2
    assert "ab takes BASE and HEAD: got 1 tree(s)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 5"):
        PairingSettings(pairs=3)


def test_count_instructions_refuses_a_baseline(capsys):
    root = str(Path(__file__).resolve().parents[1])
    code = cli.main(["ab", root, root, "--count", "instructions",
                     "--algo", "im2col,onednn", "--match", "conv1"])
    err = capsys.readouterr().err
    assert code == 2
    if "valgrind is not installed" not in err:
        assert "onednn is a baseline" in err and "leave it out of --algo" in err


def test_compare_points_to_ab(tmp_path, capsys):
    from convbench.cli.compare import separate_runs_note

    note = separate_runs_note(0.21)
    assert "cannot resolve changes below the noise printed above (+-21%)" in note
    assert "convbench ab BASE HEAD" in note


# ---------------------------------------------------------------- the planted slowdown
def _slowdown_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ab_slowdown.py"
    spec = importlib.util.spec_from_file_location("ab_slowdown", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_planted_slowdown_redoes_an_eighth_of_every_gemm_with_the_same_result():
    import numpy as np

    slowdown = _slowdown_module()
    source = (Path(__file__).resolve().parents[1] / "kernels" / "cpu" / "im2col.py").read_text()
    patched = slowdown.patch_im2col(source)
    assert patched.count("_matmul_an_eighth_twice(") == source.count("np.matmul(") + 1
    compile(patched, "im2col.py", "exec")
    with pytest.raises(ValueError, match="patched already"):
        slowdown.patch_im2col(patched)
    with pytest.raises(ValueError, match="no np.matmul"):
        slowdown.patch_im2col("import numpy as np\n")
    space: dict = {"np": np}
    exec(slowdown.HELPER, space)  # noqa: S102 -- the helper the patch appends
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 16, 9)), rng.standard_normal((3, 2, 9, 5))
    out = np.empty((3, 2, 16, 5))
    assert space["_matmul_an_eighth_twice"](a, b, out=out) is out
    np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-12, atol=1e-12)
