"""convbench report and roof: files, pictures, and tables that carry the records' numbers."""

import re

import numpy as np
import pytest

from convbench import cli
from convbench.measure import roof
from convbench.present.report import write_report
from convbench.problem import ConvProblem
from convbench.store.jsonl import write_records

pytest.importorskip("matplotlib", reason="reports need the 'plot' extra")
from matplotlib.image import imread  # noqa: E402

LAYERS = [('mb1ic64ih56oc64kh3ph1n"l3x3"', 3), ('mb1ic256ih14oc1024kh1n"l1x1"', 6),
          ('mb1ic3ih224oc64kh7sh2ph3n"l7x7"', 1)]
TIMES = {"direct": [4e-3, 2e-3, 9e-3], "im2col": [1e-3, 5e-4, 3e-3],
         "winograd": [7e-4, None, None], "onednn": [8e-4, 6e-4, 2e-3]}
ROOF = {"peak_gflops": 150.0, "bandwidth_gbs": 20.0}


def _records(scale=1.0):
    recs = [{"type": "header", "environment": {"hostname": "box", "cpu_model": "Test CPU",
                                               "roof": ROOF},
             "config": {"threads": 2}, "command": ["convbench", "run"], "started": "now"}]
    for i, (desc, repeat) in enumerate(LAYERS):
        p = ConvProblem.parse(desc)
        for kernel, times in TIMES.items():
            t = times[i]
            rec = {"type": "result", "problem": desc, "name": p.name, "repeat": repeat,
                   "kernel": kernel, "backend": "cpu", "flops": p.flops,
                   "kind": "baseline" if kernel == "onednn" else "kernel"}
            if t is None:
                rec.update(status="skipped", reason="needs 3x3")
            else:
                t *= scale
                rec.update(status="ok", gflops=p.flops / t / 1e9, time={"median_s": t},
                           error={"rel_l2": 1e-7 * (i + 1) * (2 if kernel == "direct" else 1),
                                  "bound_ratio": 0.5 + i})
            recs.append(rec)
    return recs


@pytest.fixture
def report(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_records(a, _records())
    write_records(b, _records(scale=2.0))
    out = tmp_path / "report"
    files = write_report([str(a), str(b)], out, budget=1.5e-7)
    return out, files


def test_every_file_exists_and_every_png_has_content(report):
    out, files = report
    names = {f.name for f in files}
    assert {"README.md", "index.html", "network.png"} <= names
    for run in ("1-a-", "2-b-"):
        for fig in ("gflops", "speedup", "roofline", "accuracy", "winners"):
            assert f"{run}{fig}.png" in names
    for f in files:
        assert f.exists() and f.stat().st_size > 0
        if f.suffix == ".png":
            image = imread(f)
            assert image.shape[0] > 200 and image.shape[1] > 300
            pixels = image[..., :3].reshape(-1, 3)
            assert pixels.std() > 0.05, f"{f.name} is (nearly) blank"
            assert len(np.unique((pixels * 255).astype(int), axis=0)) > 20, f.name
        text = f.read_text() if f.suffix in (".md", ".html") else ""
        for png in re.findall(r"[\w.-]+\.png", text):
            assert (out / png).exists(), png


def _table_after(markdown, heading):
    block = markdown.split(heading, 1)[1]
    rows = [line for line in block.splitlines() if line.startswith("|")]
    out = []
    for line in rows[2:]:
        out.append([c.strip() for c in line.strip("|").split("|")])
        if not block.split(line, 1)[1].lstrip("\n").startswith("|"):
            break
    return rows[0], out


def test_tables_carry_exactly_the_records_numbers(report):
    out, _ = report
    md = (out / "README.md").read_text()
    page = (out / "index.html").read_text()
    header, rows = _table_after(md, "### Throughput per layer (GFLOP/s)")
    assert header == "| layer | direct | im2col | winograd | onednn |"
    for i, (desc, _) in enumerate(LAYERS):
        p = ConvProblem.parse(desc)
        expected = [p.name] + [format(p.flops / t / 1e9, ".1f") if t else "—"
                               for t in (TIMES[k][i] for k in TIMES)]
        assert rows[i] == expected
        for cell in expected[1:]:
            assert f"<td>{cell}</td>" in page
    _, rows = _table_after(md, "### Speedup over onednn")
    for i in range(3):
        base = TIMES["onednn"][i]
        assert rows[i][1:] == [format(base / TIMES[k][i], ".2f") if TIMES[k][i] else "—"
                               for k in TIMES]
    _, rows = _table_after(md, "## Whole network")
    totals = {r[0]: r[1:] for r in rows}
    direct = sum(t * rep for t, (_, rep) in zip(TIMES["direct"], LAYERS, strict=True)) * 1e3
    assert totals["direct"] == [format(direct, ".2f"), format(2 * direct, ".2f")]
    assert totals["winograd"] == ["partial", "partial"]
    best = sum(min(TIMES[k][i] for k in ("direct", "im2col", "winograd") if TIMES[k][i]) * rep
               for i, (_, rep) in enumerate(LAYERS)) * 1e3
    assert totals["best-of-convbench"][0] == format(best, ".2f")
    _, rows = _table_after(md, "### Accuracy against the float64 reference")
    assert rows[1][1] == format(4e-7, ".1e") and rows[0][2] == format(1e-7, ".1e")
    _, rows = _table_after(md, "### Roofline")
    first = rows[0]
    p = ConvProblem.parse(LAYERS[0][0])
    ai = p.flops / p.tensor_bytes
    gf = p.flops / TIMES["direct"][0] / 1e9
    assert first == ["l3x3", "direct", format(ai, ".1f"), format(gf, ".1f"),
                     format(100 * gf / min(150.0, ai * 20.0), ".0f")]
    _, rows = _table_after(md, "### Winner per layer")
    # l3x3: winograd fastest (0.7 ms); within rel_l2 <= 1.5e-7 it still is (1e-7).
    # l1x1: im2col fastest but its rel_l2 is 2e-7 > 1.5e-7: nothing qualifies.
    assert rows[0] == ["l3x3", "winograd", "winograd"]
    assert rows[1] == ["l1x1", "im2col", "none"]


def test_one_section_per_suite_in_a_run(tmp_path):
    recs = _records()
    for rec in recs[1:]:
        rec["suite"] = "s1" if rec["name"] != "l7x7" else "s2"
    path = tmp_path / "multi.jsonl"
    write_records(path, recs)
    files = {f.name for f in write_report([str(path)], tmp_path / "r")}
    assert {"1-multi-s1-gflops.png", "2-multi-s2-gflops.png"} <= files
    md = (tmp_path / "r" / "README.md").read_text()
    assert "## multi @ box / s1" in md and "## multi @ box / s2" in md


def test_report_cli_and_bad_input(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    write_records(path, _records())
    assert cli.main(["report", str(path), "-o", str(tmp_path / "r")]) == 0
    assert "wrote 8 files" in capsys.readouterr().out
    empty = tmp_path / "empty.jsonl"
    write_records(empty, [{"type": "header"}])
    assert cli.main(["report", str(empty), "-o", str(tmp_path / "r2")]) == 2
    assert "holds no result records" in capsys.readouterr().err


def test_roof_measures_positive_limits_and_caches(tmp_path, monkeypatch):
    gemm = roof.gemm_gflops(n=256, repeats=2)
    assert gemm["numpy_matmul"] > 0.1 and "scipy_sgemm" in gemm
    bw = roof.bandwidth_gbs(elements=2**20, repeats=2)
    assert bw["stream_triad"] > 0.1 and bw["numpy_copy"] > 0.1
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    record = {"type": "roof", "host": "box", "gemm_gflops": gemm, "bandwidth": bw,
              "peak_gflops": max(gemm.values()), "bandwidth_gbs": bw["stream_triad"]}
    path = roof.save_cached(record)
    assert path == tmp_path / "convbench" / "roof-box.json"
    assert roof.load_cached("box") == record and roof.load_cached("other") is None
    table = roof.roof_table(record)
    assert f"{record['peak_gflops']:.1f} GFLOP/s" in table and "ridge point" in table


def test_gpu_tables_compare_with_cudnn_and_name_its_engine():
    from convbench.present.tables import layer_table

    base = {"problem": "mb1ic64ih56oc64kh3ph1", "name": "res2", "backend": "gpu",
            "status": "ok", "repeat": 1, "error": {"rel_l2": 1e-7, "bound_ratio": 0.1}}
    records = [
        dict(base, kernel="winograd", kind="kernel", gflops=2000.0,
             time={"median_s": 2e-4}),
        dict(base, kernel="cudnn", kind="baseline", gflops=4000.0, time={"median_s": 1e-4},
             details={"engine": "eng28_k2=1", "algorithm": "winograd"}),
    ]
    table = layer_table(records, "cudnn")
    assert "x cudnn" in table.splitlines()[0]
    assert "| cudnn `eng28_k2=1` (winograd) | 0.100 |" in table
    assert "| winograd | 0.200 | 2000.0 | 0.50 |" in table
