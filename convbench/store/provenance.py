"""Provenance of a results file: when, from which code, on what, how, and how quiet.

Every JSON, JSONL and Markdown file under ``results/`` says where its numbers
come from, so that a reader can tell whether two files may be compared:

* ``date`` -- when the measurement ran (ISO 8601);
* ``commit`` -- the convbench commit that ran it (``+dirty`` when the tree had
  uncommitted changes outside ``results/``, where a rerun rewrites its own outputs);
* ``platform`` -- the platform fingerprint (:func:`~convbench.store.environment.
  platform_fingerprint`): CPU instruction set, BLAS kernels, Numba target,
  oneDNN's instruction set, plus the CPU model, its vector flags and core count
  (a GPU run's adds the host CPU's under ``host``);
* ``versions`` -- the numeric stack's versions;
* ``command`` -- the command line;
* ``repetitions`` -- how often each figure was measured (passes, rounds,
  samples: the writer says);
* ``noise`` -- the machine-noise verdict of the run (``quiet``, ``noisy`` with
  its reasons, or ``not measured`` with why).

A JSONL file carries it in its ``header`` record (its ``provenance`` field), a
JSON file in a top-level ``provenance`` object, and a Markdown file in a
fenced block opened by the line ``<!-- provenance`` and closed by ``-->``, so
that it is invisible when rendered but read by :func:`read_provenance`; a
visible italic line follows it. A picture is covered by the data file beside
it.

A JSONL run's header is written before the run has measured its noise: its
``noise`` says ``pending`` (:func:`pending_noise`), and :func:`read_provenance`
takes the verdict from the run's closing ``noise`` record.

Two more keys may appear. ``recovered`` maps each field that was inferred
rather than read from the run's own record to how it was inferred (files
written before provenance existed). A record of several runs (a report, a plan
cache merged from several tunes; :func:`combined`) lists them in ``sources``,
and a field on which they differ is ``{"per_source": {source: value}}``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The fields every provenance record has.
FIELDS = ("date", "commit", "platform", "versions", "command", "repetitions", "noise")
#: The line that opens a Markdown file's provenance block.
MARKDOWN_OPEN = "<!-- provenance"
MARKDOWN_CLOSE = "-->"
#: The noise verdict of a JSONL header written before its run's noise was measured.
PENDING = "pending"
#: The key of a combined record's field on which its sources differ.
PER_SOURCE = "per_source"
#: Why an accuracy study's provenance has no noise verdict.
ACCURACY_ONLY = "accuracy only: errors do not depend on machine noise"
#: CPU flags the platform record keeps: the ones compiled kernels and BLAS dispatch on.
_VECTOR_FLAG = re.compile(r"^(sse|ssse3|avx|fma|f16c|amx|bmi)")


def _commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=False)
        if not head.stdout.strip():
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no", "--", ".", ":(exclude)results"],
                               capture_output=True, text=True, timeout=10, check=False)
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


def pending_noise() -> dict[str, Any]:
    """The ``noise`` of a record written before its run's closing calibration."""
    return {"verdict": PENDING,
            "why": "written when the run started: its closing noise record (or the file's "
                   "final write) holds the verdict"}


def vector_flags() -> list[str]:
    """This CPU's SIMD and bit-manipulation flags (``/proc/cpuinfo``), sorted."""
    from convbench.measure.platforms import cpu_flags  # noqa: PLC0415

    return sorted(f for f in cpu_flags() if _VECTOR_FLAG.match(f))


def platform_record(backend: str = "cpu", env: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
    """The ``platform`` field: the fingerprint with the CPU model, flags and cores.

    Parameters
    ----------
    backend : {"cpu", "gpu"}
    env : dict, optional
        An :func:`~convbench.store.environment.environment` already taken for
        ``backend`` (saves taking it again).
    """
    from convbench.store.environment import (  # noqa: PLC0415 -- imports numpy, numba
        cpu_model,
        environment,
        platform_fingerprint,
    )

    env = env if env and env.get("fingerprint") else environment(backend)
    platform = dict(env["fingerprint"])
    platform.update(cpu_model=env.get("cpu_model") or cpu_model(),
                    cpu_flags=vector_flags(), cpu_count=env.get("cpu_count", os.cpu_count()),
                    blas_threads=[p.get("num_threads") for p in env.get("blas", [])])
    if platform.get("backend") == "gpu":
        # The host computes references and FFT filter spectra: its arithmetic counts too.
        platform["host"] = platform_fingerprint("cpu")
    return platform


def provenance(*, repetitions: Any, noise: dict[str, Any],
               command: Sequence[str] | None = None, backend: str = "cpu",
               date: str | None = None, env: Mapping[str, Any] | None = None
               ) -> dict[str, Any]:
    """A provenance record for a results file written now, by this process.

    Parameters
    ----------
    repetitions : str, int or dict
        How often each figure was measured, in the writer's words (for example
        ``{"passes": 5, "sample_s": 0.02}``).
    noise : dict
        :func:`noise_verdict`'s (or :func:`pending_noise`'s) output.
    command : sequence of str, optional
        The command line (default: ``sys.argv`` with the interpreter).
    backend : {"cpu", "gpu"}
        Which platform fingerprint to take.
    date : str, optional
        ISO 8601 time of the measurement (default: now, UTC).
    env : dict, optional
        The run's :func:`~convbench.store.environment.environment`, if it took
        one already (its fingerprint and versions are used).
    """
    from convbench.store.environment import environment  # noqa: PLC0415

    env = env if env and env.get("fingerprint") else environment(backend)
    return {
        "date": date or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "platform": platform_record(backend, env),
        "versions": {"python": env.get("python"), **env.get("versions", {})},
        "command": list(command) if command is not None else [sys.executable, *sys.argv],
        "repetitions": repetitions,
        "noise": noise,
    }


def accuracy_provenance(repetitions: Any = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`provenance` of an accuracy study: no noise verdict (:data:`ACCURACY_ONLY`).

    ``repetitions`` defaults to one measurement per figure; ``kwargs`` go to
    :func:`provenance` (``command``, ``backend``, ``env``).
    """
    return provenance(repetitions=repetitions or {"mode": "accuracy",
                                                  "measurements_per_figure": 1},
                      noise=noise_verdict(None, ACCURACY_ONLY), **kwargs)


def sweep_repetitions(config: Mapping[str, Any]) -> dict[str, Any]:
    """``repetitions`` of a sweep from its settings (a JSONL header's ``config``).

    A timed record is measured in ``rounds`` rounds of at least ``min_reps``
    runs and ``min_time`` seconds each; an accuracy-only one once.
    """
    mode = config.get("mode", "both")
    out: dict[str, Any] = {"mode": mode}
    if mode == "accuracy":
        out["rounds"] = 1
        return out
    for key in ("rounds", "min_reps", "min_time", "max_time", "warmup", "warm_time",
                "cooldown", "retries"):
        if config.get(key) is not None:
            out[key] = config[key]
    return out


def recover_from_header(header: Mapping[str, Any],
                        closing_noise: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A provenance record rebuilt from a JSONL header written before provenance existed.

    Every field is read from the header (``started``, ``environment``'s commit,
    fingerprint, CPU and versions, ``command``, ``config``) and the run's
    closing ``noise`` record; where something had to be inferred it is said in
    ``recovered`` (a fingerprint rebuilt from an older environment, a run that
    recorded no noise, a commit left unrecorded: then ``commit`` is None and
    the caller must find it).
    """
    from convbench.store.baselines import recorded_fingerprint  # noqa: PLC0415

    env = header.get("environment") or {}
    config = header.get("config") or {}
    backend = config.get("backend") or (config.get("check") or {}).get("backend") or "cpu"
    recovered: dict[str, str] = {}
    fingerprint = dict(recorded_fingerprint(env, backend))
    recovered["platform"] = "the header records the CPU's widest vector extension, not its flags"
    if not env.get("fingerprint"):
        recovered["platform"] = ("fingerprint rebuilt from the header's environment (CPU, BLAS, "
                                 "versions); the fields it did not record are null")
    platform = {**fingerprint, "cpu_model": env.get("cpu_model"), "cpu_flags": None,
                "cpu_count": env.get("cpu_count"),
                "blas_threads": [p.get("num_threads") for p in env.get("blas") or []]}
    if "check" in config:
        repetitions: Any = {"mode": "accuracy", "measurements_per_entry": 1}
    else:
        repetitions = sweep_repetitions(config)
        if repetitions["mode"] != "accuracy" and "rounds" not in repetitions:
            repetitions["rounds"] = 1
            recovered["repetitions"] = ("the header has no rounds: convbench had none then, "
                                        "and timed each record in one process")
    if closing_noise is not None:
        noise = noise_verdict(dict(closing_noise))
    elif "check" in config or repetitions.get("mode") == "accuracy":
        noise = noise_verdict(None, ACCURACY_ONLY)
    else:
        noise = noise_verdict(None, "the run recorded no noise: convbench took no calibration "
                                    "then")
        recovered["noise"] = "no closing noise record in the file"
    prov: dict[str, Any] = {
        "date": header.get("started"), "commit": env.get("convbench_commit"),
        "platform": platform,
        "versions": {"python": env.get("python"), **(env.get("versions") or {})},
        "command": list(header.get("command") or []), "repetitions": repetitions,
        "noise": noise}
    if recovered:
        prov["recovered"] = recovered
    return prov


def combined(sources: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One record for a file made from several runs (``sources``: name -> record).

    A field the sources agree on keeps its value; one they differ on becomes
    ``{"per_source": {name: value}}``. ``recovered`` notes are kept per source.
    """
    if not sources:
        raise ValueError("combined() needs at least one source")
    names = list(sources)
    out: dict[str, Any] = {}
    for field in FIELDS:
        values = [sources[n].get(field) for n in names]
        same = all(json.dumps(v, sort_keys=True, default=str)
                   == json.dumps(values[0], sort_keys=True, default=str) for v in values)
        out[field] = values[0] if same else {PER_SOURCE: dict(zip(names, values, strict=True))}
    notes = {n: sources[n]["recovered"] for n in names if sources[n].get("recovered")}
    if notes:
        out["recovered"] = notes
    out["sources"] = names
    return out


def split_sources(prov: Mapping[str, Any], name: str = "earlier") -> dict[str, dict[str, Any]]:
    """The per-source records a :func:`combined` one was made of (a plain one as ``name``)."""
    if not prov.get("sources"):
        return {name: dict(prov)}
    out: dict[str, dict[str, Any]] = {}
    for source in prov["sources"]:
        rec = {}
        for field in FIELDS:
            value = prov.get(field)
            rec[field] = value[PER_SOURCE].get(source) if isinstance(value, dict) and \
                PER_SOURCE in value else value
        note = (prov.get("recovered") or {}).get(source)
        if note:
            rec["recovered"] = note
        out[source] = rec
    return out


def merged(existing: Mapping[str, Any] | None, name: str,
           prov: Mapping[str, Any]) -> dict[str, Any]:
    """``existing`` (a record or None) with the run ``name`` added, or replaced if it is there.

    What a file that several runs write into keeps (a plan cache, tune after tune).
    """
    sources = split_sources(existing) if existing else {}
    sources[name] = dict(prov)
    return combined(sources)


def file_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """One record for everything a JSONL file holds: its run's, or combined over its runs.

    A run whose header predates provenance is recovered from the header
    (:func:`recover_from_header`); None for a file with no header.
    """
    runs = _jsonl_runs(Path(path).read_text(encoding="utf-8"))
    records = {f"{Path(path).name} run {i + 1}": _resolved(h.get("provenance"), n)
               or recover_from_header(h, n) for i, (h, n) in enumerate(runs)}
    if len(records) <= 1:
        return next(iter(records.values()), None)
    return combined(records)


def _distinct(value: Any, pick: Any = None) -> list[Any]:
    """The distinct values of a field, per source where it is a combined one."""
    values = list(value[PER_SOURCE].values()) if isinstance(value, dict) and \
        PER_SOURCE in value else [value]
    if pick is not None:
        values = [pick(v) for v in values]
    return list(dict.fromkeys(json.dumps(v, default=str) if isinstance(v, (dict, list))
                              else v for v in values))


def _platform_words(p: Any) -> str:
    if not isinstance(p, dict):
        return "?"
    if p.get("backend") == "gpu" and isinstance(p.get("gpu"), dict):
        g = p["gpu"]
        return (f"{g.get('name', '?')} (CUDA {g.get('cuda_runtime', '?')}, cuDNN "
                f"{g.get('cudnn', '?')}, fingerprint {p.get('id') or '?'}) on "
                f"{p.get('cpu_model') or '?'}")
    return (f"{p.get('cpu_model') or '?'} ({p.get('cpu_count') or '?'} cores, "
            f"{p.get('cpu_isa') or '?'}, BLAS {', '.join(p.get('blas') or []) or '?'}, "
            f"fingerprint {p.get('id') or '?'})")


def _recovered_date(prov: Mapping[str, Any]) -> bool:
    """Whether a record's date was inferred (a commit's date, not the run's own)."""
    notes = prov.get("recovered") or {}
    if prov.get("sources"):
        return any("date" in (n or {}) for n in notes.values())
    return "date" in notes


def markdown_block(prov: dict[str, Any]) -> str:
    """A Markdown file's provenance: a comment block a renderer hides, plus a visible line."""
    dates = _distinct(prov.get("date"))
    when = dates[0] if len(dates) == 1 else f"{min(map(str, dates))} to {max(map(str, dates))}"
    if _recovered_date(prov):
        when = f"by {when}"  # the date of the commit that holds it: the run was earlier
    commits = ", ".join(f"`{c}`" for c in _distinct(prov.get("commit")))
    where = "; ".join(_distinct(prov.get("platform"), _platform_words))
    noise = ", ".join(str(v) for v in _distinct(prov.get("noise"),
                                                lambda n: (n or {}).get("verdict", "?")))
    runs = f" ({len(prov['sources'])} runs)" if prov.get("sources") else ""
    partly = "; partly recovered, see the block" if prov.get("recovered") else ""
    visible = (f"*Measured {when}{runs} at commit {commits} on {where}; machine "
               f"{noise}{partly}.*")
    return (f"{MARKDOWN_OPEN}\n{json.dumps(prov, indent=1, default=str)}\n{MARKDOWN_CLOSE}\n\n"
            f"{visible}\n")


def _block_span(text: str) -> tuple[int, int] | None:
    """Where a Markdown file's provenance block opens, and where its closing line starts."""
    start = text.find(MARKDOWN_OPEN)
    end = -1 if start < 0 else text.find(MARKDOWN_CLOSE, start + len(MARKDOWN_OPEN))
    return None if end < 0 else (start, end)


def markdown_body(text: str) -> str:
    """``text`` without its provenance block and the visible line after it."""
    span = _block_span(text)
    if span is None:
        return text
    start, end = span
    rest = text[end + len(MARKDOWN_CLOSE):].lstrip("\n")
    first, _, after = rest.partition("\n")
    if first.startswith("*Measured ") and first.endswith("*"):
        rest = after.lstrip("\n")
    return text[:start] + rest


def with_markdown(text: str, prov: dict[str, Any]) -> str:
    """``text`` with ``prov``'s block at the top, after a leading ``# `` title if any.

    An earlier block is replaced; the rest of the text is left as it was.
    """
    body = markdown_body(text)
    title, rest = "", body
    first, sep, after = body.partition("\n")
    if first.startswith("# "):
        title, rest = first + "\n\n", after.lstrip("\n")
    return f"{title}{markdown_block(prov)}\n{rest}"


def with_json(data: Mapping[str, Any], prov: dict[str, Any]) -> dict[str, Any]:
    """A JSON document with ``prov`` as its top-level ``provenance`` (first, to be seen)."""
    return {"provenance": prov, **{k: v for k, v in data.items() if k != "provenance"}}


def platform_missing(p: Any) -> bool:
    """Whether a ``platform`` field names no machine (no CPU model, GPU or fingerprint)."""
    if isinstance(p, dict) and PER_SOURCE in p:
        return any(platform_missing(v) for v in p[PER_SOURCE].values())
    return not isinstance(p, dict) or not (p.get("cpu_model") or p.get("gpu") or p.get("id"))


def missing_fields(prov: Any) -> list[str]:
    """The :data:`FIELDS` that ``prov`` lacks or leaves empty (all of them for a non-dict).

    A ``platform`` that names no machine counts as missing.
    """
    if not isinstance(prov, dict):
        return list(FIELDS)
    missing = [f for f in FIELDS if prov.get(f) in (None, "", [], {})]
    if "platform" not in missing and platform_missing(prov["platform"]):
        missing.append("platform")
    return missing


def _jsonl_runs(text: str) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(header, closing noise record or None) of each run of a JSONL file's text."""
    runs: list[list[Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line (an interrupted write) belongs to no run's provenance
        if not isinstance(rec, dict):
            continue
        if rec.get("type") == "header":
            runs.append([rec, None])
        elif rec.get("type") == "noise" and runs and runs[-1][1] is None:
            runs[-1][1] = rec
    return [(h, n) for h, n in runs]


def _resolved(prov: Any, closing_noise: Mapping[str, Any] | None) -> Any:
    """``prov`` with a pending noise verdict replaced by its run's closing noise record."""
    if not isinstance(prov, dict) or (prov.get("noise") or {}).get("verdict") != PENDING \
            or closing_noise is None:
        return prov
    return {**prov, "noise": noise_verdict(dict(closing_noise))}


def run_provenances(path: str | os.PathLike[str]) -> list[dict[str, Any] | None]:
    """The provenance of every run of a JSONL file, in order (None for a run without)."""
    text = Path(path).read_text(encoding="utf-8")
    return [_resolved(h.get("provenance"), n) for h, n in _jsonl_runs(text)]


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance record of a results file (``.json``, ``.jsonl`` or ``.md``), or None.

    A JSONL file's provenance is its first header's ``provenance`` field, its
    pending noise verdict replaced by the run's closing noise record.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        runs = _jsonl_runs(text)
        return _resolved(runs[0][0].get("provenance"), runs[0][1]) if runs else None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return None
        return data.get("provenance") if isinstance(data, dict) else None
    if path.suffix == ".md":
        span = _block_span(text)
        if span is None:
            return None
        start, end = span
        try:
            return json.loads(text[start + len(MARKDOWN_OPEN):end])
        except json.JSONDecodeError:
            return None
    return None
