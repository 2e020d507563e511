"""benchmarks/device_job.sh fits one short device call: its time boxes, its order; and it
fails where the GPU tests fail, skip or time out."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from convbench.kernels.gpu.runtime import gpu_test_blockers, require_gpu_message

JOB = Path(__file__).parents[1] / "benchmarks" / "device_job.sh"


def defaults() -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^(\w+_S)=\$\{\w+:-(\d+)\}", JOB.read_text(),
                                             re.MULTILINE)}


def test_the_time_boxes_fit_five_minutes_and_leave_the_sweeps_time():
    d = defaults()
    assert d["TOTAL_S"] <= 300
    fixed = d["TESTS_S"] + d["VS_CUDNN_S"] + d["SANITIZER_S"]
    assert fixed + 60 <= d["TOTAL_S"]  # a minute at least for the sweeps


def test_the_phases_run_in_the_order_of_what_they_tell():
    text = JOB.read_text()
    order = [text.index(f'phase "{name}') for name in
             ("GPU tests", "vs_cudnn", "compute-sanitizer", "ResNet-50 sweeps")]
    assert order == sorted(order)


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(JOB)], check=False).returncode == 0


# ---------------------------------------------- a device run cannot pass by skipping
#: Stands in for Python: pytest prints the summary $FAKE_PYTEST names (or sleeps) and
#: records the CONVBENCH_REQUIRE_GPU it was given; every other command succeeds at once.
FAKE_PYTHON = """#!/usr/bin/env bash
case "$*" in
  *"-m pytest"*)
    echo "${CONVBENCH_REQUIRE_GPU-unset}" > "$FAKE_SEEN"
    case "$FAKE_PYTEST" in
      passed) echo "5 passed, 2 skipped in 0.10s"; exit 0 ;;
      skipped) echo "7 skipped in 0.10s"; exit 0 ;;
      failed) echo "1 failed, 4 passed, 2 skipped in 0.10s"; exit 1 ;;
      sleep) exec sleep 60 ;;
    esac ;;
esac
exit 0
"""


def run_job(tmp_path: Path, python: str, **env: str) -> subprocess.CompletedProcess:
    """device_job.sh with its work and output folders in ``tmp_path``."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
           "GPU_PYTHON": python, **env}
    return subprocess.run(["bash", str(JOB)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def fake_job(tmp_path: Path, pytest_says: str, **env: str) -> subprocess.CompletedProcess:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return run_job(tmp_path, str(fake), FAKE_PYTEST=pytest_says,
                   FAKE_SEEN=str(tmp_path / "seen"), **env)


def test_without_a_gpu_the_job_stops_at_its_first_check_and_fails(tmp_path):
    if not gpu_test_blockers():
        pytest.skip("a GPU and cuDNN are present: the job would run in full")
    done = run_job(tmp_path, sys.executable)
    message = require_gpu_message(gpu_test_blockers())
    assert done.returncode == 3, done.stdout + done.stderr
    assert message in done.stderr
    log = (tmp_path / "out" / "job.log").read_text()
    assert message in log and "== GPU tests" not in log  # stopped before the tests


def test_the_job_passes_when_gpu_tests_pass_and_tells_them_to_require_the_gpu(tmp_path):
    done = fake_job(tmp_path, "passed")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "seen").read_text().strip() == "1"


@pytest.mark.parametrize(("pytest_says", "why"), [
    ("skipped", "no GPU test passed (all skipped, or none collected)"),
    ("failed", "the GPU tests failed (pytest exit status 1)"),
    ("sleep", "the GPU tests timed out after 1 s"),
])
def test_the_job_fails_when_gpu_tests_fail_skip_or_time_out(tmp_path, pytest_says, why):
    done = fake_job(tmp_path, pytest_says, TESTS_S="1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"FAILED: {why}" in done.stderr
    log = (tmp_path / "out" / "job.log").read_text()
    assert f"FAILED: {why}" in log
    assert "== done" in log  # the later phases still ran
