"""The report of a tuned run: time-vs-error per layer and whole network per budget,
with tables that carry the records' numbers (fake measurements)."""

import pytest

from convbench.present.report import write_report
from convbench.problem import ConvProblem
from convbench.store.jsonl import write_records

pytest.importorskip("matplotlib", reason="reports need the 'plot' extra")
from matplotlib.image import imread  # noqa: E402

LAYERS = [('mb1ic64ih56oc64kh3ph1n"l3x3"', 3), ('mb1ic256ih14oc1024kh1n"l1x1"', 2)]
#: kernel -> per layer (ms, rel_l2); None: skipped.
MEASURED = {"direct": [(4.0, 2e-7), (2.0, 3e-7)], "im2col": [(3.0, 3e-7), (0.5, 2e-7)],
            "fft": [(1.0, 5e-6), (6.0, 4e-7)], "winograd": [(1.5, 8e-7), None],
            "onednn": [(1.2, 2e-7), (0.4, 2e-7)]}


def tune_records(budget=1e-6, tune=True, measured=MEASURED):
    config = {"threads": 2}
    if tune:
        config["tune"] = {"budget": budget, "metric": "rel_l2", "allow_vendor": False}
    recs = [{"type": "header", "environment": {"hostname": "box", "cpu_model": "Test CPU"},
             "config": config, "command": ["convbench", "tune"], "started": "now"}]
    for i, (desc, repeat) in enumerate(LAYERS):
        p = ConvProblem.parse(desc)
        for kernel, values in measured.items():
            rec = {"type": "result", "problem": desc, "name": p.name, "repeat": repeat,
                   "kernel": kernel, "backend": "cpu", "flops": p.flops, "suite": "toy",
                   "kind": "baseline" if kernel == "onednn" else "kernel"}
            if values[i] is None:
                rec.update(status="skipped", reason="needs 3x3")
            else:
                ms, err = values[i]
                rec.update(status="ok", gflops=p.flops / ms / 1e6, time={"median_s": ms / 1e3},
                           error={"rel_l2": err, "max_rel": 10 * err, "bound_ratio": 0.5})
            recs.append(rec)
    return recs


def rows_after(markdown, heading):
    block = markdown.split(heading, 1)[1].split("\n### ", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")]
            for line in block.splitlines() if line.startswith("|")][2:]


@pytest.fixture
def tuned_report(tmp_path):
    path = tmp_path / "tuned.jsonl"
    write_records(path, tune_records())
    out = tmp_path / "report"
    return out, write_report([str(path)], out)


def test_a_tuned_run_gets_the_tradeoff_figures(tuned_report):
    out, files = tuned_report
    names = {f.name for f in files}
    assert {"1-tuned-tradeoff.png", "1-tuned-budgets.png"} <= names
    for name in ("1-tuned-tradeoff.png", "1-tuned-budgets.png"):
        image = imread(out / name)
        assert image.shape[0] > 300 and image.shape[1] > 500
        assert image[..., :3].std() > 0.05, f"{name} is (nearly) blank"
    page = (out / "index.html").read_text()
    assert "<img src='1-tuned-tradeoff.png'" in page and "<img src='1-tuned-budgets.png'" in page


def test_the_choice_table_is_the_fastest_within_budget_with_the_pareto_front(tuned_report):
    out, _ = tuned_report
    md = (out / "README.md").read_text()
    rows = rows_after(md, "### Time vs rel_l2 per layer, tuned within 1e-06")
    # l3x3: fft (1 ms) is over budget; winograd 1.5 ms is within; onednn is not chosen.
    # The front: fft (fastest), then onednn (slower, more accurate); the rest are beaten.
    assert rows[0] == ["l3x3", "winograd", "1.500", "8.0e-07", "im2col",
                       "fft, onednn", "fft (5.0e-06)"]
    # l1x1: im2col 0.5 ms, direct next; the Pareto front is onednn alone (fastest, least error).
    assert rows[1] == ["l1x1", "im2col", "0.500", "2.0e-07", "direct", "onednn",
                       "onednn (2.0e-07)"]


def test_the_budget_table_sums_the_choice_per_budget_and_flags_fixed_kernels(tuned_report):
    out, _ = tuned_report
    md = (out / "README.md").read_text()
    header = md.split("### Whole network per error budget", 1)[1]
    assert "| rel_l2 budget | tuned plan ms | direct ms | im2col ms | fft ms | onednn ms | " \
           "onednn / tuned plan |" in header
    rows = {r[0]: r[1:] for r in rows_after(md, "### Whole network per error budget")}
    assert list(rows) == ["1e-07", "1e-06", "1e-05"]
    # 1e-07: nothing meets it on either layer.
    assert rows["1e-07"][0] == "none (2 layers unmet)"
    # 1e-06: winograd x3 + im2col x2; fft is over budget on l3x3 only.
    assert rows["1e-06"][0] == format(1.5 * 3 + 0.5 * 2, ".2f")
    assert rows["1e-06"][3] == format(1.0 * 3 + 6.0 * 2, ".2f") + " (over on 1)"
    assert rows["1e-06"][1] == format(4.0 * 3 + 2.0 * 2, ".2f")
    # 1e-05: fft for l3x3, im2col for l1x1.
    assert rows["1e-05"][0] == format(1.0 * 3 + 0.5 * 2, ".2f")
    assert rows["1e-05"][-1] == format((1.2 * 3 + 0.4 * 2) / (1.0 * 3 + 0.5 * 2), ".2f")


def test_a_run_without_tune_data_has_no_tradeoff_section(tmp_path):
    path = tmp_path / "plain.jsonl"
    write_records(path, tune_records(tune=False))
    files = {f.name for f in write_report([str(path)], tmp_path / "r")}
    assert not any("tradeoff" in f or "budgets" in f for f in files)
    assert "Time vs" not in (tmp_path / "r" / "README.md").read_text()


def test_with_three_winograd_tiles_the_budget_table_has_a_tuned_line_per_tile(tmp_path):
    """Each tile alone: what its error admits at each budget, and what it costs."""
    tiles = dict(MEASURED)
    tiles["winograd_4x4"] = [(0.9, 2e-6), None]
    tiles["winograd_6x6"] = [(0.8, 6e-6), None]
    tiles["fft"] = [(9.0, 5e-6), (6.0, 4e-7)]  # never the choice: the tiles decide l3x3
    path = tmp_path / "tiles.jsonl"
    write_records(path, tune_records(budget=3e-6, measured=tiles))
    out = tmp_path / "report"
    files = {f.name for f in write_report([str(path)], out)}
    assert "1-tiles-budgets.png" in files
    md = (out / "README.md").read_text()
    header = md.split("### Whole network per error budget", 1)[1]
    assert ("| rel_l2 budget | tuned plan ms | tuned, winograd only ms | "
            "tuned, winograd_4x4 only ms | tuned, winograd_6x6 only ms | direct ms |") in header
    rows = {r[0]: r[1:5] for r in rows_after(md, "### Whole network per error budget")}
    assert list(rows) == ["1e-07", "1e-06", "3e-06", "1e-05"]
    l1x1 = 0.5 * 2  # im2col on the 1x1 layer whatever the budget
    # 1e-6: only F(2x2,3x3) is within; without it l3x3 falls back to im2col (3 ms).
    assert rows["1e-06"] == [format(1.5 * 3 + l1x1, ".2f"), format(1.5 * 3 + l1x1, ".2f"),
                             format(3.0 * 3 + l1x1, ".2f"), format(3.0 * 3 + l1x1, ".2f")]
    # 3e-6: F(4x4,3x3) is admissible, F(6x6,3x3) (6e-6) is not.
    assert rows["3e-06"] == [format(0.9 * 3 + l1x1, ".2f"), format(1.5 * 3 + l1x1, ".2f"),
                             format(0.9 * 3 + l1x1, ".2f"), format(3.0 * 3 + l1x1, ".2f")]
    # 1e-5: F(6x6,3x3) is admissible and the fastest.
    assert rows["1e-05"][0] == rows["1e-05"][3] == format(0.8 * 3 + l1x1, ".2f")
