"""``convbench ab --count instructions``: the shim, the dump parsing, and a counted A/A run.

The counted run needs Valgrind (``make valgrind`` installs it as root; the
tests skip, naming the command, without it) and takes minutes: it is marked
slow.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import pytest

from convbench import cli
from convbench.ab import instructions
from convbench.ab.worker import callgrind_total

ROOT = Path(__file__).resolve().parents[1]
MISSING = instructions.missing_tools()
needs_valgrind = pytest.mark.skipif(MISSING is not None,
                                    reason=f"{MISSING} (or: make valgrind)")


def test_callgrind_totals_are_read_from_a_dump(tmp_path):
    dump = tmp_path / "callgrind.123.1"
    dump.write_text("# callgrind format\nversion: 1\nevents: Ir\nfn=(1) f\n0 5\n"
                    "totals: 123456789\n")
    assert callgrind_total(dump) == 123456789
    (tmp_path / "empty").write_text("events: Ir\n")
    with pytest.raises(ValueError, match="no totals line"):
        callgrind_total(tmp_path / "empty")


def test_count_environment_fixes_one_avx2_thread():
    env = instructions.count_environment("haswell")
    assert env["NUMBA_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "1"
    assert (env["NUMBA_CPU_NAME"], env["OPENBLAS_CORETYPE"]) == ("haswell", "Haswell")
    assert env["NUMBA_CPU_FEATURES"] == ""  # the target's own features, no AVX-512
    with pytest.raises(ValueError, match="AVX2 target Valgrind runs.*got 'skylake-avx512'"):
        instructions.count_environment("skylake-avx512")


@needs_valgrind
def test_the_shim_is_a_no_op_natively(tmp_path):
    library = instructions.build_shim(tmp_path)
    assert library == instructions.build_shim(tmp_path)  # compiled once
    shim = ctypes.CDLL(str(library))
    assert shim.cb_on_valgrind() == 0
    shim.cb_start()
    shim.cb_stop(b"label")


@pytest.mark.slow
@needs_valgrind
def test_a_over_a_counts_exactly_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    suite = tmp_path / "small.txt"
    suite.write_text('ic16ih10oc16kh3ph1n"small3x3"\n')
    out = tmp_path / "ab.jsonl"
    code = cli.main(["ab", str(ROOT), str(ROOT), "--count", "instructions", "--suite",
                     str(suite), "--batch", "1", "--algo", "im2col,direct", "--out", str(out)])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    counted = [r for r in records if r.get("type") == "ab"]
    assert len(counted) == 2
    for r in counted:
        assert r["count"] == "instructions" and r["verdict"] == "same"
        assert r["base_instructions"] > 1e4
        assert f"{r['ratio']:.3f}" == "1.000"
