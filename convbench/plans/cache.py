"""The plan cache: tuned choices in one JSON file, per platform and problem.

Layout of the file::

    {"format": "convbench-plans", "version": 1,
     "provenance": {...},                 # the tunes that wrote into it (store.provenance)
     "platforms": {
       "<fingerprint id>": {
         "fingerprint": {...},            # platform_fingerprint(backend)
         "entries": {
           "<descriptor>|<dtype>|<math>": {
             "problem": ..., "name": ..., "dir": ..., "backend": ..., "dtype": ..., "math": ...,
             "metric": "rel_l2", "budget": 1e-06, "allow_vendor": false,
             "choice": {"kernel": ..., "kind": ..., "time_s": ..., "error": {...}},
             "runner_up": {...} or null,
             "candidates": [{...}, ...],  # every kernel measured: re-choosing needs no re-run
             "tied": ["<kernel>", ...],    # not slower than the choice with confidence
             "threads": 2, "tuned": "2026-01-01T00:00:00+0000"}}}}}

The descriptor is the problem's canonical text without its name (it carries
the batch size, bias, dtype, direction and ``--attr-fpmath``), so one entry serves
every layer of that shape. The fingerprint is the one accuracy baselines
use (:func:`current_fingerprint`): it changes with the instruction set,
BLAS, Numba's target, oneDNN's ISA, the NumPy and SciPy versions, or the
GPU and its libraries, and a plan measured on one platform is never used on
another.

Writes are atomic (a temporary file renamed over the cache) and serialized
by an exclusive ``fcntl`` lock on ``<path>.lock``: each writer reads the
file under the lock, merges its entries and writes, so concurrent tuners
lose nothing. POSIX only (Linux and macOS).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from convbench.problem import ConvProblem

#: Environment variable naming the plan cache (overrides :func:`default_path`).
PLANS_ENV = "CONVBENCH_PLANS"
FORMAT = "convbench-plans"
VERSION = 1


class PlanCacheWarning(UserWarning):
    """A plan cache was found but cannot be used here (another platform, another format)."""


def default_path() -> Path:
    """Where ``convbench tune`` writes and ``algo="auto"`` looks.

    ``$CONVBENCH_PLANS`` if set, else ``$XDG_CACHE_HOME/convbench/plans.json``,
    else ``~/.cache/convbench/plans.json``.
    """
    if os.environ.get(PLANS_ENV):
        return Path(os.environ[PLANS_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "convbench" / "plans.json"


def entry_key(p: ConvProblem) -> str:
    """``"<descriptor without name>|<dtype>|<math>"``: what a plan is kept and found under.

    The descriptor carries the direction (``--dir=BWD_D``...), so each direction of a
    layer has its own plan; a forward entry written before directions existed is
    found by a forward problem as it was.
    """
    return f"{p.with_(name='')}|{p.dtype}|{p.math}"


@functools.cache
def current_fingerprint(backend: str) -> dict[str, Any]:
    """This platform's fingerprint for ``backend``, as plans are keyed (computed once).

    :func:`~convbench.store.environment.platform_fingerprint` taken with the
    same libraries loaded whatever the caller imported first, so that a plan
    is found in any process: SciPy's own OpenBLAS is loaded before the BLAS
    pools are listed, and the OpenMP runtimes listed beside them (one appears
    as soon as torch or an OpenMP threading layer is loaded) are left out, as
    they change no summation order.
    """
    import scipy.linalg  # noqa: F401, PLC0415 -- loads SciPy's BLAS, listed with NumPy's

    from convbench.store.environment import (  # noqa: PLC0415 -- imports numpy's BLAS, torch
        fingerprint_id,
        platform_fingerprint,
    )

    fp = dict(platform_fingerprint(backend))
    if "blas" in fp:
        fp["blas"] = [pool for pool in fp["blas"] if not pool.startswith("openmp ")]
    fp["id"] = fingerprint_id(fp)
    return fp


def empty_document() -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "platforms": {}}


def read_document(path: Path) -> dict[str, Any]:
    """The cache at ``path`` (an empty one if there is no file).

    Raises
    ------
    ValueError
        The file is not a plan cache of this version (the message says what it is).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return empty_document()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a plan cache: invalid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a plan cache (no \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise ValueError(f"{path} is a plan cache of version {doc.get('version')}; this "
                         f"convbench reads version {VERSION}: tune again")
    return doc


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (blocks until every other holder is done)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_atomically(path: Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` to a temporary file beside ``path``, flush it to disk, rename it over.

    The file gets the mode ``open`` would give it (0666 less the umask), not
    ``mkstemp``'s private 0600: a plan cache is meant to be shared and committed.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process's umask (read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def merge_entries(path: str | os.PathLike[str], fingerprint: Mapping[str, Any],
                  entries: Mapping[str, Mapping[str, Any]],
                  provenance: Mapping[str, Any] | None = None,
                  source: str | None = None) -> None:
    """Add ``entries`` (key -> entry) under ``fingerprint`` to the cache at ``path``.

    Under the lock the file is read again, so entries another process wrote
    since are kept; an entry with the same key is replaced (the newer
    measurement wins). Creates the file and its folder if needed.
    ``provenance``, the measuring run's record, joins the cache's top-level
    ``provenance`` as the run ``source`` (replacing that run's earlier record),
    so the cache names every run that wrote into it.
    """
    from convbench.store.provenance import merged  # noqa: PLC0415

    path = Path(path)
    with locked(path):
        doc = read_document(path)
        platform = doc["platforms"].setdefault(fingerprint["id"], {"entries": {}})
        platform["fingerprint"] = dict(fingerprint)
        platform.setdefault("entries", {}).update({k: dict(v) for k, v in entries.items()})
        if provenance is not None:
            doc["provenance"] = merged(doc.get("provenance"), source or str(
                provenance.get("date")), provenance)
        write_atomically(path, doc)


def make_entry(choice: Any, p: ConvProblem, backend: str, threads: int | None) -> dict[str, Any]:
    """The cache entry of a :class:`~convbench.plans.choice.Choice` made on ``p``."""
    return {"problem": str(p.with_(name="")), "name": p.name, "dir": p.dir,
            "backend": backend, "dtype": p.dtype, "math": p.math, "metric": choice.metric,
            "budget": choice.budget, "allow_vendor": choice.allow_vendor,
            "choice": choice.chosen.to_json(),
            "runner_up": choice.runner_up.to_json() if choice.runner_up else None,
            "candidates": [c.to_json() for c in choice.candidates], "threads": threads,
            "tied": list(choice.tied),
            "tuned": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ------------------------------------------------------------------ lookup
#: (path, mtime_ns, size) -> document, so that conv2d(algo="auto") reads a file once.
_documents: dict[tuple[str, int, int], dict[str, Any]] = {}
#: (path, backend) pairs already warned about: one warning per cache and process.
_warned: set[tuple[str, str]] = set()


def _cached_document(path: Path) -> dict[str, Any] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    doc = _documents.get(key)
    if doc is None:
        doc = read_document(path)
        _documents.clear()  # only the newest version of a file is worth keeping
        _documents[key] = doc
    return doc


def _warn_once(path: Path, backend: str, message: str) -> None:
    key = (str(path), backend)
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, PlanCacheWarning, stacklevel=4)


def _differences(theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> str:
    fields = sorted(k for k in set(theirs) | set(ours)
                    if k != "id" and theirs.get(k) != ours.get(k))
    return "; ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in fields[:4])


def find_entry(p: ConvProblem, backend: str,
               path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The tuned entry for ``p`` on this platform, or None.

    Parameters
    ----------
    p : ConvProblem
    backend : {"cpu", "gpu"}
    path : path, optional
        The cache (default: :func:`default_path`).

    Returns
    -------
    dict or None
        None when there is no cache, no entry for ``p``, or the cache holds
        plans for ``backend`` from other platforms only; that last case warns
        once per cache and process (:class:`PlanCacheWarning`), as does a file
        that is not a plan cache.
    """
    path = Path(path) if path is not None else default_path()
    try:
        doc = _cached_document(path)
    except ValueError as exc:
        _warn_once(path, backend, f"convbench: ignoring the plan cache: {exc}")
        return None
    if not doc:
        return None
    platforms = doc.get("platforms", {})
    same_backend = {fid: plat for fid, plat in platforms.items()
                    if plat.get("fingerprint", {}).get("backend") == backend}
    if not same_backend:
        return None
    ours = current_fingerprint(backend)
    platform = same_backend.get(ours["id"])
    if platform is None:
        fid, theirs = next(iter(same_backend.items()))
        _warn_once(path, backend, (
            f"convbench: the plan cache {path} holds {backend} plans tuned on another "
            f"platform (fingerprint {fid}, this one is {ours['id']}: "
            f"{_differences(theirs.get('fingerprint', {}), ours)}); algo='auto' uses the "
            "documented rule (convbench.auto_kernel) instead. Run 'convbench tune' here to "
            "make plans for this platform."))
        return None
    return platform.get("entries", {}).get(entry_key(p))
