"""Tables of committed results, generated when the site is built, each with its provenance.

A page asks for a results file by its path in the repository and for the kind of table it
wants::

    ```{results-table} results/cpu/vs_onednn.json
    :kind: peers-summary
    ```

The table is computed from the file as it is in the checkout being built, and the file's
provenance record (:mod:`convbench.store.provenance`: date, commit, machine, command,
repetitions, machine noise) is shown beside it. A figure that no committed file holds cannot
appear. A file that is missing, unreadable or without provenance gives no table: the build logs
a warning naming it (``make docs`` builds with ``-W``, so the build fails) and the page shows a
message in the table's place instead of any number.

Directives
----------
``results-table PATH``
    ``:kind:`` one of :data:`KINDS`; ``:match:`` a regular expression on layer names;
    ``:peer:`` the baseline of the ratios (default: the peer the file measured);
    ``:key:`` and ``:columns:`` for ``rows``; ``:caption:`` a line above the table. A PATH
    with ``*`` renders every committed file it matches (none: a warning, as for a missing
    file), so that a page picks up files committed after it was written.
``results-record PATH``
    One result record of a JSONL file, as JSON (``:kernel:``, ``:layer:``).
``results-files``
    Every committed JSON and JSONL file under ``results/`` with its provenance.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive, directives

#: The table kinds ``results-table`` renders, with the files each reads.
KINDS = {
    "network": "a sweep's JSONL: whole-network time per kernel, one table per direction",
    "training": "a sweep's JSONL: the training step (fwd + bwd_d + bwd_w) per kernel",
    "layers": "a sweep's JSONL: one row per layer and kernel (median, interval, ratio, error)",
    "peers": "an interleaved comparison's JSON (benchmarks/vs_onednn.py): per-layer ratios",
    "peers-summary": "the same: geometric mean of the per-layer ratios per kernel",
    "jit-cost": "benchmarks/jit_cost.py's JSON: compile and cache-load time per kernel",
    "margins": "benchmarks/check_platforms.py's JSON: legitimate errors against planted faults",
    "rows": "any results JSON holding a list of flat records: :key: names the list, "
            ":columns: the fields shown",
}
#: Where a page may read from: only committed results, never a scratch file.
RESULTS_DIR = "results"


class ResultsUnavailable(Exception):
    """A table a page asks for cannot be made from the files in this checkout."""


# ----------------------------------------------------------------------------- the files
def resolve(root: Path, relpath: str) -> Path:
    """The file ``relpath`` (relative to the repository ``root``), which must lie under
    ``results/`` and exist.

    Raises
    ------
    ValueError
        If ``relpath`` is not under ``results/``.
    ResultsUnavailable
        If the file is not in this checkout.
    """
    results = (root / RESULTS_DIR).resolve()
    path = (root / relpath).resolve()
    if results not in path.parents:
        raise ValueError(f"a results table reads files under {RESULTS_DIR}/, got {relpath!r}")
    if not path.is_file():
        raise ResultsUnavailable(f"{relpath} is not in this checkout")
    return path


def expand(root: Path, pattern: str) -> list[str]:
    """The paths (relative to ``root``) a page's argument names: itself, or, where it holds
    ``*``, ``?`` or ``[``, every committed file under ``results/`` that matches, sorted.

    A plain path is returned whether or not it exists, so that :func:`resolve` reports it.
    """
    if not any(ch in pattern for ch in "*?["):
        return [pattern]
    return sorted(str(p.relative_to(root)) for p in root.glob(pattern)
                  if p.is_file() and (root / RESULTS_DIR).resolve() in p.resolve().parents)


def read_json(path: Path) -> dict[str, Any]:
    """A results JSON document (an object).

    Raises
    ------
    ResultsUnavailable
        If it does not parse or is not an object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsUnavailable(f"{path.name} does not parse as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ResultsUnavailable(f"{path.name} holds a {type(data).__name__}, expected an object")
    return data


def file_provenance(path: Path) -> dict[str, Any]:
    """The provenance record of a results file, every run of a JSONL file combined.

    Raises
    ------
    ResultsUnavailable
        If the file carries none, or one that lacks a field.
    """
    from convbench.store import provenance as prov  # noqa: PLC0415

    record = prov.file_provenance(path) if path.suffix == ".jsonl" else \
        prov.read_provenance(path)
    if record is None:
        raise ResultsUnavailable(f"{path.name} carries no provenance record")
    missing = prov.missing_fields(record)
    if missing:
        raise ResultsUnavailable(f"{path.name}'s provenance lacks {', '.join(missing)}")
    return record


def check_sources(root: Path, record: Mapping[str, Any], relpath: str) -> None:
    """Refuse a file computed from other results files (its provenance's ``sources``) when
    one of them is no longer in this checkout: its figures would outlive their data.

    Raises
    ------
    ResultsUnavailable
        Naming the first source that is missing.
    """
    for source in record.get("sources") or []:
        name = str(source)
        if name.startswith(f"{RESULTS_DIR}/") and not (root / name).is_file():
            raise ResultsUnavailable(f"{relpath} was computed from {name}, which is not in "
                                     f"this checkout")


def _values(value: Any) -> list[tuple[Any, list[str]]]:
    """The distinct values of a provenance field, each with the runs that have it (none named
    where the field is not per run)."""
    from convbench.store.provenance import PER_SOURCE  # noqa: PLC0415

    if not (isinstance(value, dict) and PER_SOURCE in value):
        return [(value, [])]
    out: list[tuple[Any, list[str]]] = []
    for source, v in value[PER_SOURCE].items():
        for seen, sources in out:
            if seen == v:
                sources.append(source)
                break
        else:
            out.append((v, [source]))
    return out


def _known(value: Any) -> str:
    return str(value) if value not in (None, "", [], "?") else "not recorded"


def _machine(platform: Any) -> str:
    if not isinstance(platform, dict):
        return str(platform)
    if platform.get("backend") == "gpu" and isinstance(platform.get("gpu"), dict):
        gpu = platform["gpu"]
        return (f"{_known(gpu.get('name'))}, CUDA {_known(gpu.get('cuda_runtime'))}, cuDNN "
                f"{_known(gpu.get('cudnn'))}; host {_known(platform.get('cpu_model'))}; "
                f"fingerprint {_known(platform.get('id'))}")
    blas = ", ".join(platform.get("blas") or []) or None
    return (f"{_known(platform.get('cpu_model'))}, {_known(platform.get('cpu_count'))} cores, "
            f"{_known(platform.get('cpu_isa'))}, BLAS {_known(blas)}, Numba target "
            f"{_known(platform.get('numba_cpu'))}, oneDNN {_known(platform.get('onednn_isa'))}; "
            f"fingerprint {_known(platform.get('id'))}")


def _command(command: Any) -> str:
    return " ".join(map(str, command)) if isinstance(command, list) else str(command)


def _repetitions(rep: Any) -> str:
    if isinstance(rep, dict):
        return ", ".join(f"{k} {v}" for k, v in rep.items())
    return str(rep)


def _noise(noise: Any) -> str:
    if not isinstance(noise, dict):
        return str(noise)
    verdict = str(noise.get("verdict", "?"))
    why = noise.get("reasons") or ([noise["why"]] if noise.get("why") else [])
    return verdict + (f" ({'; '.join(map(str, why))})" if why else "")


def provenance_lines(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(label, text)`` pairs that show a provenance record beside a table.

    Fields on which the runs of a combined record differ list each run's value.
    """
    shown: list[tuple[str, Callable[[Any], str]]] = [
        ("date", str), ("commit", str), ("machine", _machine), ("command", _command),
        ("repetitions", _repetitions), ("machine noise", _noise)]
    lines = []
    for label, show in shown:
        key = {"machine": "platform", "machine noise": "noise"}.get(label, label)
        values = _values(record.get(key))
        texts = [show(v) + (f" ({', '.join(sources)})" if len(values) > 1 else "")
                 for v, sources in values]
        lines.append((label, "; ".join(texts)))
    if record.get("recovered"):
        fields = sorted({f for note in _recovered(record) for f in note})
        lines.append(("recovered", "inferred after the run, not recorded by it: "
                      + ", ".join(fields) + " (the file's provenance block says how)"))
    if record.get("sources"):
        lines.append(("runs", str(len(record["sources"]))))
    return lines


def _recovered(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    notes = record.get("recovered") or {}
    if record.get("sources"):
        return [n for n in notes.values() if isinstance(n, Mapping)]
    return [notes]


# ----------------------------------------------------------------------------- the tables
Table = tuple[list[str], list[list[str]]]


def _load_sweep(path: Path) -> list[Any]:
    from convbench.store.jsonl import load_run  # noqa: PLC0415

    try:
        run = load_run(path)
    except ValueError as exc:
        raise ResultsUnavailable(str(exc)) from exc
    records = [r for per in run.latest_per_platform().values() for r in per.values()]
    if not records:
        raise ResultsUnavailable(f"{path.name} holds no result records")
    return records


def _peer_of(records: Iterable[Any], backend: str = "cpu", peer: str | None = None) -> str:
    from convbench.registry import speedup_peer  # noqa: PLC0415

    return peer or speedup_peer(backend, (r.kernel for r in records))


def _backend(records: Sequence[Any]) -> str:
    return str(records[0].get("backend") or "cpu")


def network_tables(path: Path, peer: str | None = None) -> list[tuple[str, Table]]:
    """Whole-network tables of a sweep, one per direction it measured."""
    from convbench.present.tables import directions_of, network_table  # noqa: PLC0415

    records = _load_sweep(path)
    peer = _peer_of(records, _backend(records), peer)
    out = []
    for d in directions_of(records):
        table = network_table([r for r in records if r.dir == d], peer)
        out.append((f"Whole network, {d} (sum of median x repeat)",
                    (table.header, table.rows)))
    return out


def training_table(path: Path, peer: str | None = None) -> list[tuple[str, Table]]:
    """The training-step table of a sweep that measured fwd, bwd_d and bwd_w."""
    from convbench.present.tables import (  # noqa: PLC0415
        training_step_note,
        training_step_table,
    )

    records = _load_sweep(path)
    table = training_step_table(records, _peer_of(records, _backend(records), peer))
    if not table.rows:
        raise ResultsUnavailable(f"{path.name} holds no training step (fwd, bwd_d and bwd_w)")
    return [(training_step_note(records) or "Training step", (table.header, table.rows))]


def _markdown_rows(text: str) -> Table:
    """Header and rows of a Markdown table (cells split on unescaped ``|``)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    split = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln)[1:-1]]
             for ln in lines]
    return split[0], [r for r in split[2:]]


def layer_tables(path: Path, peer: str | None = None, match: str | None = None
                 ) -> list[tuple[str, Table]]:
    """The per-layer table of a sweep, limited to layers whose name matches ``match``."""
    from convbench.present.tables import layer_table  # noqa: PLC0415

    records = _load_sweep(path)
    if match:
        records = [r for r in records if re.search(match, str(r.get("name") or ""))]
        if not records:
            raise ResultsUnavailable(f"no layer of {path.name} matches {match!r}")
    header, rows = _markdown_rows(layer_table(records, _peer_of(records, _backend(records),
                                                                peer)))
    return [("Per layer", (header, [[c.replace("<br>", " ") for c in r] for r in rows]))]


def _comparison(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    data = read_json(path)
    layers = [la for la in data.get("layers") or [] if isinstance(la.get("ratios"), dict)]
    if not layers:
        raise ResultsUnavailable(f"{path.name} holds no per-layer ratios")
    peers = data.get("peers") or sorted({p for la in layers for r in la["ratios"].values()
                                         for p in r})
    return data, layers, list(peers)


def _direction(problem: str) -> str:
    found = re.search(r"--dir=(\w+)", problem)
    return found.group(1).lower() if found else "fwd"


def _ratio(layer: Mapping[str, Any], kernel: str, peer: str) -> float | None:
    value = (layer["ratios"].get(kernel) or {}).get(peer)
    return value if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 \
        else None


def _peer_choice(peers: list[str], peer: str | None) -> str:
    from convbench.registry import FORMER_PEER, SPEEDUP_PEER  # noqa: PLC0415

    if peer:
        if peer not in peers:
            raise ResultsUnavailable(f"the file compares with {', '.join(peers)}, not {peer}")
        return peer
    best = SPEEDUP_PEER["cpu"]
    for candidate in (best, FORMER_PEER.get(best)):
        if candidate in peers:
            return candidate
    return peers[0]


def peer_layer_table(path: Path, peer: str | None = None, match: str | None = None
                     ) -> list[tuple[str, Table]]:
    """Per-layer ratios ``t_peer / t_kernel`` of an interleaved comparison (> 1: faster)."""
    data, layers, peers = _comparison(path)
    peer = _peer_choice(peers, peer)
    kernels = [k for k in data.get("kernels") or [] if any(k in la["ratios"] for la in layers)]
    kernels += sorted({k for la in layers for k in la["ratios"]} - set(kernels))
    rows = []
    for la in layers:
        if match and not re.search(match, str(la.get("name"))):
            continue
        cells = []
        for k in kernels:
            r = _ratio(la, k, peer)
            interval = ((la.get("intervals") or {}).get(k) or {}).get(peer)
            text = "—" if r is None else f"{r:.2f}"
            if r is not None and interval:
                text += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
            cells.append(text)
        peer_ms = (la.get("medians_ms") or {}).get(peer)
        rows.append([str(la.get("suite", "")), str(la.get("name", "")),
                     _direction(str(la.get("problem", ""))),
                     "—" if peer_ms is None else f"{peer_ms:.3f}", *cells])
    if not rows:
        raise ResultsUnavailable(f"no layer of {path.name} matches {match!r}")
    header = ["suite", "layer", "dir", f"{peer} ms", *[f"{k} (x {peer})" for k in kernels]]
    return [(f"Per layer: {peer} time / kernel time (> 1: the kernel is faster)",
             (header, rows))]


def peer_summary_table(path: Path, peer: str | None = None, match: str | None = None
                       ) -> list[tuple[str, Table]]:
    """Per kernel and direction: the geometric mean of its per-layer ratios to ``peer``."""
    data, layers, peers = _comparison(path)
    peer = _peer_choice(peers, peer)
    groups: dict[tuple[str, str], list[float]] = {}
    for la in layers:
        if match and not re.search(match, str(la.get("name"))):
            continue
        d = _direction(str(la.get("problem", "")))
        for k in la["ratios"]:
            r = _ratio(la, k, peer)
            if r is not None and k != peer:
                groups.setdefault((k, d), []).append(r)
    if not groups:
        raise ResultsUnavailable(f"{path.name} holds no ratio against {peer}")
    rows = []
    for (k, d), values in groups.items():
        gm = math.exp(sum(map(math.log, values)) / len(values))
        rows.append([k, d, str(len(values)), f"{gm:.2f}", f"{min(values):.2f}",
                     f"{max(values):.2f}"])
    header = ["kernel", "dir", "layers", f"geometric mean x {peer}", "lowest layer",
              "highest layer"]
    return [(f"Per kernel: geometric mean over layers of {peer} time / kernel time",
             (header, rows))]


def jit_cost_table(path: Path, peer: str | None = None, match: str | None = None
                   ) -> list[tuple[str, Table]]:
    """Compile time (empty cache) against load time (full cache), per kernel."""
    data = read_json(path)
    cold = (data.get("cold") or {}).get("kernels") or {}
    warm = (data.get("warm") or {}).get("kernels") or {}
    if not cold:
        raise ResultsUnavailable(f"{path.name} holds no per-kernel compile times")
    rows = []
    for name, entry in cold.items():
        load = (warm.get(name) or {}).get("jit_s")
        rows.append([name, f"{entry.get('jit_s', math.nan):.3f}",
                     "—" if load is None else f"{load:.3f}",
                     ", ".join(entry.get("problems") or []) or "—"])
    header = ["kernel", "compile s (empty cache)", "load s (full cache)", "problems run"]
    totals = [f"{k} process: {(data.get(k) or {}).get('process_s', math.nan):.1f} s"
              for k in ("cold", "warm")]
    return [("First call minus steady call, summed over the problems; whole "
             + ", ".join(totals), (header, rows))]


def margins_table(path: Path, peer: str | None = None, match: str | None = None
                  ) -> list[tuple[str, Table]]:
    """Largest legitimate error against the smallest planted fault, per kernel and metric."""
    data = read_json(path)
    margins = data.get("margins") or []
    if not margins:
        raise ResultsUnavailable(f"{path.name} holds no margins")
    rows = []
    for m in margins:
        if match and not re.search(match, str(m.get("kernel"))):
            continue
        legit, fault = m.get("largest_legitimate"), m.get("smallest_fault")
        margin = fault / legit if legit and fault else None
        rows.append([str(m.get("kernel")), str(m.get("metric")), _num(legit),
                     str(m.get("legitimate_at", "")), _num(fault), str(m.get("fault_at", "")),
                     "—" if margin is None else f"{margin:,.0f}x"])
    header = ["kernel", "metric", "largest legitimate", "at", "smallest fault", "at", "margin"]
    return [("Margins over every platform the run emulated", (header, rows))]


def rows_table(path: Path, key: str, columns: Sequence[str]) -> list[tuple[str, Table]]:
    """The records of the list ``key`` of a results JSON, one row each, ``columns`` shown."""
    data = read_json(path)
    records = data.get(key)
    if not isinstance(records, list) or not records:
        raise ResultsUnavailable(f"{path.name} holds no list {key!r}")
    rows = []
    for rec in records:
        if not isinstance(rec, Mapping):
            raise ResultsUnavailable(f"{path.name}'s {key!r} holds a {type(rec).__name__}, "
                                     f"expected records")
        rows.append([_cell(_field(rec, c)) for c in columns])
    return [(f"{key} ({len(rows)} records)", (list(columns), rows))]


def _field(rec: Mapping[str, Any], column: str) -> Any:
    """``rec[column]``, where ``a.b`` reads ``rec["a"]["b"]``."""
    value: Any = rec
    for part in column.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _cell(v: Any) -> str:
    """A value as a table shows it: ``[lo, hi]`` an interval, ``[x, lo, hi]`` a point in its
    interval, lists of names joined."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
        if len(v) == 2:
            return f"[{v[0]:.3g}, {v[1]:.3g}]"
        if len(v) == 3:
            return f"{v[0]:.3g} [{v[1]:.3g}, {v[2]:.3g}]"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def _num(v: Any) -> str:
    return "—" if not isinstance(v, (int, float)) else f"{v:.3g}"


BUILDERS: dict[str, Callable[..., list[tuple[str, Table]]]] = {
    "network": lambda path, peer=None, match=None: network_tables(path, peer),
    "training": lambda path, peer=None, match=None: training_table(path, peer),
    "layers": layer_tables,
    "peers": peer_layer_table,
    "peers-summary": peer_summary_table,
    "jit-cost": jit_cost_table,
    "margins": margins_table,
}


def build_tables(root: Path, relpath: str, kind: str, *, peer: str | None = None,
                 match: str | None = None, key: str | None = None,
                 columns: Sequence[str] = ()
                 ) -> tuple[dict[str, Any], list[tuple[str, Table]]]:
    """The provenance of ``relpath`` and the tables of ``kind`` made from it.

    Raises
    ------
    ValueError
        If ``kind`` is unknown or ``relpath`` is not under ``results/``.
    ResultsUnavailable
        If the file is missing, has no provenance, or holds no such table.
    """
    if kind not in KINDS:
        raise ValueError(f"results-table :kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "rows" and not (key and columns):
        raise ValueError("results-table :kind: rows needs :key: and :columns:")
    path = resolve(root, relpath)
    record = file_provenance(path)
    check_sources(root, record, relpath)
    if kind == "rows":
        return record, rows_table(path, key or "", columns)
    return record, BUILDERS[kind](path, peer=peer, match=match)


def result_record(root: Path, relpath: str, kernel: str | None = None,
                  layer: str | None = None) -> tuple[dict[str, Any], str]:
    """The provenance of a JSONL file and its first result record of ``kernel`` on
    ``layer``, as indented JSON with long sample lists cut short."""
    path = resolve(root, relpath)
    if path.suffix != ".jsonl":
        raise ValueError(f"results-record reads a JSONL file, got {relpath!r}")
    record = file_provenance(path)
    check_sources(root, record, relpath)
    from convbench.store.jsonl import iter_jsonl  # noqa: PLC0415

    for rec in iter_jsonl(path):
        if rec.get("type") == "result" and (kernel is None or rec.get("kernel") == kernel) \
                and (layer is None or rec.get("name") == layer):
            return record, json.dumps(_shortened(rec), indent=1, ensure_ascii=False)
    raise ResultsUnavailable(f"{relpath} holds no result of kernel {kernel} on layer {layer}")


def _shortened(value: Any, keep: int = 3) -> Any:
    if isinstance(value, dict):
        return {k: _shortened(v, keep) for k, v in value.items()}
    if isinstance(value, list) and len(value) > keep and all(
            isinstance(v, (int, float, list)) for v in value):
        return [*[_shortened(v, keep) for v in value[:keep]],
                f"... {len(value) - keep} more"]
    return value


def results_files(root: Path) -> list[tuple[str, dict[str, Any] | None]]:
    """Every JSON and JSONL file under ``results/``, with its provenance or None."""
    out = []
    for path in sorted((root / RESULTS_DIR).rglob("*")):
        if path.suffix in (".json", ".jsonl") and path.is_file():
            try:
                record = file_provenance(path)
            except ResultsUnavailable:
                record = None
            out.append((str(path.relative_to(root)), record))
    return out


# ----------------------------------------------------------------------------- docutils
def table_node(header: Sequence[str], rows: Sequence[Sequence[str]]) -> nodes.table:
    """A docutils table of plain-text cells."""
    table = nodes.table(classes=["results"])
    group = nodes.tgroup(cols=len(header))
    table += group
    group.extend(nodes.colspec(colwidth=1) for _ in header)
    head = nodes.thead()
    group += head
    head += _row(header)
    body = nodes.tbody()
    group += body
    for row in rows:
        body += _row(list(row) + [""] * (len(header) - len(row)))
    return table


def _row(cells: Sequence[str]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        # Cells come as Markdown from convbench's own tables: show their text, not the markup.
        entry += nodes.paragraph(text=str(cell).replace("**", "").replace("`", ""))
        row += entry
    return row


def provenance_node(record: Mapping[str, Any], relpath: str) -> nodes.Element:
    """The provenance shown beside a table: a field list headed by the file's path."""
    box = nodes.container(classes=["results-provenance"])
    head = nodes.paragraph()
    head += nodes.strong(text="Source: ")
    head += nodes.literal(text=relpath)
    box += head
    fields = nodes.field_list()
    for label, text in provenance_lines(record):
        field = nodes.field()
        field += nodes.field_name(text=label)
        body = nodes.field_body()
        para = nodes.paragraph()
        para += nodes.literal(text=text) if label == "command" else nodes.Text(text)
        body += para
        field += body
        fields += field
    box += fields
    return box


def unavailable_node(relpath: str, why: str) -> nodes.Element:
    """What a page shows where a table could not be made: the reason, no number."""
    note = nodes.warning()
    note += nodes.paragraph(text=f"Table dropped: {why}. No figure from {relpath} is shown; "
                                 f"rerun what writes it, or fix the page that asks for it.")
    return note


def _root(directive: Directive) -> Path:
    env = directive.state.document.settings.env
    configured = env.config.convbench_results_root
    base = Path(env.srcdir)
    return (base / configured).resolve() if configured else base.parent.resolve()


def _logger() -> Any:
    from sphinx.util import logging  # noqa: PLC0415

    return logging.getLogger(__name__)


class ResultsTable(Directive):
    """``results-table PATH``: tables computed from a committed results file."""

    required_arguments = 1
    option_spec = {"kind": directives.unchanged_required, "match": directives.unchanged,
                   "peer": directives.unchanged, "caption": directives.unchanged,
                   "key": directives.unchanged, "columns": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        pattern = self.arguments[0]
        env = self.state.document.settings.env
        paths = expand(_root(self), pattern)
        if not paths:
            why = f"no committed file matches {pattern}"
            _logger().warning(f"results-table {pattern}: {why}; the table is dropped",
                              location=(env.docname, self.lineno))
            return [unavailable_node(pattern, why)]
        return [node for relpath in paths for node in self._one(relpath)]

    def _one(self, relpath: str) -> list[nodes.Node]:
        env = self.state.document.settings.env
        env.note_dependency(str(_root(self) / relpath))
        columns = [c.strip() for c in self.options.get("columns", "").split(",") if c.strip()]
        try:
            record, tables = build_tables(_root(self), relpath, self.options.get("kind", ""),
                                          peer=self.options.get("peer"),
                                          match=self.options.get("match"),
                                          key=self.options.get("key"), columns=columns)
        except ResultsUnavailable as exc:
            _logger().warning(f"results-table {relpath}: {exc}; the table is dropped",
                              location=(env.docname, self.lineno))
            return [unavailable_node(relpath, str(exc))]
        except ValueError as exc:
            raise self.error(str(exc)) from exc
        box = nodes.container(classes=["results-table"])
        if self.options.get("caption"):
            box += nodes.paragraph(text=self.options["caption"], classes=["results-caption"])
        box += provenance_node(record, relpath)
        for title, (header, rows) in tables:
            box += nodes.rubric(text=title)
            box += table_node(header, rows)
        return [box]


class ResultsRecord(Directive):
    """``results-record PATH``: one result record of a JSONL file, as JSON."""

    required_arguments = 1
    option_spec = {"kernel": directives.unchanged, "layer": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        relpath = self.arguments[0]
        env = self.state.document.settings.env
        env.note_dependency(str(_root(self) / relpath))
        try:
            record, text = result_record(_root(self), relpath, self.options.get("kernel"),
                                         self.options.get("layer"))
        except ResultsUnavailable as exc:
            _logger().warning(f"results-record {relpath}: {exc}; the record is dropped",
                              location=(env.docname, self.lineno))
            return [unavailable_node(relpath, str(exc))]
        except ValueError as exc:
            raise self.error(str(exc)) from exc
        block = nodes.literal_block(text, text, language="json")
        return [provenance_node(record, relpath), block]


class ResultsFiles(Directive):
    """``results-files``: every committed JSON/JSONL results file with its provenance."""

    def run(self) -> list[nodes.Node]:
        rows = []
        for relpath, record in results_files(_root(self)):
            if record is None:
                rows.append([relpath, "no provenance", "", "", ""])
                continue
            lines = dict(provenance_lines(record))
            rows.append([relpath, lines["date"], lines["commit"], lines["machine"],
                         lines["command"]])
        return [table_node(["file", "date", "commit", "machine", "command"], rows)]


def setup(app: Any) -> dict[str, Any]:
    """Register the directives and the ``convbench_results_root`` setting."""
    app.add_config_value("convbench_results_root", "", "env")
    app.add_directive("results-table", ResultsTable)
    app.add_directive("results-record", ResultsRecord)
    app.add_directive("results-files", ResultsFiles)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
