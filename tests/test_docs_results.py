"""The documentation's results tables come from the committed files and only from them: a table
shows the file's figures with its provenance, and a missing file gives a message and a failed
``-W`` build, never a number.

Needs Sphinx (the ``docs`` extra, which ``make docs`` installs); skipped without it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="Sphinx is not installed: the docs extra "
                                     "(pip install -e '.[docs]', as make docs does)")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

import convbench_results as ext  # noqa: E402 -- docs/_ext on the path first

from convbench.store.provenance import combined, missing_fields, with_json  # noqa: E402

#: Ratios no committed file holds, so that finding them in a page proves where they came from.
RATIOS = {"res2": {"im2col": 0.8125, "winograd": 1.4375}, "res3": {"im2col": 1.1875,
                                                                  "winograd": 0.5625}}
COMMIT = "0123abcdef"


def provenance() -> dict:
    record = {"date": "2026-12-01T10:00:00+00:00", "commit": COMMIT,
              "platform": {"backend": "cpu", "cpu_model": "Test CPU", "cpu_count": 2,
                           "cpu_isa": "avx2", "blas": ["openblas 0.3 Haswell"], "id": "f00d"},
              "versions": {"convbench": "0.1.0"}, "command": ["python", "benchmarks/x.py"],
              "repetitions": {"passes": 5}, "noise": {"verdict": "quiet"}}
    assert missing_fields(record) == []
    return record


def write_comparison(repo: Path, name: str = "cmp.json") -> Path:
    layers = [{"suite": "resnet50", "name": layer, "problem": f'mb8ic64ih56oc64kh3ph1n"{layer}"',
               "ratios": {k: {"onednn_best": r} for k, r in ratios.items()},
               "medians_ms": {"onednn_best": 2.0}} for layer, ratios in RATIOS.items()]
    data = {"kernels": ["im2col", "winograd"], "peers": ["onednn_best"], "layers": layers}
    path = repo / "results" / "cpu" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(with_json(data, provenance())))
    return path


def test_a_summary_is_computed_from_the_file(tmp_path):
    write_comparison(tmp_path)
    record, tables = ext.build_tables(tmp_path, "results/cpu/cmp.json", "peers-summary")
    assert record["commit"] == COMMIT
    (_, (header, rows)), = tables
    assert "geometric mean x onednn_best" in header
    by_kernel = {row[0]: row for row in rows}
    expected = math.sqrt(RATIOS["res2"]["winograd"] * RATIOS["res3"]["winograd"])
    assert by_kernel["winograd"][3] == f"{expected:.2f}"
    assert by_kernel["winograd"][2] == "2"  # layers
    assert dict(ext.provenance_lines(record))["machine"].startswith("Test CPU, 2 cores")


def test_a_file_of_several_runs_names_the_run_of_each_value():
    one, two = provenance(), {**provenance(), "commit": "fedcba9876"}
    lines = dict(ext.provenance_lines(combined({"a.json": one, "b.json": two})))
    assert lines["commit"] == f"{COMMIT} (a.json); fedcba9876 (b.json)"
    assert lines["date"] == one["date"]  # the same in both: said once
    assert lines["runs"] == "2"


def test_a_missing_file_gives_no_table(tmp_path):
    (tmp_path / "results").mkdir()
    with pytest.raises(ext.ResultsUnavailable, match="results/cpu/cmp.json is not in this"):
        ext.build_tables(tmp_path, "results/cpu/cmp.json", "peers-summary")


def test_a_file_computed_from_a_missing_file_gives_no_table(tmp_path):
    source = write_comparison(tmp_path, "earlier.json")
    derived = tmp_path / "results" / "cpu" / "derived.json"
    record = combined({"results/cpu/earlier.json": provenance(), "a run": provenance()})
    derived.write_text(json.dumps(with_json({"rows": [{"figure": "x", "old": 1.5}]}, record)))
    ext.build_tables(tmp_path, "results/cpu/derived.json", "rows", key="rows",
                     columns=["figure", "old"])
    source.unlink()
    with pytest.raises(ext.ResultsUnavailable,
                       match="computed from results/cpu/earlier.json, which is not in"):
        ext.build_tables(tmp_path, "results/cpu/derived.json", "rows", key="rows",
                         columns=["figure", "old"])


def test_a_file_without_provenance_gives_no_table(tmp_path):
    path = write_comparison(tmp_path)
    data = json.loads(path.read_text())
    del data["provenance"]
    path.write_text(json.dumps(data))
    with pytest.raises(ext.ResultsUnavailable, match="carries no provenance"):
        ext.build_tables(tmp_path, "results/cpu/cmp.json", "peers")


def test_pages_read_only_results(tmp_path):
    (tmp_path / "setup.json").write_text("{}")
    with pytest.raises(ValueError, match="reads files under results/"):
        ext.build_tables(tmp_path, "setup.json", "peers")
    write_comparison(tmp_path)
    with pytest.raises(ValueError, match="must be one of"):
        ext.build_tables(tmp_path, "results/cpu/cmp.json", "pie")


def test_a_pattern_takes_every_committed_file_it_matches(tmp_path):
    write_comparison(tmp_path, "cmp-b.json")
    write_comparison(tmp_path, "cmp-a.json")
    (tmp_path / "cmp-c.json").write_text("{}")  # outside results/: never a source
    assert ext.expand(tmp_path, "results/cpu/cmp-*.json") == ["results/cpu/cmp-a.json",
                                                             "results/cpu/cmp-b.json"]
    assert ext.expand(tmp_path, "*.json") == []
    assert ext.expand(tmp_path, "results/cpu/none-*.json") == []
    assert ext.expand(tmp_path, "results/cpu/gone.json") == ["results/cpu/gone.json"]


def test_rows_show_the_named_fields_of_each_record(tmp_path):
    path = tmp_path / "results" / "figures.json"
    path.parent.mkdir()
    figures = [{"figure": "whole network", "ratio": 0.8125, "ci": [0.75, 0.875],
                "new": {"onednn_best": [0.8125, 0.75, 0.875]}},
               {"figure": "winograd", "ratio": 1.0625, "new": {}}]
    path.write_text(json.dumps(with_json({"figures": figures}, provenance())))
    _, tables = ext.build_tables(tmp_path, "results/figures.json", "rows", key="figures",
                                 columns=["figure", "ratio", "ci", "new.onednn_best"])
    (_, (header, rows)), = tables
    assert header == ["figure", "ratio", "ci", "new.onednn_best"]
    assert rows == [["whole network", "0.812", "[0.75, 0.875]", "0.812 [0.75, 0.875]"],
                    ["winograd", "1.06", "—", "—"]]
    with pytest.raises(ValueError, match="needs :key: and :columns:"):
        ext.build_tables(tmp_path, "results/figures.json", "rows")
    with pytest.raises(ext.ResultsUnavailable, match="holds no list 'rows'"):
        ext.build_tables(tmp_path, "results/figures.json", "rows", key="rows", columns=["a"])


def build(repo: Path, out: Path, *flags: str) -> tuple[int, str]:
    """Build a one-page site asking for ``results/cpu/cmp.json``: exit status and page text."""
    from sphinx.cmd.build import build_main

    src = repo / "docs"
    src.mkdir(exist_ok=True)
    (src / "conf.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'docs' / '_ext')!r})\n"
        "extensions = ['convbench_results']\n"
        "convbench_results_root = '..'\n")
    (src / "index.rst").write_text("Results\n=======\n\n"
                                   ".. results-table:: results/cpu/cmp.json\n"
                                   "   :kind: peers\n")
    status = build_main(["-q", "-E", *flags, "-b", "html", "-d", str(out / "doctrees"),
                         str(src), str(out / "html")])
    page = out / "html" / "index.html"
    return status, page.read_text() if page.exists() else ""


def test_a_site_shows_the_file_and_drops_the_table_when_it_goes(tmp_path):
    repo = tmp_path / "repo"
    path = write_comparison(repo)
    status, page = build(repo, tmp_path / "with", "-W")
    assert status == 0
    assert "1.44" in page and "0.56" in page and COMMIT in page  # the figures, the provenance
    path.unlink()
    status, page = build(repo, tmp_path / "without")
    assert status == 0  # without -W the site builds, showing why the table is missing
    assert "Table dropped" in page and "results/cpu/cmp.json is not in this checkout" in page
    assert "1.44" not in page and "0.56" not in page and COMMIT not in page
    status, _ = build(repo, tmp_path / "strict", "-W")
    assert status != 0  # make docs builds with -W: a missing file fails it
