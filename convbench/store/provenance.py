"""Provenance of a results file: when, from which code, on what, how, and how quiet.

Every JSON, JSONL and Markdown file under ``results/`` says where its numbers
come from, so that a reader can tell whether two files may be compared:

* ``date`` -- when the measurement ran (ISO 8601);
* ``commit`` -- the convbench commit that ran it (``+dirty`` when the tree had
  uncommitted changes);
* ``platform`` -- the platform fingerprint (:func:`~convbench.store.environment.
  platform_fingerprint`): CPU instruction set, BLAS kernels, Numba target,
  oneDNN's instruction set, plus the CPU model and core count;
* ``versions`` -- the numeric stack's versions;
* ``command`` -- the command line;
* ``repetitions`` -- how often each figure was measured (passes, rounds,
  samples: the writer says);
* ``noise`` -- the machine-noise verdict of the run (``quiet``, ``noisy`` with
  its reasons, or ``not measured`` with why).

A JSONL file carries it in its ``header`` record (its ``provenance`` field), a
JSON file in a top-level ``provenance`` object, and a Markdown file in a
fenced block opened by the line ``<!-- provenance`` and closed by ``-->``, so
that it is invisible when rendered but read by :func:`read_provenance`.
A picture is covered by the data file beside it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The fields every provenance record has.
FIELDS = ("date", "commit", "platform", "versions", "command", "repetitions", "noise")
#: The line that opens a Markdown file's provenance block.
MARKDOWN_OPEN = "<!-- provenance"
MARKDOWN_CLOSE = "-->"


def _commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=False)
        if not head.stdout.strip():
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=False)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def noise_verdict(summary: dict[str, Any] | None, why_missing: str = "") -> dict[str, Any]:
    """The ``noise`` field from a :func:`convbench.measure.noise.noise` summary.

    ``summary`` None gives ``not measured`` with ``why_missing``.
    """
    if summary is None:
        return {"verdict": "not measured", "why": why_missing or "no calibration was run"}
    return {"verdict": "noisy" if summary.get("noisy") else "quiet",
            "reasons": list(summary.get("reasons", [])),
            "drift": summary.get("drift"), "foreign_cores": summary.get("foreign_cores")}


def provenance(*, repetitions: Any, noise: dict[str, Any],
               command: Sequence[str] | None = None, backend: str = "cpu",
               date: str | None = None) -> dict[str, Any]:
    """A provenance record for a results file written now, by this process.

    Parameters
    ----------
    repetitions : str, int or dict
        How often each figure was measured, in the writer's words (for example
        ``{"passes": 5, "sample_s": 0.02}``).
    noise : dict
        :func:`noise_verdict`'s output.
    command : sequence of str, optional
        The command line (default: ``sys.argv`` with the interpreter).
    backend : {"cpu", "gpu"}
        Which platform fingerprint to take.
    date : str, optional
        ISO 8601 time of the measurement (default: now, UTC).
    """
    from convbench.store.environment import (  # noqa: PLC0415 -- imports numpy, numba
        cpu_model,
        environment,
        platform_fingerprint,
    )

    env = environment(backend)
    platform = dict(platform_fingerprint(backend))
    platform.update(cpu_model=cpu_model(), cpu_count=os.cpu_count(),
                    blas_threads=[p.get("num_threads") for p in env.get("blas", [])])
    return {
        "date": date or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "platform": platform,
        "versions": {"python": env.get("python"), **env.get("versions", {})},
        "command": list(command) if command is not None else [sys.executable, *sys.argv],
        "repetitions": repetitions,
        "noise": noise,
    }


def markdown_block(prov: dict[str, Any]) -> str:
    """A Markdown file's provenance: a comment block a renderer hides, plus a visible line."""
    p = prov.get("platform", {})
    noise = prov.get("noise", {})
    visible = (f"*Measured {prov.get('date')} at commit `{prov.get('commit')}` on "
               f"{p.get('cpu_model', '?')} ({p.get('cpu_count', '?')} cores, "
               f"{p.get('cpu_isa', '?')}, BLAS {', '.join(p.get('blas', [])) or '?'}, "
               f"fingerprint {p.get('id', '?')}); machine {noise.get('verdict', '?')}.*")
    return (f"{MARKDOWN_OPEN}\n{json.dumps(prov, indent=1, default=str)}\n{MARKDOWN_CLOSE}\n\n"
            f"{visible}\n")


def missing_fields(prov: Any) -> list[str]:
    """The :data:`FIELDS` that ``prov`` lacks or leaves empty (all of them for a non-dict)."""
    if not isinstance(prov, dict):
        return list(FIELDS)
    return [f for f in FIELDS if prov.get(f) in (None, "", [], {})]


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance record of a results file (``.json``, ``.jsonl`` or ``.md``), or None.

    A JSONL file's provenance is its first header's ``provenance`` field.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                return None
            if isinstance(rec, dict) and rec.get("type") == "header":
                return rec.get("provenance")
        return None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return None
        return data.get("provenance") if isinstance(data, dict) else None
    if path.suffix == ".md":
        start = text.find(MARKDOWN_OPEN)
        if start < 0:
            return None
        end = text.find(MARKDOWN_CLOSE, start + len(MARKDOWN_OPEN))
        if end < 0:
            return None
        try:
            return json.loads(text[start + len(MARKDOWN_OPEN):end])
        except json.JSONDecodeError:
            return None
    return None
