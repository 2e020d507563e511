"""``convbench ab`` with real worker processes, on small fake trees (no Numba, seconds).

A fake tree is the least a BASE or HEAD may be: a ``convbench`` package with
``problem.ConvProblem.parse``, ``registry.get_kernel`` and a kernel whose
``prepare`` returns the call. Its kernel is a 1x1 convolution in NumPy; a
wrong tree adds an error to the output. These tests prove that each worker
imports its own tree (not the convbench installed in the environment), that
the records, table and provenance are written, and that a HEAD whose output
leaves its envelope exits 1. They assert nothing about speed: the threshold
is set far above any timing noise.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from convbench import cli
from convbench.ab.sides import WorkerError, WorkerProcess
from convbench.store.provenance import missing_fields, read_provenance

PROBLEM = textwrap.dedent('''
    class ConvProblem:
        def __init__(self, text):
            self.text, self.dir = text, "fwd"

        @classmethod
        def parse(cls, text):
            return cls(text)
''')

REGISTRY = textwrap.dedent('''
    import numpy as np

    ERROR = {error!r}


    class UnsupportedProblem(Exception):
        pass


    class Kernel:
        kind = "kernel"

        def __init__(self, name):
            self.name = name

        def prepare(self, p, x, w, bias):
            if self.name == "winograd":
                raise UnsupportedProblem("cpu winograd runs 3x3 filters, got 1x1")
            y = np.empty((x.shape[0], w.shape[0]) + x.shape[2:], dtype=x.dtype)

            def call():
                np.einsum("kc,nchw->nkhw", w[:, :, 0, 0], x, out=y)
                y[...] += ERROR
                return y

            return call


    def get_kernel(name, backend="cpu"):
        return Kernel(name)
''')


def fake_tree(root: Path, error: float = 0.0) -> Path:
    pkg = root / "convbench"
    (pkg / "problem").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "problem" / "__init__.py").write_text(PROBLEM)
    (pkg / "registry.py").write_text(REGISTRY.format(error=error))
    return root


@pytest.fixture
def suite(tmp_path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text('ic8ih6oc8kh1n"pw1"\nic16ih5oc8kh1n"pw2"\n')
    return path


def ab(tmp_path, suite, base, head, *more):
    out, table = tmp_path / "ab.jsonl", tmp_path / "ab.md"
    code = cli.main(["ab", str(base), str(head), "--suite", str(suite), "--batch", "1",
                     "--algo", "im2col,winograd", "--threads", "1", "--window", "0.002",
                     "--cooldown", "0", "--blocks", "1", "--threshold", "10",
                     "--out", str(out), "--table", str(table), *more])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    return code, lines, table


def test_a_over_a_of_two_fake_trees_is_same_and_each_worker_imports_its_tree(tmp_path, suite,
                                                                            capsys):
    base, head = fake_tree(tmp_path / "a"), fake_tree(tmp_path / "b")
    code, lines, table = ab(tmp_path, suite, base, head)
    assert code == 0
    header, records = lines[0], [r for r in lines if r.get("type") == "ab"]
    workers = header["config"]["ab"]["workers"]
    assert Path(workers["BASE"]) == base.resolve() / "convbench" / "__init__.py"
    assert Path(workers["HEAD"]) == head.resolve() / "convbench" / "__init__.py"
    assert not missing_fields(header["provenance"])
    assert [(r["name"], r["kernel"]) for r in records] == [
        ("pw1", "im2col"), ("pw1", "winograd"), ("pw2", "im2col"), ("pw2", "winograd")]
    timed = [r for r in records if r["kernel"] == "im2col"]
    assert {r["verdict"] for r in timed} == {"same"}
    for r in timed:
        assert r["pairs"] == 5 and len(r["ci95"]) == 2 and r["threshold"] == 10
        assert r["base"]["status"] == r["head"]["status"] == "ok"
        assert {"base_commit", "head_commit", "environment", "problem", "backend", "dir",
                "ratio"} <= set(r)
    refused = [r for r in records if r["kernel"] == "winograd"]
    assert {r["verdict"] for r in refused} == {"refused"}
    assert "3x3 filters" in refused[0]["reason"]
    assert not missing_fields(read_provenance(table))
    printed = capsys.readouterr()
    assert "Thresholds (t):" in printed.err and "--threshold" in printed.err
    assert "| pw1 | fwd | im2col |" in printed.out


def test_head_output_outside_its_envelope_exits_1(tmp_path, suite, capsys):
    base, head = fake_tree(tmp_path / "a"), fake_tree(tmp_path / "b", error=1e-2)
    code, lines, _ = ab(tmp_path, suite, base, head)
    assert code == 1
    records = [r for r in lines if r.get("type") == "ab" and r["kernel"] == "im2col"]
    assert {r["verdict"] for r in records} == {"head_fails"}
    assert all("outside its envelope" in r["reason"] for r in records)
    assert "exit 1 (a regression)" in capsys.readouterr().out


def test_a_tree_whose_convbench_lies_outside_it_is_refused(tmp_path):
    real = fake_tree(tmp_path / "real")
    tree = tmp_path / "linked"
    tree.mkdir()
    (tree / "convbench").symlink_to(real / "convbench")
    with pytest.raises(WorkerError, match="outside the tree"):
        WorkerProcess(tree, {}, label="HEAD")


def test_a_tree_that_cannot_be_imported_says_why(tmp_path):
    tree = tmp_path / "broken"
    (tree / "convbench").mkdir(parents=True)
    (tree / "convbench" / "__init__.py").write_text("raise RuntimeError('half a checkout')\n")
    with pytest.raises(WorkerError, match="HEAD worker .* did not start: RuntimeError: half"):
        WorkerProcess(tree, {}, label="HEAD")
