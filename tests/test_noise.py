"""How noisy a run's machine was, and the settings that slow a library on this CPU."""

import pytest

from convbench.measure import noise

AVX512 = {"sse2", "avx", "avx2", "fma", "avx512f"}


def snap(median, p10=None, p90=None, busy=0.0, own=0.0, wall=0.0, foreign=0.0, load=0.1):
    return {"calibration": {"median_s": median, "p10_s": p10 or median, "p90_s": p90 or median,
                            "reps": 100, "foreign_cores": foreign},
            "loadavg": [load, load, load], "cpu_mhz": [], "busy_s": busy, "own_cpu_s": own,
            "wall": wall}


def test_a_quiet_run_is_called_quiet():
    s = noise.noise(snap(1e-3, busy=10, own=5, wall=0), snap(1.02e-3, busy=20, own=15, wall=10))
    assert not s["noisy"] and s["foreign_cores"] == pytest.approx(0.0)
    assert noise.noise_line(s).startswith("Machine: quiet (calibration drift +2.0%")


@pytest.mark.parametrize("start, end, reason", [
    (snap(1e-3), snap(1.3e-3, wall=1), "ran +30% at the end"),
    (snap(1e-3, p10=0.8e-3, p90=1.4e-3), snap(1e-3, wall=1), "jittered"),
    (snap(1e-3, foreign=0.6), snap(1e-3, wall=1), "during the calibration at the start"),
    (snap(1e-3, busy=0, own=0, wall=0), snap(1e-3, busy=30, own=10, wall=20),
     "other processes used 1.00 cores on average"),
])
def test_each_sign_of_noise_makes_the_run_noisy_and_says_why(start, end, reason):
    s = noise.noise(start, end)
    assert s["noisy"] and any(reason in r for r in s["reasons"])
    assert noise.noise_line(s).startswith("**Machine: noisy**")


def test_the_calibration_times_a_fixed_workload():
    cal = noise.calibrate(0.05)
    assert cal["reps"] >= 5 and 0 < cal["p10_s"] <= cal["median_s"] <= cal["p90_s"]


def test_an_old_openblas_core_on_a_newer_cpu_is_a_warning():
    (w,) = noise.setting_warnings(None, AVX512, {"OPENBLAS_CORETYPE": "Haswell"})
    assert "OPENBLAS_CORETYPE=Haswell forces OpenBLAS's AVX2 kernels on this AVX512 CPU" in w
    assert noise.setting_warnings(None, AVX512, {"OPENBLAS_CORETYPE": "SkylakeX"}) == []
    assert noise.setting_warnings(None, {"avx2"}, {"OPENBLAS_CORETYPE": "Haswell"}) == []


def test_other_slowing_settings_are_warnings():
    warnings = noise.setting_warnings(64, AVX512, {"ONEDNN_MAX_CPU_ISA": "AVX2",
                                                   "NUMBA_CPU_NAME": "generic"})
    assert any("ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN" in w for w in warnings)
    assert any("NUMBA_CPU_NAME=generic" in w for w in warnings)
    assert any(w.startswith("64 threads on") for w in warnings)
    assert noise.setting_warnings(1, AVX512, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}) == []
