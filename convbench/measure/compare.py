"""The one place that decides what differs too much: errors against their envelope,
errors against a baseline, times between two runs.

By data kind, as benchdnn's ``compare.cpp``:

* **error of an output** against the float64 reference: the element-wise
  error model of the algorithm (:func:`conv_tolerance`);
* **error of a measurement** against a committed baseline of the same kernel
  on the same problem (:func:`compare_to_baseline`): drift;
* **time** of a measurement against the same measurement in another run
  (:func:`compare_runs`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from convbench.measure.metrics import UNIT_ROUNDOFF
from convbench.problem import ConvProblem
from convbench.store.jsonl import Run
from convbench.store.records import Record, as_record

METRICS = ("rel_l2", "max_rel", "bound_ratio")
DEFAULT_FACTOR = 2.0
#: Floors in units of the dtype's unit roundoff (bound_ratio is already in those units).
FLOOR_UNITS = {"rel_l2": 4.0, "max_rel": 16.0, "bound_ratio": 2.0}


# ------------------------------------------------------------- error of an output
#: ``C_algo`` of the error model. Winograd's transforms add terms (its
#: transformed operands can be ~16x larger than the direct products); FFT's
#: error grows with log2 of the transform size (multiplied in below).
ALGO_CONSTANTS = {"direct": 8.0, "im2col": 8.0, "winograd": 32.0, "fft": 8.0}
DEFAULT_CONSTANT = 8.0


def conv_tolerance(p: ConvProblem, ref: np.ndarray, scale: np.ndarray, algo: str,
                   factor: float = 1.0) -> np.ndarray:
    """Element-wise absolute tolerance for ``algo`` on problem ``p`` (see module docstring)."""
    acc_dtype = "float32" if p.dtype == "float16" else p.dtype
    u, u_out = UNIT_ROUNDOFF[acc_dtype], UNIT_ROUNDOFF[p.dtype]
    n = p.reduction_length + (1 if p.bias else 0)
    constant = ALGO_CONSTANTS.get(algo, DEFAULT_CONSTANT) * factor
    local = scale
    if algo == "fft":
        fft_points = p.padded_height * p.padded_width
        constant *= max(1.0, math.log2(max(fft_points, 2)))
        local = np.maximum(scale, scale.mean() if scale.size else 0.0)
    return constant * u * math.sqrt(n) * local + u_out * np.abs(ref)



# ------------------------------------------------------- error against a baseline
@dataclass
class Finding:
    """One measurement that fails the check."""

    kernel: str
    problem: str
    name: str
    what: str
    baseline: float | None = None
    measured: float | None = None
    limit: float | None = None


def threshold(metric: str, base: float, dtype: str, factor: float) -> float:
    """The largest value of ``metric`` that passes, given its baseline."""
    if base == 0.0:
        return 0.0
    floor = FLOOR_UNITS[metric] * (1.0 if metric == "bound_ratio" else UNIT_ROUNDOFF[dtype])
    return max(factor * base, floor)


def compare_to_baseline(records: Iterable[dict[str, Any]], entries: dict[tuple[str, str], Any],
                        factor: float = DEFAULT_FACTOR) -> tuple[list[Finding], int]:
    """Findings (regressions, failures, missing baselines) and the number of checks passed."""
    findings: list[Finding] = []
    passed = 0
    for rec in map(as_record, records):
        key = (rec["kernel"], rec["problem"])
        base = entries.get(key)
        if base is None:
            findings.append(Finding(rec.kernel, rec["problem"], rec.label,
                                    "no baseline (run convbench check --update)"))
            continue
        if rec.status == "failed":
            findings.append(Finding(rec.kernel, rec["problem"], rec.label,
                                    f"failed: {rec.get('reason')}"))
            continue
        if not rec.ok or base["status"] != "ok":
            if rec.status != base["status"]:
                findings.append(Finding(rec.kernel, rec["problem"], rec.label,
                                        f"status {base['status']} -> {rec.status}: "
                                        f"{rec.get('reason') or ''}"))
            else:
                passed += 1
            continue
        bad = False
        for metric in METRICS:
            old, new = base.get(metric), rec.error(metric)
            if old is None or new is None:
                continue
            limit = threshold(metric, float(old), rec["dtype"], factor)
            if not new <= limit:  # also catches NaN
                findings.append(Finding(rec.kernel, rec["problem"], rec.label, metric,
                                        float(old), new, limit))
                bad = True
        passed += not bad
    return findings, passed


# ----------------------------------------------------------------- time between runs
@dataclass
class Comparison:
    """One (problem, kernel) present in both runs."""

    key: tuple[str, str, str]
    old: Record
    new: Record
    time_ratio: float | None  # new / old median time; > 1 is slower
    error_ratio: float | None  # new / old rel_l2; > 1 is less accurate
    regressions: list[str]


def compare_runs(old: Run, new: Run, *, time_tol: float = 0.10,
                 err_tol: float = 2.0, err_floor: float = 1e-12) -> list[Comparison]:
    """Pair up records of two runs and flag regressions.

    A time regression is ``new/old > 1 + time_tol``; an error regression is
    ``new_rel_l2 > err_tol * max(old_rel_l2, err_floor)`` (the floor keeps
    exact-zero baselines from flagging rounding noise); a record that was ``ok``
    and is now ``failed`` is a regression too.
    """
    old_latest, new_latest = old.latest(), new.latest()
    out = []
    for key in sorted(old_latest.keys() & new_latest.keys()):
        a, b = old_latest[key], new_latest[key]
        regressions = []
        time_ratio = error_ratio = None
        if a.get("status") == "ok" and b.get("status") == "failed":
            regressions.append(f"failed: {b.get('reason')}")
        ta, tb = a.median_s, b.median_s
        if ta and tb:
            time_ratio = tb / ta
            if time_ratio > 1 + time_tol:
                regressions.append(f"time x{time_ratio:.2f}")
        ea, eb = a.rel_l2, b.rel_l2
        if ea is not None and eb is not None:
            error_ratio = eb / max(ea, err_floor)
            if eb > err_tol * max(ea, err_floor):
                regressions.append(f"rel_l2 x{error_ratio:.2f}")
        out.append(Comparison(key, a, b, time_ratio, error_ratio, regressions))
    return out
