"""Accuracy baseline files: what ``convbench check --update`` keeps and ``check`` reads.

A baseline file holds, per (kernel, problem with dtype and direction), the measured
``rel_l2``, ``max_rel`` and ``bound_ratio`` on seeded inputs, one entry a line
(so that an update reads well as a diff), in ``meta`` the settings of the
check that made it and the platform it ran on, and in ``provenance`` that
check's :mod:`~convbench.store.provenance` record (both of the last update).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convbench.store.records import as_record

#: Metrics a baseline entry keeps.
BASELINE_METRICS = ("rel_l2", "max_rel", "bound_ratio")
SCHEMA = 1


def default_baseline_path(backend: str, fill: str) -> Path:
    """``results/accuracy/<backend>-<fill>.json`` under the current directory."""
    return Path("results") / "accuracy" / f"{backend}-{fill}.json"


def entry_key(entry: dict[str, Any]) -> tuple[str, str]:
    return (entry["kernel"], entry["problem"])


def entry_from_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A baseline entry from a sweep record (status, reason, metrics)."""
    rec = as_record(rec)
    entry = {"suite": rec.get("suite"), "name": rec.get("name"), "problem": rec["problem"],
             "kernel": rec.kernel, "dtype": rec["dtype"], "status": rec.status}
    if rec.dir != "fwd":
        # The descriptor already says it (--dir=BWD_D...); the field is for readers. A
        # forward entry has none, as entries written before directions existed.
        entry["dir"] = rec.dir
    if rec.ok:
        entry.update({m: rec.error(m) for m in BASELINE_METRICS})
    else:
        entry["reason"] = rec.get("reason")
    return entry


@dataclass
class Baseline:
    """A baseline file's contents."""

    meta: dict[str, Any] = field(default_factory=dict)
    entries: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Baseline:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no accuracy baseline at {path}; create it with "
                                    "'convbench check --update'")
        data = json.loads(path.read_text())
        if data.get("schema") != SCHEMA:
            raise ValueError(f"{path}: unknown baseline schema {data.get('schema')!r}")
        return cls(data.get("meta", {}), {entry_key(e): e for e in data["entries"]},
                   data.get("provenance"))

    def save(self, path: str | os.PathLike[str]) -> None:
        """One entry a line, sorted, so that diffs of a baseline update read well."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = [self.entries[k] for k in sorted(self.entries)]
        body = ",\n".join("    " + json.dumps(e, sort_keys=True) for e in entries)
        meta = json.dumps(self.meta, sort_keys=True)
        prov = ("" if self.provenance is None else
                f'  "provenance": {json.dumps(self.provenance, sort_keys=True)},\n')
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f'{{\n  "schema": {SCHEMA},\n{prov}  "meta": {meta},\n  "entries": [\n'
                       f"{body}\n  ]\n}}\n")
        tmp.replace(path)  # atomic: an interrupted update never leaves half a baseline

    def update(self, records: Iterable[dict[str, Any]]) -> int:
        """Replace the entries of the measured (kernel, problem) pairs; return how many."""
        count = 0
        for rec in records:
            entry = entry_from_record(rec)
            if entry["status"] == "failed":
                raise ValueError(f"refusing to record a failure as the baseline: "
                                 f"{entry['kernel']} on {entry['problem']}: "
                                 f"{rec.get('reason')}")
            self.entries[entry_key(entry)] = entry
            count += 1
        return count


def baseline_meta(settings: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """What a baseline file records about the check that made it and its platform."""
    return {**settings, "cpu_model": env.get("cpu_model"), "versions": env.get("versions"),
            "blas": env.get("blas"), "fingerprint": env["fingerprint"]}


def recorded_fingerprint(env: dict[str, Any], backend: str) -> dict[str, Any]:
    """The platform fingerprint of a results file's recorded environment.

    Files written since fingerprints exist carry one; for older ones it is
    rebuilt from what they recorded (fields they lack are None), so a
    baseline seeded from them is labelled with their platform. It cannot
    equal a live fingerprint where a field is missing: drift against such a
    baseline stays information until the platform itself updates it.
    """
    from convbench.store.environment import fingerprint_id  # noqa: PLC0415

    if env.get("fingerprint"):
        return env["fingerprint"]
    versions = env.get("versions") or {}
    if backend == "gpu":
        gpu = env.get("gpu") or {}
        fp: dict[str, Any] = {
            "backend": "gpu",
            "gpu": {"name": gpu.get("name"), "compute_capability": gpu.get("compute_capability"),
                    "cuda_runtime": gpu.get("cuda_runtime"), "cublas": gpu.get("cublas"),
                    "cudnn": gpu.get("cudnn") or versions.get("nvidia-cudnn-cu13")
                    or versions.get("nvidia-cudnn-cu12")},
            "cupy": versions.get("cupy-cuda13x") or versions.get("cupy-cuda12x"),
            "scipy": versions.get("scipy")}
    else:
        fp = {"backend": "cpu", "cpu_isa": None,
              "blas": sorted({f"{p.get('internal_api')} {p.get('version')} "
                              f"{p.get('architecture')}" for p in env.get("blas") or []}),
              "numba_cpu": None, "onednn_isa": None, "numpy": versions.get("numpy"),
              "scipy": versions.get("scipy"), "overrides": {}}
    fp["id"] = fingerprint_id(fp)
    return fp
