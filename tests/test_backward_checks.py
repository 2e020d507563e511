"""Directions through the harness: records and keys, the runner's inputs and envelopes, check
--direction, the exact fill, planted faults per direction, oneDNN's gradients, the tables."""

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import make_task

import convbench
from convbench import ConvProblem, cli, registry
from convbench.measure.compare import check_records, compare_runs, margins
from convbench.measure.runner import existing_keys, measure
from convbench.present.tables import (
    layer_table,
    training_step_note,
    training_step_records,
    training_step_table,
)
from convbench.store.jsonl import load_run, write_records
from convbench.store.records import Record

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import planted_faults  # noqa: E402

LAYERS = ['--dir=FWD_B mb2ic8ih9oc8kh3ph1n"a"', 'g2mb2ic8ih10iw9oc6kh3sh2ph1pw0dh1n"b"',
          'g8mb3ic8ih7oc8kh3ph1n"dw"', 'mb1ic6ih5oc4kh1n"pw"']
DIRECTIONS = ("bwd_d", "bwd_w", "bwd_wb")
needs_torch = pytest.mark.skipif(
    convbench.get_kernel("onednn").supports(ConvProblem.parse("ic1ih3oc1kh1")) is not None,
    reason="torch (oneDNN) is not installed")


def problems(direction, dtype="float32"):
    out = []
    for text in LAYERS:
        p = ConvProblem.parse(text).with_(dtype=dtype)
        out.append(replace(p, dir=direction, bias=direction == "bwd_wb"))
    return out


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_records_carry_the_direction_and_pass_their_envelope(direction):
    names = ["direct", "im2col"] + (["onednn"] if convbench.get_kernel("onednn").supports(
        problems(direction)[0]) is None else [])
    for dtype in ("float32", "float64"):
        records = [measure(make_task(p, n)) for p in problems(direction, dtype) for n in names]
        assert all(r["status"] == "ok" and r["dir"] == direction for r in records), \
            [r.get("reason") for r in records]
        assert all(0 <= r["error"]["envelope_ratio"] <= 1 for r in records), \
            [(r["kernel"], r["problem"], r["error"]["envelope_ratio"]) for r in records]
        assert all(Record(r).key[1] == direction and f"--dir={direction.upper()} " in r["problem"]
                   for r in records)
        if direction == "bwd_wb":
            assert all(set(r["error"]["parts"]) == {"dw", "db"} for r in records)
        assert check_records(records).findings == []


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_exact_fill_makes_direct_and_im2col_bit_exact_in_every_direction(direction):
    for p in problems(direction) + [replace(problems(direction)[0], mb=3, ih=200, iw=200)]:
        for name in ("direct", "im2col"):
            rec = measure(make_task(p, name, fill="exact"))
            assert rec["status"] == "ok" and rec["error"]["max_abs"] == 0.0, (name, str(p))
            assert check_records([rec], exact_fill=True).findings == []


def test_planted_faults_are_caught_in_every_direction_with_a_margin(capsys):
    registry._ensure_loaded()
    builtins = {n: registry.get_kernel(n) for n in ("direct", "im2col")}
    try:
        for direction, fault in planted_faults.BACKWARD_FAULTS.items():
            cases = problems(direction) + problems(direction, "float64")
            clean = [measure(make_task(p, fault.name)) for p in cases]
            registry.register(fault, replace=True)
            try:
                faulty = [measure(make_task(p, fault.name)) for p in cases]
            finally:
                registry.register(builtins[fault.name], replace=True)
            found = check_records(faulty).findings
            assert len(found) == len(cases), (direction, [f.problem for f in found])
            assert check_records(clean).findings == []
            for m in margins(clean, faulty, ("envelope_ratio",)):
                print(f"{direction} {fault.fault}: {m.kernel} largest legitimate "
                      f"{m.largest_legitimate:.3g}, smallest fault {m.smallest_fault:.3g}, "
                      f"margin {m.ratio:.3g}x")
                assert m.ratio > 10
    finally:
        for kernel in builtins.values():
            registry.register(kernel, replace=True)
    assert capsys.readouterr().out.count("margin") == 6


@needs_torch
def test_onednn_computes_every_direction_and_says_which_torch_backend_ran():
    for direction in DIRECTIONS:
        for p in problems(direction) + problems(direction, "float64"):
            rec = measure(make_task(p, "onednn"))
            assert rec["status"] == "ok" and rec["error"]["envelope_ratio"] <= 1
            backend = rec["details"]["torch_backend"]
            assert isinstance(backend, str) and backend not in ("", "unknown"), backend
    # A dense float32 layer of some size goes to oneDNN (torch keeps tiny ones and float64
    # for its own Slow2d): the record says which ran rather than assuming it.
    for direction in DIRECTIONS:
        p = ConvProblem.parse(f"--dir={direction.upper()} mb2ic16ih16oc16kh3ph1")
        assert measure(make_task(p, "onednn"))["details"]["torch_backend"] == "Mkldnn"


# ------------------------------------------------------------------------ the command
def _quick(*extra):
    return ("--min-reps", "1", "--min-time", "0", "--rounds", "2", "--cooldown", "0",
            "--no-progress", "--no-isolate", *extra)


def test_run_direction_records_each_direction_and_prints_a_training_step(tmp_path, capsys):
    suite = tmp_path / "tiny.txt"
    suite.write_text('mb1ic3ih12oc8kh3ph1n"input"\nmb1ic8ih12oc8kh3ph1n"mid"\n'
                     'mb1ic8ih12oc4kh1n"head"\n')
    out = tmp_path / "run.jsonl"
    args = ["run", "--suite", str(suite), "--algo", "direct,im2col",
            "--direction", "fwd,BWD_D,bwd_w", "--out", str(out), *_quick()]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    run = load_run(out)
    assert {(r["name"], r.dir) for r in run.records} == {
        (n, d) for n in ("input", "mid", "head") for d in ("fwd", "bwd_d", "bwd_w")}
    assert "### Whole network, bwd_d" in text and "### Training step" in text
    assert "The first line of the suite (input) is taken as the network's input layer" in text
    row = next(line for line in text.splitlines() if line.startswith("| best-of-convbench |")
               and "parts run" not in line and line.count("|") == 10)
    assert "| 8/8" in row  # 3 layers x 3 directions, less the input's bwd_d
    # --resume keys on the direction: nothing is measured again, and a new direction is.
    assert cli.main([*args, "--resume"]) == 0
    assert "(18 measurements reused from the file)" in capsys.readouterr().out
    assert len(load_run(out).records) == 18
    assert cli.main(["run", "--suite", str(suite), "--algo", "direct", "--direction",
                     "bwd_wb", "--out", str(out), "--resume", *_quick()]) == 0
    added = [r for r in load_run(out).records if r.dir == "bwd_wb"]
    assert len(added) == 3 and all("--dir=BWD_WB " in r["problem"] for r in added)


def test_a_quoted_descriptor_with_its_own_dir_knob_reaches_the_descriptor_parser(tmp_path):
    out = tmp_path / "run.jsonl"
    assert cli.main(["run", '--dir=BWD_W mb1ic4ih6oc4kh3n"knob"', "--algo", "im2col",
                     "--mode", "accuracy", "--out", str(out), "--no-progress",
                     "--no-isolate"]) == 0
    (rec,) = load_run(out).records
    assert rec.dir == "bwd_w" and rec["status"] == "ok"
    args = cli.build_parser().parse_args(["run", "--dir=BWD_D mb1ic4ih6oc4kh3"])
    assert args.descriptors == ["--dir=BWD_D mb1ic4ih6oc4kh3"] and args.direction is None
    args = cli.build_parser().parse_args(["run", "x", "--direc", "bwd_d"])
    assert args.direction == ["bwd_d"]  # other abbreviations still work
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "x", "--direction", "sideways"])


def test_check_direction_holds_each_direction_to_its_envelope(tmp_path, capsys):
    suite = tmp_path / "tiny.txt"
    suite.write_text('mb1ic4ih8oc4kh3ph1n"one"\ng2mb1ic4ih9oc6kh3sh2n"two"\n')
    base = ["check", "--suite", str(suite), "--algo", "direct,im2col", "--batch", "2",
            "--no-progress", "--no-isolate", "--baseline", str(tmp_path / "none.json")]
    assert cli.main([*base, "--direction", "bwd_d,bwd_w,bwd_wb"]) == 0
    assert "checked 24 measurements: 24 passed, 0 finding(s)" in capsys.readouterr().out
    assert cli.main([*base, "--direction", "bwd_d,bwd_w", "--fill", "exact",
                     "--dtype", "f32"]) == 0
    assert "checked 8 measurements: 8 passed" in capsys.readouterr().out
    assert cli.main([*base, "--direction", "bwd_w", "--update", "--dtype", "f64"]) == 0
    entries = __import__("json").loads((tmp_path / "none.json").read_text())
    assert all(e["dir"] == "bwd_w" for e in entries["entries"])


def test_list_kernels_says_which_directions_each_computes(capsys):
    assert cli.main(["list", "kernels", "--backend", "cpu", "--direction", "bwd_d"]) == 0
    out = capsys.readouterr().out
    assert "| direct | cpu | kernel | 20/20 | 19/19 | 5/5 | ready | fwd, bwd_d, bwd_w, " \
        "bwd_wb |" in out
    assert "| onednn | cpu | baseline |" in out


# ------------------------------------------------------------------ old files, tables
def _record(problem, kernel, median, direction=None, suite="net", name="l", kind="kernel"):
    rec = {"type": "result", "problem": problem, "name": name, "suite": suite, "repeat": 1,
           "kernel": kernel, "backend": "cpu", "kind": kind, "dtype": "float32", "mb": 1,
           "flops": 1000, "status": "ok",
           "time": {"median_s": median, "times_s": [median] * 3}, "error": {"rel_l2": 1e-7}}
    if direction is not None:
        rec["dir"] = direction
    return rec


def test_old_records_without_dir_read_as_the_forward_and_pair_with_new_ones(tmp_path):
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    write_records(old, [_record("mb1ic3ih5oc2kh3", "direct", 1.0)])
    write_records(new, [_record("mb1ic3ih5oc2kh3", "direct", 1.0, "fwd"),
                        _record("--dir=BWD_D mb1ic3ih5oc2kh3", "direct", 2.0, "bwd_d")])
    rec = load_run(old).records[0]
    assert rec.dir == "fwd" and rec.key == ("mb1ic3ih5oc2kh3", "fwd", "cpu", "direct")
    rows = compare_runs(load_run(old), load_run(new))
    assert [r.key for r in rows] == [("mb1ic3ih5oc2kh3", "fwd", "cpu", "direct")]
    assert existing_keys(load_run(new).records) == {
        ("mb1ic3ih5oc2kh3", "fwd", "cpu", "direct"),
        ("--dir=BWD_D mb1ic3ih5oc2kh3", "bwd_d", "cpu", "direct")}
    assert "[bwd_d]" in layer_table(load_run(new).records)


def test_training_step_sums_three_directions_and_leaves_out_the_input_layers_bwd_d():
    recs = []
    for name, text in (("first", "mb1ic3ih8oc4kh3"), ("second", "mb1ic4ih8oc4kh3")):
        p = ConvProblem.parse(text + f'n"{name}"')
        for d, t in (("fwd", 1.0), ("bwd_d", 2.0), ("bwd_w", 3.0)):
            q = replace(p, dir=d)
            recs.append(_record(str(q), "im2col", t, d, name=name))
            recs.append(_record(str(q), "onednn", 2 * t, d, name=name, kind="baseline"))
    chosen, left_out = training_step_records(recs)
    assert left_out == ["first"] and len(chosen) == 10
    table = training_step_table(recs)
    rows = {row[0]: row for row in table.rows}
    assert rows["im2col"][1:4] == ["2000.00", "2000.00", "6000.00"]
    assert rows["im2col"][4].startswith("10000.00") and rows["onednn"][4].startswith("20000.00")
    assert rows["best-of-convbench"][7].startswith("2.00") and rows["im2col"][8] == "5/5"
    assert "first" in training_step_note(recs) and "input layer" in training_step_note(recs)


# ------------------------------------------------------------- benchmarks/vs_onednn.py
def _vs_onednn():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "vs_onednn_backward", TESTS.parent / "benchmarks" / "vs_onednn.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["vs_onednn_backward"] = module
    spec.loader.exec_module(module)
    return module


def test_whole_network_ratio_sums_the_best_kernel_of_each_layer_pass_by_pass():
    from convbench.measure.peers import LayerComparison, whole_network_ratio
    a = LayerComparison("resnet50", "a", "--dir=BWD_D mb1ic4ih4oc4kh1", repeat=3,
                        medians_ms={"im2col": 1.0, "direct": 2.0, "onednn": 1.0},
                        samples_ms={"im2col": [1.0, 1.0, 1.2], "direct": [2.0] * 3,
                                    "onednn": [1.0, 1.1, 0.9]})
    b = LayerComparison("resnet50", "b", "--dir=BWD_D mb1ic4ih8oc4kh1",
                        medians_ms={"im2col": 4.0, "direct": 2.0, "onednn": 2.0},
                        samples_ms={"im2col": [4.0] * 3, "direct": [2.0, 2.0, 2.0],
                                    "onednn": [2.0, 1.8, 2.4]})
    ratio, lo, hi, theirs, ours = whole_network_ratio([a, b], ["direct", "im2col"], "onednn")
    # pass totals: onednn 3*1.0+2.0=5.0, 3.3+1.8=5.1, 2.7+2.4=5.1; best 3*1+2=5, 5, 5.6
    assert (theirs, ours) == (pytest.approx(5.1), pytest.approx(5.0))
    assert ratio == pytest.approx(1.0) and lo == pytest.approx(5.1 / 5.6) and \
        hi == pytest.approx(1.02)
    assert whole_network_ratio([a], ["fft"], "onednn") is None


def test_the_comparison_reports_each_backward_direction_with_its_targets():
    vs = _vs_onednn()
    from convbench.measure.peers import LayerComparison
    rows = []
    for name, text in (("res2_branch2b", "mb8ic64ih56oc64kh3ph1"), ("res5_branch2c",
                                                                    "mb8ic512ih7oc2048kh1")):
        p = replace(ConvProblem.parse(text + f'n"{name}"'), dir="bwd_d")
        rows.append(LayerComparison(
            "resnet50", name, str(p), repeat=2,
            ratios={"im2col": {"onednn_best": 0.9}, "winograd": {"onednn_best": 1.2}},
            intervals={"im2col": {"onednn_best": (0.8, 1.0)},
                       "winograd": {"onednn_best": (1.1, 1.3)}},
            medians_ms={"im2col": 10.0, "winograd": 7.5, "onednn_best": 9.0},
            samples_ms={"im2col": [10.0] * 5, "winograd": [7.2, 7.4, 7.5, 7.6, 7.8],
                        "onednn_best": [9.0] * 5},
            chosen={"onednn_best": {"configuration": "plain"}}))
    rows[1].ratios.pop("winograd")
    rows[1].medians_ms.pop("winograd")
    rows[1].samples_ms.pop("winograd")
    text = vs.full_report(rows, ["direct", "im2col", "winograd"],
                          {"pairs": 5, "threads": 2, "processes": 1})
    # Whole network, pass by pass: onednn 2*9+2*9 = 36; best 2*winograd + 2*10.
    assert text.startswith("### bwd_d") and \
        "| resnet50 | 8 | 35.0 | 36.0 | 1.03 [1.01, 1.05] |" in text
    assert "| best-of-convbench >= 0.8x oneDNN, whole ResNet-50, bwd_d | 2 | 1.03 [1.01, 1.05] " \
        "| yes |" in text
    # 9/7.8 = 1.15 is the lower end of [min, max] over the passes: it clears 1.0.
    assert "| winograd bwd_d >= 1.0x oneDNN, 3x3 s1 C,K>=64 of ResNet-50 (geometric mean) | 1 " \
        "| 1.20 [1.15, 1.25] | yes |" in text
    assert "| resnet50 | res2_branch2b | 8 | 2 | 9.000 | plain | — | 0.90 | 1.20 | winograd |" \
        in text
