"""Accuracy regression checks against committed baselines (``convbench check``).

A baseline file holds, per (kernel, problem with dtype), the measured
``rel_l2``, ``max_rel`` and ``bound_ratio`` on seeded inputs. ``check``
re-measures and flags a metric when::

    new > max(factor * baseline, floor)        (factor = 2 by default)

with floors that absorb the last-bit differences between BLAS builds and CPUs:
``rel_l2`` 4u, ``max_rel`` 16u (u = unit roundoff of the dtype) and
``bound_ratio`` 2 (already in units of u). A baseline of exactly 0 (direct and
im2col in exact mode) must stay exactly 0: bit-exactness is the contract. A
measurement that was ``ok`` and now fails, or that has no baseline, fails too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convbench.accuracy import UNIT_ROUNDOFF
from convbench.results import number

METRICS = ("rel_l2", "max_rel", "bound_ratio")
DEFAULT_FACTOR = 2.0
#: Floors in units of the dtype's unit roundoff (bound_ratio is already in those units).
FLOOR_UNITS = {"rel_l2": 4.0, "max_rel": 16.0, "bound_ratio": 2.0}
SCHEMA = 1


def default_baseline_path(backend: str, fill: str) -> Path:
    """``results/accuracy/<backend>-<fill>.json`` under the current directory."""
    return Path("results") / "accuracy" / f"{backend}-{fill}.json"


def entry_key(entry: dict[str, Any]) -> tuple[str, str]:
    return (entry["kernel"], entry["problem"])


def entry_from_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A baseline entry from a sweep record (status, reason, metrics)."""
    error = rec.get("error") or {}
    entry = {"suite": rec.get("suite"), "name": rec.get("name"), "problem": rec["problem"],
             "kernel": rec["kernel"], "dtype": rec["dtype"], "status": rec["status"]}
    if rec["status"] == "ok":
        entry.update({m: number(error.get(m)) for m in METRICS})
    else:
        entry["reason"] = rec.get("reason")
    return entry


@dataclass
class Baseline:
    """A baseline file's contents."""

    meta: dict[str, Any] = field(default_factory=dict)
    entries: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Baseline:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no accuracy baseline at {path}; create it with "
                                    "'convbench check --update'")
        data = json.loads(path.read_text())
        if data.get("schema") != SCHEMA:
            raise ValueError(f"{path}: unknown baseline schema {data.get('schema')!r}")
        return cls(data.get("meta", {}), {entry_key(e): e for e in data["entries"]})

    def save(self, path: str | os.PathLike[str]) -> None:
        """One entry a line, sorted, so that diffs of a baseline update read well."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = [self.entries[k] for k in sorted(self.entries)]
        body = ",\n".join("    " + json.dumps(e, sort_keys=True) for e in entries)
        meta = json.dumps(self.meta, sort_keys=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f'{{\n  "schema": {SCHEMA},\n  "meta": {meta},\n  "entries": [\n'
                       f"{body}\n  ]\n}}\n")
        tmp.replace(path)  # atomic: an interrupted update never leaves half a baseline

    def update(self, records: Iterable[dict[str, Any]]) -> int:
        """Replace the entries of the measured (kernel, problem) pairs; return how many."""
        count = 0
        for rec in records:
            entry = entry_from_record(rec)
            if entry["status"] == "failed":
                raise ValueError(f"refusing to record a failure as the baseline: "
                                 f"{rec['kernel']} on {rec['problem']}: {rec.get('reason')}")
            self.entries[entry_key(entry)] = entry
            count += 1
        return count


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


def compare_to_baseline(records: Iterable[dict[str, Any]], baseline: Baseline,
                        factor: float = DEFAULT_FACTOR) -> tuple[list[Finding], int]:
    """Findings (regressions, failures, missing baselines) and the number of checks passed."""
    findings: list[Finding] = []
    passed = 0
    for rec in records:
        key = (rec["kernel"], rec["problem"])
        name = rec.get("name") or rec["problem"]
        base = baseline.entries.get(key)
        if base is None:
            findings.append(Finding(rec["kernel"], rec["problem"], name,
                                    "no baseline (run convbench check --update)"))
            continue
        if rec["status"] == "failed":
            findings.append(Finding(rec["kernel"], rec["problem"], name,
                                    f"failed: {rec.get('reason')}"))
            continue
        if rec["status"] != "ok" or base["status"] != "ok":
            if rec["status"] != base["status"]:
                findings.append(Finding(rec["kernel"], rec["problem"], name,
                                        f"status {base['status']} -> {rec['status']}: "
                                        f"{rec.get('reason') or ''}"))
            else:
                passed += 1
            continue
        error = rec.get("error") or {}
        bad = False
        for metric in METRICS:
            old, new = number(base.get(metric)), number(error.get(metric))
            if old is None or new is None:
                continue
            limit = threshold(metric, old, rec["dtype"], factor)
            if not new <= limit:  # also catches NaN
                findings.append(Finding(rec["kernel"], rec["problem"], name, metric, old, new,
                                        limit))
                bad = True
        passed += not bad
    return findings, passed


def findings_table(findings: list[Finding]) -> str:
    """Markdown table of what regressed and by how much."""
    lines = ["| layer | kernel | metric | baseline | measured | limit | x baseline |",
             "|---|---|---|---:|---:|---:|---:|"]
    for f in findings:
        if f.measured is None:
            lines.append(f"| {f.name} | {f.kernel} | {f.what} | | | | |")
            continue
        ratio = (f"{f.measured / f.baseline:.2f}" if f.baseline else "exact -> inexact")
        lines.append(f"| {f.name} | {f.kernel} | {f.what} | {f.baseline:.3e} | "
                     f"{f.measured:.3e} | {f.limit:.3e} | {ratio} |")
    return "\n".join(lines)
