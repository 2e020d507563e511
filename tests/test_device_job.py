"""benchmarks/device_job.sh fits one short device call: its time boxes, its order."""

import re
import subprocess
from pathlib import Path

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
