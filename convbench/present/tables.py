"""Tables of a sweep's records, as data (:class:`Table`) rendered to Markdown or HTML.

Markdown, so they paste into issues and READMEs; the report renders the same
tables to HTML.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from convbench.present.format import fmt
from convbench.store.records import Record, as_record, by_platform

#: ``kind`` of convbench's own kernels (as opposed to ``baseline``).
CONVBENCH_KIND = "kernel"


@dataclass
class Table:
    """A table as data: rendered to Markdown and HTML from the same cells."""

    header: list[str]
    rows: list[list[str]]

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def platform_label(platform: str | None, records: Iterable[dict[str, Any]]) -> str:
    """``platform 1a2b3c4d5e6f (host1, host2)``: a platform and the hosts it was measured on."""
    hosts = sorted({h for r in records if (h := r.get("host"))})
    return f"platform {platform or 'unknown'}" + (f" ({', '.join(hosts)})" if hosts else "")


def group_by_layer(records: Iterable[dict[str, Any]]) -> OrderedDict[str, list[Record]]:
    """Records grouped by problem descriptor, in first-seen order, last record wins.

    Raises
    ------
    ValueError
        If the records come from more than one platform: their times must not
        meet in one table row or ratio (split them with :func:`by_platform`).
    """
    layers: OrderedDict[str, OrderedDict[str, Record]] = OrderedDict()
    platforms = set()
    for rec in map(as_record, records):
        layers.setdefault(rec["problem"], OrderedDict())[rec.kernel] = rec
        platforms.add(rec.platform)
    if len(platforms) > 1:
        raise ValueError(f"records of {len(platforms)} platforms "
                         f"({', '.join(sorted(str(p) for p in platforms))}) cannot share a "
                         "layer's row: group them by platform first")
    return OrderedDict((k, list(v.values())) for k, v in layers.items())


def kernel_label(rec: Record) -> str:
    """Kernel name, with the cuDNN engine and its algorithm class when recorded."""
    details = rec.get("details") or {}
    if details.get("engine"):
        return f"{rec.kernel} `{details['engine']}` ({details.get('algorithm', '?')})"
    return rec.kernel


def layer_table(records: Iterable[dict[str, Any]], peer: str = "onednn") -> str:
    """Per layer and kernel: time, GFLOP/s, speedup over ``peer``, errors, winner.

    ``★`` marks the fastest entry of a layer; ``☆`` the fastest convbench
    kernel where a baseline won. Records of several platforms (a Dask sweep
    over different machines) get a table each, headed by the platform.
    """
    groups = by_platform(records)
    if len(groups) > 1:
        return "\n\n".join(f"**{platform_label(platform, recs)}**\n\n"
                            + layer_table(recs, peer) for platform, recs in groups.items())
    lines = [f"| layer | kernel | median ms | GFLOP/s | x {peer} | rel_l2 | bound_ratio | |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for problem, recs in group_by_layer(records).items():
        timed = [r for r in recs if r.median_s]
        base = next((r for r in timed if r.kernel == peer), None)
        fastest = min(timed, key=lambda r: r.median_s, default=None)
        best_ours = min((r for r in timed if r.get("kind") == CONVBENCH_KIND),
                        key=lambda r: r.median_s, default=None)
        for i, rec in enumerate(recs):
            label = (f"{rec.label}{f' (x{rec.repeat})' if rec.repeat > 1 else ''}"
                     f"<br>`{problem}`" if i == 0 else "")
            if not rec.ok:
                cell = "skipped" if rec.status == "skipped" else "**FAILED**"
                reason = (rec.get("reason") or "").replace("|", "/")[:70]
                lines.append(f"| {label} | {rec.kernel} | {cell} | | | {reason} | | |")
                continue
            t = rec.median_s
            speedup = base.median_s / t if base is not None and t else None
            mark = "★" if rec is fastest else ("☆" if rec is best_ours else "")
            lines.append(
                f"| {label} | {kernel_label(rec)} | {fmt(t * 1e3 if t else None, '.3f')} | "
                f"{fmt(rec.gflops, '.1f')} | {fmt(speedup, '.2f')} | "
                f"{fmt(rec.rel_l2, '.1e')} | {fmt(rec.bound_ratio, '.2f')} | {mark} |")
    return "\n".join(lines)


def network_totals(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Whole-network time per kernel: sum of median x repeat over the layers.

    A kernel that did not run every layer gets ``complete=False`` and the sum
    over the layers it ran. ``best-of-convbench`` takes, per layer, the
    fastest convbench kernel.
    """
    layers = group_by_layer(records)
    totals: dict[str, dict[str, Any]] = OrderedDict()
    best = {"time_s": 0.0, "layers": 0, "kind": "best", "complete": True}
    for recs in layers.values():
        for rec in recs:
            entry = totals.setdefault(rec.kernel, {"time_s": 0.0, "layers": 0,
                                                   "kind": rec.get("kind"), "complete": True})
            if rec.median_s:
                entry["time_s"] += rec.median_s * rec.repeat
                entry["layers"] += 1
            else:
                entry["complete"] = False
        ours = [r.median_s for r in recs if r.get("kind") == CONVBENCH_KIND and r.median_s]
        if ours:
            best["time_s"] += min(ours) * recs[0].repeat
            best["layers"] += 1
        else:
            best["complete"] = False
    if layers:
        totals["best-of-convbench"] = best
    return totals


def network_table(records: Iterable[dict[str, Any]], peer: str = "onednn") -> Table:
    """Whole-network line per kernel and for best-of-convbench, against ``peer``.

    Records of several platforms get their own lines each, with a ``platform``
    column: ``x peer`` is the ratio to ``peer`` on the same platform.
    """
    groups = by_platform(records)
    if len(groups) > 1:
        rows = [[platform_label(platform, recs), *row] for platform, recs in groups.items()
                for row in network_table(recs, peer).rows]
        return Table(["platform", *network_table([], peer).header], rows)
    layers = group_by_layer(records)
    totals = network_totals(r for recs in layers.values() for r in recs)
    flops = sum((recs[0].get("flops") or 0) * recs[0].repeat for recs in layers.values())
    base = totals.get(peer)
    base_t = base["time_s"] if base and base["complete"] else None
    rows = []
    for name, entry in totals.items():
        t = entry["time_s"]
        ran = f"{entry['layers']}/{len(layers)}"
        if entry["complete"] and t:
            rows.append([name, f"{t * 1e3:.2f}", f"{flops / t / 1e9:.1f}",
                         fmt(base_t / t if base_t else None, ".2f"), ran])
        else:
            rows.append([name, f"— (partial: {t * 1e3:.2f} over the layers run)", "", "", ran])
    return Table(["kernel", "whole network ms", "GFLOP/s", f"x {peer}", "layers run"], rows)


def comparison_table(rows: list[Any]) -> str:
    """``convbench compare`` output: ratios per (problem, kernel), regressions flagged."""
    several = len({r.new.platform for r in rows} | {r.old.platform for r in rows}) > 1
    lines = [f"| layer | kernel |{' platform |' if several else ''} old ms | new ms | "
             "time new/old | rel_l2 new/old | |",
             f"|---|---|{'---|' if several else ''}---:|---:|---:|---:|---|"]
    for row in rows:
        told, tnew = row.old.median_s, row.new.median_s
        flag = "**REGRESSION**: " + ", ".join(row.regressions) if row.regressions else ""
        if not row.same_platform:
            flag = ("platforms differ: time not compared" + (f"; {flag}" if flag else ""))
        where = (f" {row.new.platform or '?'} |" if row.same_platform else
                 f" {row.old.platform or '?'} → {row.new.platform or '?'} |") if several else ""
        lines.append(f"| {row.new.label} | {row.key[2]} |{where} "
                     f"{fmt(told * 1e3 if told else None, '.3f')} | "
                     f"{fmt(tnew * 1e3 if tnew else None, '.3f')} | "
                     f"{fmt(row.time_ratio, '.2f')} | {fmt(row.error_ratio, '.2f')} | {flag} |")
    return "\n".join(lines)


def findings_table(findings: list[Any]) -> str:
    """``convbench check`` findings: what failed, the numbers behind it, by how much."""
    lines = ["| layer | kernel | what | baseline | measured | limit | x limit |",
             "|---|---|---|---:|---:|---:|---:|"]
    for f in findings:
        if f.measured is None:
            lines.append(f"| {f.name} | {f.kernel} | {f.what} | | | | |")
            continue
        over = (fmt(f.measured / f.limit, ".2f") if f.limit else
                ("inf" if f.measured else fmt(0.0, ".2f")))
        lines.append(f"| {f.name} | {f.kernel} | {f.what} | {fmt(f.baseline, '.3e')} | "
                     f"{fmt(f.measured, '.3e')} | {fmt(f.limit, '.3e')} | {over} |")
    return "\n".join(lines)
