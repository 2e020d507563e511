"""Every ``convbench`` subcommand, one small run each, in this process.

The fast tier (``make test``) keeps these whatever else it leaves to ``make test-all``:
a subcommand added to the parser without a run here fails
:func:`test_every_subcommand_of_the_parser_has_a_run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from convbench import cli
from convbench.store.jsonl import load_run

TESTS = Path(__file__).parent
LAYER = 'mb1ic4ih8oc8kh3ph1n"small"'
QUICK = ("--no-isolate", "--no-progress")


def _run(tmp: Path) -> list[str]:
    return ["run", LAYER, "--algo", "direct,im2col", "--mode", "accuracy",
            "--out", str(tmp / "run.jsonl"), *QUICK]


def _check(tmp: Path) -> list[str]:
    return ["check", "--suite", "lenet5", "--algo", "direct", "--dtype", "f32",
            "--match", "^conv1$", *QUICK]


def _tune(tmp: Path) -> list[str]:
    return ["tune", LAYER, "--algo", "direct,im2col", "--budget", "1e-5", "--rounds", "1",
            "--min-reps", "2", "--min-time", "0", "--out", str(tmp / "plans.json"), *QUICK]


def _report(tmp: Path) -> list[str]:
    return ["report", str(TESTS / "data" / "sweep-a.jsonl"), "-o", str(tmp / "report")]


def _compare(tmp: Path) -> list[str]:
    data = TESTS / "data"
    return ["compare", str(data / "sweep-a.jsonl"), str(data / "sweep-a.jsonl")]


def _layers(tmp: Path) -> list[str]:
    return ["layers", "--from-torch", f"{TESTS / 'models' / 'toy_net.py'}:toy_net",
            "--input", "1x3x16x16", "-o", str(tmp / "toy.txt")]


def _roof(tmp: Path) -> list[str]:
    return ["roof", "--into", str(tmp / "roof.jsonl")]


def _list(tmp: Path) -> list[str]:
    return ["list", "kernels"]


def _ab(tmp: Path) -> list[str]:
    # Two stand-in trees (tests/test_ab_worker.py's): the real controller, workers and
    # verdicts, without compiling convbench's kernels in ten fresh processes.
    from test_ab_worker import fake_tree

    suite = tmp / "tiny.txt"
    suite.write_text('ic8ih6oc8kh1n"pw1"\n')
    return ["ab", str(fake_tree(tmp / "base")), str(fake_tree(tmp / "head")),
            "--suite", str(suite), "--batch", "1", "--algo", "im2col", "--threads", "1",
            "--window", "0.002", "--cooldown", "0", "--blocks", "1", "--threshold", "10",
            "--out", str(tmp / "ab.jsonl")]


#: One command line per subcommand (built in a test's temporary folder), and what it
#: leaves behind to look at.
RUNS = {"list": _list, "layers": _layers, "run": _run, "roof": _roof, "report": _report,
        "check": _check, "compare": _compare, "tune": _tune, "ab": _ab}


def subcommands() -> set[str]:
    """The subcommands the parser offers."""
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_every_subcommand_of_the_parser_has_a_run():
    missing = subcommands() - RUNS.keys()
    assert not missing, f"add a run of {sorted(missing)} to RUNS in {Path(__file__).name}"
    assert RUNS.keys() <= subcommands()


@pytest.mark.parametrize("name", sorted(RUNS))
def test_subcommand_runs(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # roof measures afresh
    monkeypatch.setenv("CONVBENCH_PLANS", str(tmp_path / "default-plans.json"))
    argv = RUNS[name](tmp_path)
    assert cli.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.strip(), f"convbench {name} printed nothing"
    if name == "run":
        records = load_run(tmp_path / "run.jsonl").records
        assert {(r["kernel"], r["status"]) for r in records} == {("direct", "ok"),
                                                                  ("im2col", "ok")}
    if name == "layers":
        assert "kh3" in (tmp_path / "toy.txt").read_text()
    if name == "tune":
        assert (tmp_path / "plans.json").exists()
    if name == "ab":
        assert '"verdict": "same"' in (tmp_path / "ab.jsonl").read_text()
