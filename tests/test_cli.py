"""The sweep and the ``convbench`` command, end to end (subprocesses where it matters)."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convbench import cli, registry
from convbench.measure.runner import SweepSettings, plan_tasks, run_sweep
from convbench.problem.suites import load_suite
from convbench.store.jsonl import load_run, write_records
from convbench.store.provenance import markdown_body
from convbench.store.records import Record

TESTS = Path(__file__).parent
SMALL = 'mb1ic8ih12oc8kh3ph1n"small3x3"'
SMALL_1X1 = 'mb1ic8ih12oc16kh1n"small1x1"'


def _convbench(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "convbench.cli", *args], capture_output=True,
                          text=True, timeout=300, **kwargs)


def _quick(*extra):
    return ("--min-reps", "2", "--min-time", "0", "--no-progress", *extra)


@pytest.mark.slow
def test_failing_and_crashing_kernels_become_records_and_the_sweep_completes(
        faulty_env, tmp_path):
    out = tmp_path / "run.jsonl"
    proc = _convbench("run", SMALL, SMALL_1X1, "--algo",
                      "direct,test_raising,test_crashing,im2col", "--out", str(out), *_quick())
    assert proc.returncode == 0, proc.stderr
    run = load_run(out)
    by_key = {(r["name"], r["kernel"]): r for r in run.records}
    assert len(run.records) == 8
    for layer in ("small3x3", "small1x1"):
        assert by_key[(layer, "test_raising")]["status"] == "failed"
        assert "RuntimeError: planted failure" in by_key[(layer, "test_raising")]["reason"]
        crashed = by_key[(layer, "test_crashing")]
        assert crashed["status"] == "failed" and "worker process died (signal 11)" \
            in crashed["reason"]
        # The kernels after the crash were still measured, in a fresh worker.
        assert by_key[(layer, "im2col")]["status"] == "ok"
        assert by_key[(layer, "direct")]["status"] == "ok"
    assert "4 measurement(s) failed" in proc.stderr
    assert "**FAILED**" in proc.stdout


def test_in_process_sweep_records_failures(faulty_env, tmp_path):
    from convbench.store.jsonl import ResultWriter

    settings = SweepSettings(min_reps=1, min_time=0, isolate=False)
    tasks = plan_tasks([("lenet5", x) for x in load_suite("lenet5", batch=1)],
                       ["test_raising", "im2col"], settings)
    with ResultWriter(tmp_path / "r.jsonl") as writer:
        outcome = run_sweep(tasks, settings, writer)
    assert [r["status"] for r in outcome.records] == ["failed", "ok"] * 3
    assert not outcome.interrupted


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_sigint_mid_sweep_leaves_a_valid_file(faulty_env, tmp_path):
    out = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "convbench.cli", "run", "--suite", "resnet50", "--batch", "1",
         "--algo", "test_sleeping", "--mode", "perf", "--out", str(out),
         "--min-reps", "20", "--min-time", "0", "--no-progress",
         # Blocks of one layer write each layer's records as it ends, so the test can
         # wait for two of them before it presses Ctrl-C.
         "--round-block", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell without job control starts background jobs with SIGINT ignored, and
        # Python keeps an ignored SIGINT ignored: give the sweep Ctrl-C as a terminal would.
        preexec_fn=_default_sigint)
    deadline = time.time() + 120
    while time.time() < deadline:
        if out.exists() and sum('"type": "result"' in line
                                for line in out.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("sweep produced no records")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is valid JSON
    results = [r for r in records if r["type"] == "result"]
    assert records[0]["type"] == "header" and 2 <= len(results) < 20
    assert all(r["status"] == "ok" for r in results)
    assert "### Per layer" in stdout  # the table of what was finished is still printed


@pytest.mark.slow
def test_resume_does_not_repeat_finished_work(faulty_env, tmp_path):
    out = tmp_path / "run.jsonl"
    args = ("run", "--suite", "lenet5", "--batch", "1", "--algo", "im2col,test_raising",
            "--out", str(out), *_quick())
    assert _convbench(*args).returncode == 0
    first = load_run(out)
    assert len(first.records) == 6
    proc = _convbench(*args, "--resume")
    assert proc.returncode == 0
    second = load_run(out)
    # Only the failed measurements are retried; the ok ones are reused.
    new = second.records[len(first.records):]
    assert {r["kernel"] for r in new} == {"test_raising"} and len(new) == 3
    assert len(second.headers) == 2
    assert "3 measurements reused" in proc.stdout
    assert proc.stdout.count("im2col") >= 3  # reused records still appear in the table


@pytest.mark.slow
def test_run_descriptor_batch_match_and_table(tmp_path):
    out, table = tmp_path / "run.jsonl", tmp_path / "table.md"
    proc = _convbench("run", "--suite", "resnet50", "--match", "res5_branch2[ab]",
                      "--batch", "1", "--algo", "im2col,onednn", "--out", str(out),
                      "--table", str(table), *_quick("--threads", "1"))
    assert proc.returncode == 0, proc.stderr
    run = load_run(out)
    assert {r["name"] for r in run.records} == {"res5_branch2a", "res5_branch2b"}
    assert {r["mb"] for r in run.records} == {1}
    header = run.headers[0]
    assert header["config"]["threads"] == 1
    assert header["command"][1:3] == ["run", "--suite"]
    env = header["environment"]
    assert env["threads"] == 1
    for key in ("cpu_model", "cpu_count", "blas", "python", "versions"):
        assert env[key]
    assert {"numpy", "numba", "scipy"} <= env["versions"].keys()
    for rec in run.records:
        assert rec["status"] == "ok" and rec["threads"] == 1
        assert rec["gflops"] == pytest.approx(rec["flops"] / rec["time"]["median_s"] / 1e9)
        assert rec["time"]["reps"] >= 2 and rec["error"]["rel_l2"] < 1e-5
        assert set(rec["time"]) >= {"median_s", "min_s", "p10_s", "p90_s", "compile_s",
                                    "first_call_s", "prepare_s", "times_s"}
    text = table.read_text()
    assert "x onednn" in text and "Whole network" in text
    assert "★" in text or "≈" in text  # a clean winner, or the tie the intervals show
    assert "Machine: " in text and "3 rounds in separate processes" in text
    (machine,) = run.noise
    assert set(machine) >= {"noisy", "reasons", "drift", "start", "end"}
    assert markdown_body(text).strip() in proc.stdout  # the file adds only its provenance


def _timed(median):
    """Three rounds of eight samples around ``median``, the rounds 2% apart."""
    rounds = [[median * (1 + 0.02 * (r - 1) + 0.001 * i) for i in range(8)] for r in range(3)]
    return {"median_s": median, "samples_by_round_s": rounds}


def test_compare_command_exit_status(tmp_path):
    rec = {"type": "result", "problem": SMALL, "backend": "cpu", "kernel": "direct",
           "name": "small3x3", "status": "ok", "time": _timed(1.0),
           "error": {"rel_l2": 1e-7}}
    old, same, worse = tmp_path / "old.jsonl", tmp_path / "same.jsonl", tmp_path / "worse.jsonl"
    failed = tmp_path / "failed.jsonl"
    write_records(old, [rec])
    write_records(same, [rec])
    write_records(worse, [{**rec, "time": _timed(1.5)}])
    write_records(failed, [{**rec, "status": "failed", "reason": "RuntimeError: boom"}])
    assert cli.main(["compare", str(old), str(same)]) == 0
    assert cli.main(["compare", str(old), str(worse)]) == 1
    assert cli.main(["compare", str(old), str(worse), "--time-tol", "0.6"]) == 0
    assert cli.main(["compare", str(old), str(failed)]) == 1  # ok, now failed
    assert Record(rec).key == (SMALL, "fwd", "cpu", "direct")


def test_list_suites_and_kernels(capsys):
    assert cli.main(["list", "suites"]) == 0
    out = capsys.readouterr().out
    assert "| resnet50 | 20 | 53 |" in out and "deepbench" in out
    assert cli.main(["list", "kernels", "--backend", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| winograd | cpu | kernel | 4/20 |" in out  # the 3x3 stride-1 layers of ResNet-50
    assert "| direct | cpu | kernel | 20/20 | 19/19 | 5/5 |" in out


@pytest.mark.parametrize("args, message", [
    (["run"], "nothing to run"),
    (["run", "--suite", "nope"], "no suite 'nope'"),
    (["run", "--suite", "lenet5", "--algo", "winograd9"], "unknown cpu algorithm"),
    (["run", "--suite", "lenet5", "--match", "zzz"], "selects no layer"),
    (["run", "mb1ic3ih5oc3kh7"], "output size must be positive"),
    (["run", "--suite", "lenet5", "--dtype", "int8"], "dtype must be"),
])
def test_usage_errors_exit_2_with_a_message(args, message, capsys):
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


def test_backend_without_kernels_says_so(monkeypatch):
    monkeypatch.setattr(registry, "algorithms", lambda backend="cpu": [])
    with pytest.raises(ValueError, match="no gpu kernels are registered"):
        registry.select_kernels("all", "gpu")


def test_gpu_backend_without_gpu_says_so(tmp_path):
    from convbench.store.environment import gpu_environment

    if gpu_environment().get("available"):
        pytest.skip("a GPU is present")
    proc = _convbench("run", SMALL, "--backend", "gpu", "--out", str(tmp_path / "g.jsonl"))
    assert proc.returncode == 2
    assert "no GPU present" in proc.stderr


@pytest.mark.slow
def test_a_suite_file_runs_what_it_can_and_skips_3d_lines(tmp_path):
    suite, out = tmp_path / "mixed.txt", tmp_path / "run.jsonl"
    suite.write_text('mb1ic4ih8oc4kh3n"two_d"\nmb1ic4id6ih6oc4kd3kh3n"three_d"\n')
    proc = _convbench("run", "--suite", str(suite), "--algo", "im2col", "--out", str(out),
                      *_quick())
    assert proc.returncode == 0, proc.stderr
    by_name = {r["name"]: r for r in load_run(out).records}
    assert by_name["two_d"]["status"] == "ok"
    assert by_name["three_d"]["status"] == "skipped"
    assert "3-D convolution is not supported" in by_name["three_d"]["reason"]
    bad = tmp_path / "bad.txt"
    bad.write_text('mb1ic4ih8oc4kh3\nmb1ic4ih8oc4kh3zz\n')
    proc = _convbench("run", "--suite", str(bad), "--out", str(tmp_path / "bad.jsonl"),
                      *_quick())
    assert proc.returncode == 2 and "bad.txt:2: cannot parse" in proc.stderr
    assert not (tmp_path / "bad.jsonl").exists()  # nothing measured


def test_run_takes_a_comma_list_of_suites(tmp_path, capsys):
    out = tmp_path / "two.jsonl"
    assert cli.main(["run", "--suite", "lenet5,alexnet", "--match", "^conv1$", "--algo",
                     "direct", "--mode", "accuracy", "--batch", "1", "--out", str(out),
                     "--no-isolate", "--no-progress"]) == 0
    run = load_run(out)
    assert sorted((r["suite"], r["name"]) for r in run.records) == [("alexnet", "conv1"),
                                                                    ("lenet5", "conv1")]
    assert run.headers[0]["config"]["suite"] == "lenet5+alexnet"
    assert "## lenet5+alexnet" in capsys.readouterr().out
    assert cli.main(["run", "--suite", "lenet5", "--input", "1,3,8,8"]) == 2
    assert "--input gives a model's input shape: it needs --model" in capsys.readouterr().err
