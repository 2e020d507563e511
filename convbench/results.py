"""Result records, environment metadata, the JSONL store and run comparison.

A results file is JSON Lines: a ``header`` record (environment and command
line) at the start of each run appended to it, then one ``result`` record per
(problem, kernel), written and flushed as soon as it is measured. A sweep
interrupted at any point leaves a valid file; a torn last line (the process
killed mid-write) is skipped with a warning when loading.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from convbench.numba_threads import active_layer

SCHEMA_VERSION = 1
RESULT_STATUSES = ("ok", "skipped", "failed")
_PACKAGES = ("convbench", "numpy", "numba", "llvmlite", "scipy", "threadpoolctl", "torch",
             "cupy", "cupy-cuda12x", "cupy-cuda13x", "nvidia-cudnn-frontend",
             "nvidia-cudnn-cu12", "nvidia-cudnn-cu13")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux) or the platform module."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(backend: str = "cpu") -> dict[str, Any]:
    """Where and with what a run was measured.

    CPU model and cores, BLAS libraries (threadpoolctl), versions of Python
    and the numeric stack, and for ``backend="gpu"`` the GPU, driver, CUDA and
    cuDNN versions where they can be read.
    """
    import numpy as np  # noqa: PLC0415 -- loads BLAS so threadpoolctl sees it
    from threadpoolctl import threadpool_info  # noqa: PLC0415

    np.dot(np.ones((2, 2)), np.ones((2, 2)))
    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "blas": [{k: pool.get(k) for k in ("internal_api", "prefix", "version",
                                           "num_threads", "threading_layer", "architecture")}
                 for pool in threadpool_info()],
        "versions": {pkg: v for pkg in _PACKAGES if (v := _version(pkg)) is not None},
        "convbench_commit": _git_commit(),
        "numba_threading_layer": active_layer(),
    }
    if "torch" in sys.modules or _version("torch"):
        try:
            import torch  # noqa: PLC0415

            env["torch_onednn"] = bool(torch.backends.mkldnn.is_available())
        except ImportError:
            pass
    if backend == "gpu":
        env["gpu"] = gpu_environment()
    return env


def gpu_environment() -> dict[str, Any]:
    """GPU name, driver, CUDA runtime and cuDNN versions, or why they are unknown."""
    try:
        import cupy  # noqa: PLC0415
    except ImportError as exc:
        return {"available": False, "reason": f"cupy not importable: {exc}"}
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 -- any driver failure means no GPU here
        return {"available": False, "reason": f"no CUDA device: {exc}"}
    if count == 0:
        return {"available": False, "reason": "no CUDA device"}
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    info = {"available": True, "count": count,
            "name": name.decode() if isinstance(name, bytes) else name,
            "compute_capability": f"{props['major']}.{props['minor']}",
            "driver": cupy.cuda.runtime.driverGetVersion(),
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()}
    try:
        from cupy.cuda import cudnn  # noqa: PLC0415

        info["cudnn"] = cudnn.getVersion()
    except Exception:  # noqa: BLE001 -- cuDNN is optional
        info["cudnn"] = None
    return info


def header_record(command: list[str], config: dict[str, Any], env: dict[str, Any]) -> dict:
    """The record that opens a run: environment, command line and settings."""
    return {"type": "header", "schema": SCHEMA_VERSION,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
            "config": config, "environment": env}


def record_key(record: dict[str, Any]) -> tuple[str, str, str]:
    """Identity of a measurement: (descriptor, backend, kernel)."""
    return (record["problem"], record["backend"], record["kernel"])


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


def number(value: Any) -> float | None:
    """A record's numeric field as float ("inf"/"nan" strings included), else None."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass
class Run:
    """The contents of a results file."""

    headers: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    roofs: list[dict[str, Any]] = field(default_factory=list)

    def latest(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """The last record of each (problem, backend, kernel): what a resume or compare uses."""
        return {record_key(r): r for r in self.records}


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
    for rec in iter_jsonl(path):
        kind = rec.get("type")
        if kind == "header":
            run.headers.append(rec)
        elif kind == "result":
            run.records.append(rec)
        elif kind == "roof":
            run.roofs.append(rec)
    if not run.headers and not run.records:
        raise ValueError(f"{path} holds no convbench records")
    return run


@dataclass
class Comparison:
    """One (problem, kernel) present in both runs."""

    key: tuple[str, str, str]
    old: dict[str, Any]
    new: dict[str, Any]
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
        ta, tb = _median(a), _median(b)
        if ta and tb:
            time_ratio = tb / ta
            if time_ratio > 1 + time_tol:
                regressions.append(f"time x{time_ratio:.2f}")
        ea, eb = _rel_l2(a), _rel_l2(b)
        if ea is not None and eb is not None:
            error_ratio = eb / max(ea, err_floor)
            if eb > err_tol * max(ea, err_floor):
                regressions.append(f"rel_l2 x{error_ratio:.2f}")
        out.append(Comparison(key, a, b, time_ratio, error_ratio, regressions))
    return out


def _median(rec: dict[str, Any]) -> float | None:
    timing = rec.get("time") or {}
    return number(timing.get("median_s"))


def _rel_l2(rec: dict[str, Any]) -> float | None:
    error = rec.get("error") or {}
    return number(error.get("rel_l2"))


def write_records(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Append several records (tests and tools)."""
    with ResultWriter(path) as writer:
        for rec in records:
            writer.write(rec)
