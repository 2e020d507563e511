"""The results file: JSON Lines, written record by record, read back as a :class:`Run`.

A results file holds a ``header`` record (environment, command line and the
run's :mod:`~convbench.store.provenance`) at the start of each run appended to
it, then one ``result`` record per (problem, kernel), written and flushed as
soon as it is measured, and at the end a ``noise`` record (how quiet the
machine was during the run). A sweep interrupted at any point leaves a valid
file; a torn last line (the process killed mid-write) is skipped with a
warning when loading.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from convbench.store.records import Record

SCHEMA_VERSION = 1


def header_record(command: list[str], config: dict[str, Any], env: dict[str, Any],
                  provenance: dict[str, Any] | None = None) -> dict:
    """The record that opens a run: environment, command line, settings and provenance.

    Parameters
    ----------
    command : list of str
    config : dict
        The run's settings (a sweep's :class:`~convbench.measure.runner.SweepSettings`
        and what the command adds).
    env : dict
        :func:`~convbench.store.environment.environment` of the run.
    provenance : dict, optional
        The run's :mod:`~convbench.store.provenance` record; by default one made
        from the arguments, its repetitions from ``config`` and its noise
        ``pending`` (the run's closing ``noise`` record holds the verdict).
    """
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if provenance is None:
        from convbench.store import provenance as prov  # noqa: PLC0415 -- imports numba

        provenance = prov.provenance(
            repetitions=prov.sweep_repetitions(config), noise=prov.pending_noise(),
            command=command, backend=config.get("backend", "cpu"), date=started, env=env)
    return {"type": "header", "schema": SCHEMA_VERSION, "started": started, "command": command,
            "config": config, "environment": env, "provenance": provenance}


class ResultWriter:
    """Append records to a JSONL file, one flushed line each.

    Use as a context manager. Each record is serialized first and written
    with a single call, then flushed and fsynced, so a crash or Ctrl-C
    never leaves half a record behind except when the OS itself dies.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None

    def __enter__(self) -> ResultWriter:
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        if self.path.stat().st_size and not _ends_with_newline(self.path):
            self._file.write("\n")  # a torn line from an earlier crash stays on its own
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError("ResultWriter used outside its 'with' block")
        line = json.dumps(_jsonable(record), allow_nan=False, sort_keys=False) + "\n"
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _jsonable(value: Any) -> Any:
    """Non-finite floats become strings ("inf", "nan") so the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class Run:
    """The contents of a results file."""

    headers: list[dict[str, Any]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    roofs: list[dict[str, Any]] = field(default_factory=list)
    noise: list[dict[str, Any]] = field(default_factory=list)

    def latest(self) -> dict[tuple[str, str, str, str], Record]:
        """The last record of each (problem, dir, backend, kernel): what a resume uses."""
        return {r.key: r for r in self.records}

    def latest_per_platform(self) -> dict[str | None, dict[tuple[str, str, str, str], Record]]:
        """The last record of each (problem, dir, backend, kernel) on each platform, platforms in
        the order they first appear (see :attr:`Record.platform`): what tables, reports
        and ``compare`` use, so that no ratio mixes two platforms' times."""
        out: dict[str | None, dict[tuple[str, str, str, str], Record]] = {}
        for rec in self.records:
            out.setdefault(rec.platform, {})[rec.key] = rec
        return out


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a torn (unparseable) line is skipped with a warning."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{lineno}: skipping a torn line (interrupted write)",
                              RuntimeWarning, stacklevel=2)


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read a results file.

    Raises
    ------
    FileNotFoundError
    ValueError
        If the file holds no convbench records at all.
    """
    run = Run()
    platform = None
    for rec in iter_jsonl(path):
        kind = rec.get("type")
        if kind == "header":
            run.headers.append(rec)
            platform = ((rec.get("environment") or {}).get("fingerprint") or {}).get("id")
        elif kind == "result":
            record = Record(rec)
            record.header_platform = platform
            run.records.append(record)
        elif kind == "roof":
            run.roofs.append(rec)
        elif kind == "noise":
            run.noise.append(rec)
    if not run.headers and not run.records:
        raise ValueError(f"{path} holds no convbench records")
    return run


def write_records(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Append several records (tests and tools)."""
    with ResultWriter(path) as writer:
        for rec in records:
            writer.write(rec)
