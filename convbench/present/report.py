"""``convbench report``: a directory with index.html, README.md and the PNG plots.

Tables are built once as data (:class:`~convbench.present.tables.Table`) and
rendered to both Markdown and HTML, so the two pages carry the same numbers,
and they are computed by the same :class:`~convbench.present.plots.RunView`
methods as the figures. README.md carries the runs'
:mod:`~convbench.store.provenance`, which covers the pictures it names.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convbench.present import plots, tradeoff
from convbench.present.format import fmt
from convbench.present.plots import RunView
from convbench.present.tables import (
    TRAINING_STEP,
    Table,
    directions_of,
    platform_label,
    training_step_note,
    training_step_table,
)
from convbench.present.tradeoff import TradeoffView
from convbench.store.jsonl import load_run
from convbench.store.provenance import combined, file_provenance, with_markdown

DEFAULT_ERROR_BUDGET = 1e-5


@dataclass
class Section:
    """A heading, a figure and the table with its numbers."""

    title: str
    image: str
    table: Table
    note: str = ""


def _matrix_table(view: RunView, values: list[list[float | None]], spec: str) -> Table:
    return Table(["layer", *view.kernels],
                 [[name, *(fmt(v, spec) for v in row)]
                  for name, row in zip(view.layer_names(), values, strict=True)])


def run_sections(view: RunView, out: Path, prefix: str, budget: float) -> list[Section]:
    """All figures and tables of one run."""
    sections = []

    def add(title: str, name: str, draw: Callable[[RunView, Path], Path], table: Table,
            note: str = "") -> None:
        draw(view, out / f"{prefix}{name}.png")
        sections.append(Section(title, f"{prefix}{name}.png", table, note))

    add("Throughput per layer (GFLOP/s)", "gflops", plots.plot_layer_gflops,
        _matrix_table(view, view.matrix("gflops"), ".1f"),
        "Direct-convolution flop count over median time, for every algorithm.")
    add(f"Speedup over {view.baseline}", "speedup", plots.plot_speedup_heatmap,
        _matrix_table(view, view.speedups(), ".2f"),
        f"{view.baseline} time / kernel time: above 1 the kernel is faster.")
    roof_rows = []
    for rec in view.records:
        g = rec.gflops
        if g is None:
            continue
        ai = view.intensity(rec)
        limit = (min(view.roof["peak_gflops"], ai * view.roof["bandwidth_gbs"])
                 if view.roof else None)
        roof_rows.append([rec.label, rec.kernel, fmt(ai, ".1f"),
                          fmt(g, ".1f"), fmt(100 * g / limit if limit else None, ".0f")])
    roof_note = (f"Roof: {view.roof['peak_gflops']:.1f} GFLOP/s, "
                 f"{view.roof['bandwidth_gbs']:.1f} GB/s (convbench roof)." if view.roof
                 else "No roof recorded with this run; run `convbench roof` before sweeping.")
    add("Roofline", "roofline", plots.plot_roofline,
        Table(["layer", "kernel", "flop/byte", "GFLOP/s", "% of roof"], roof_rows), roof_note)
    acc = Table(["layer", *(f"{k} rel_l2" for k in view.kernels),
                 *(f"{k} bound" for k in view.kernels)],
                [[name, *(fmt(v, ".1e") for v in rel), *(fmt(v, ".2f") for v in bound)]
                 for name, rel, bound in zip(view.layer_names(), view.matrix("rel_l2"),
                                             view.matrix("bound_ratio"), strict=True)])
    add("Accuracy against the float64 reference", "accuracy", plots.plot_accuracy, acc,
        "rel_l2 = ||y - ref|| / ||ref||; bound = max|err| / (u |W|*|X|), the error in units "
        "of the classical dot-product error scale.")
    sections.append(Section("Winner per layer", f"{prefix}winners.png",
                            Table(["layer", "fastest", f"fastest with rel_l2 <= {budget:g}"],
                                  [[n, a or "none", b or "none"]
                                   for n, a, b in view.winners(budget)]),
                            f"Error budget: rel_l2 <= {budget:g} (--error-budget)."))
    plots.plot_winners(view, out / f"{prefix}winners.png", budget)
    return sections


def tradeoff_sections(view: RunView, out: Path, prefix: str,
                      config: dict) -> list[Section]:
    """The time-vs-error trade-off of a tuned run (``convbench tune``)."""
    tv = TradeoffView.of(view, config)
    tradeoff.plot_tradeoff(tv, out / f"{prefix}tradeoff.png")
    tradeoff.plot_budgets(tv, out / f"{prefix}budgets.png")
    who = "convbench kernels and baselines" if tv.allow_vendor else "convbench kernels"
    return [
        Section(f"Time vs {tv.metric} per layer, tuned within {tv.budget:g}",
                f"{prefix}tradeoff.png", tv.choices_table(),
                f"Each kernel's median time against its {tv.metric}; the black step is the "
                f"Pareto front (no other kernel is both faster and more accurate), the dashed "
                f"line the budget, the ring the fastest of the {who} within it."),
        Section("Whole network per error budget", f"{prefix}budgets.png", tv.budgets_table(),
                f"The tuned plan takes, per layer, the fastest of the {who} within the "
                "budget; fixed kernels run every layer whatever their error ('over on N': "
                "N layers exceed the budget; hatched in the figure)."),
    ]


def network_comparison(views: list[RunView]) -> Table:
    """Whole-network time of every kernel, one column per run."""
    kernels = list(dict.fromkeys(k for v in views for k in v.network()))
    rows = []
    for k in kernels:
        row = [k]
        for v in views:
            entry = v.network().get(k)
            row.append(fmt(entry["time_s"] * 1e3, ".2f") if entry and entry["complete"]
                       else "partial" if entry else "—")
        rows.append(row)
    return Table(["kernel", *(f"{v.label} (ms)" for v in views)], rows)


def training_step_blocks(run: Any, label: str) -> list[tuple[str, list[Section], str]]:
    """A "training step" block per suite and platform of ``run`` that measured fwd, bwd_d
    and bwd_w (:func:`~convbench.present.tables.training_step_table`; a table, no figure)."""
    blocks = []
    for platform, latest in run.latest_per_platform().items():
        suites: dict[str, list[Any]] = {}
        for rec in latest.values():
            suites.setdefault(rec.get("suite") or "custom", []).append(rec)
        for suite, recs in suites.items():
            measured = set(directions_of(recs))
            if not ({"fwd", "bwd_d"} <= measured and measured & {"bwd_w", "bwd_wb"}):
                continue
            name = f"{label} / {suite}" if len(suites) > 1 else label
            if len(run.latest_per_platform()) > 1:
                name += f" on {platform_label(platform, recs)}"
            peer = RunView.from_run(run, label)[0].baseline
            section = Section(f"Training step ({' + '.join(TRAINING_STEP)} per layer)", "",
                              training_step_table(recs, peer),
                              "Sum over the suite's layers of median time x repeat count, "
                              "per direction and for the whole step. "
                              + training_step_note(recs))
            blocks.append((f"{name}: training step", [section], ""))
    return blocks


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "run"


def write_report(paths: list[str], out_dir: str | Path, *,
                 budget: float = DEFAULT_ERROR_BUDGET, title: str = "convbench report"
                 ) -> list[Path]:
    """Write ``index.html``, ``README.md`` and the PNGs for the runs in ``paths``.

    Returns
    -------
    list of Path
        Every file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    views: list[RunView] = []
    blocks: list[tuple[str, list[Section], str]] = []
    for path in paths:
        run = load_run(path)
        if not run.records:
            raise ValueError(f"{path} holds no result records")
        env = run.headers[0].get("environment", {}) if run.headers else {}
        label = f"{Path(path).stem}"
        if env.get("hostname"):
            label += f" @ {env['hostname']}"
        tune = tradeoff.tune_config(run)
        for view in RunView.from_run(run, label):
            views.append(view)
            without_host = re.sub(r" @ [^/]+", " ", view.label)
            prefix = f"{len(views)}-{_slug(without_host)}-"
            sections = run_sections(view, out, prefix, budget)
            if tune:
                sections += tradeoff_sections(view, out, prefix, tune)
            blocks.append((view.label, sections, _environment_line(run)))
        blocks += training_step_blocks(run, label)
    plots.plot_network(views, out / "network.png")
    network = Section("Whole network", "network.png", network_comparison(views),
                      "Sum over the suite's layers of median time x repeat count; "
                      "'partial' where a kernel did not run every layer.")
    written = [out / "README.md", out / "index.html"]
    readme = _markdown(title, network, blocks)
    prov = runs_provenance(paths)
    if prov is not None:
        readme = with_markdown(readme, prov)
    (out / "README.md").write_text(readme)
    (out / "index.html").write_text(_html(title, network, blocks))
    return written + sorted(out.glob("*.png"))


def runs_provenance(paths: list[str]) -> dict[str, Any] | None:
    """The provenance of a report: its run's, or its runs' combined (None: none has one)."""
    found = {Path(p).name: prov for p in paths if (prov := file_provenance(p)) is not None}
    if len(found) <= 1:
        return next(iter(found.values()), None)
    return combined(found)


def _environment_line(run) -> str:
    if not run.headers:
        return ""
    h = run.headers[0]
    env = h.get("environment", {})
    versions = env.get("versions", {})
    return (f"{env.get('cpu_model', '?')}, {env.get('cpu_affinity', '?')} cores, "
            f"threads {h.get('config', {}).get('threads') or 'all'}; numpy "
            f"{versions.get('numpy', '?')}, numba {versions.get('numba', '?')}, torch "
            f"{versions.get('torch', '—')}; started {h.get('started', '?')}; "
            f"`{' '.join(h.get('command', []))}`")


def _markdown(title: str, network: Section, blocks) -> str:
    parts = [f"# {title}\n", f"## {network.title}\n", network.note + "\n",
             f"![{network.title}]({network.image})\n", network.table.to_markdown() + "\n"]
    for label, sections, env in blocks:
        parts.append(f"## {label}\n")
        if env:
            parts.append(env + "\n")
        for s in sections:
            parts += [f"### {s.title}\n", s.note + "\n"]
            if s.image:
                parts.append(f"![{s.title}]({s.image})\n")
            parts.append(s.table.to_markdown() + "\n")
    return "\n".join(parts)


_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:12px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
        ".pair{display:flex;gap:1em;align-items:flex-start;flex-wrap:wrap}"
        "img{max-width:100%}")


def _html(title: str, network: Section, blocks) -> str:
    def section(s: Section, level: int = 3) -> str:
        image = f"<img src='{s.image}' alt='{html.escape(s.title)}'>" if s.image else ""
        return (f"<h{level}>{html.escape(s.title)}</h{level}><p>{html.escape(s.note)}</p>"
                f"<div class='pair'>{image}{s.table.to_html()}</div>")

    body = [f"<h1>{html.escape(title)}</h1>", section(network, 2)]
    for label, sections, env in blocks:
        body.append(f"<h2>{html.escape(label)}</h2><p>{html.escape(env)}</p>")
        body += [section(s) for s in sections]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
