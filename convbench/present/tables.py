"""Tables of a sweep's records, as data (:class:`Table`) rendered to Markdown or HTML.

Markdown, so they paste into issues and READMEs; the report renders the same
tables to HTML.
"""

from __future__ import annotations

import html
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from convbench.measure.stats import (
    Ratio,
    Summary,
    crossfit_fastest,
    prediction_interval,
    ranking,
    ratio,
    summarize,
    summary_of,
    total,
)
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
    """Records grouped by problem descriptor (and direction), in first-seen order, last
    record wins.

    Raises
    ------
    ValueError
        If the records come from more than one platform: their times must not
        meet in one table row or ratio (split them with
        :func:`~convbench.store.records.by_platform`).
    """
    layers: OrderedDict[str, OrderedDict[str, Record]] = OrderedDict()
    platforms = set()
    for rec in map(as_record, records):
        # The descriptor names the direction (--dir=BWD_D...); a record from before
        # directions were recorded is a forward one, whose descriptor has no --dir=BWD.
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
    if details.get("layout") and details["layout"] != "NCHW":
        return f"{rec.kernel} ({details['layout']} in and out)"
    if details.get("configuration"):
        return f"{rec.kernel} ({details['configuration']})"
    return rec.kernel


def layer_marks(recs: list[Record]) -> dict[str, str]:
    """Kernel -> the winner's mark on one layer.

    ``★`` goes to the fastest entry when it is faster than every other with
    confidence (:func:`convbench.measure.stats.ranking`: the interval of
    other / fastest above 1 by at least ``WIN_MARGIN``) and its own record is
    stable; otherwise every entry tied with it gets ``≈``. Where a baseline
    wins or ties, the fastest convbench kernels get ``☆`` (or ``≈☆`` when
    tied among themselves) by the same rule. Records without samples (files
    written before rounds existed) are ranked by their medians alone.
    """
    timed = [r for r in recs if r.median_s]
    summaries = {r.kernel: summary_of(r) for r in timed}
    if any(v is None for v in summaries.values()):
        return _point_marks(timed)
    kinds = {r.kernel: r.get("kind") for r in timed}
    marks: dict[str, str] = {}
    overall = ranking(summaries)
    if overall is None:
        return marks
    for k in overall.tied:
        marks[k] = "★" if overall.clean else "≈"
    if all(kinds[k] == CONVBENCH_KIND for k in overall.tied):
        return marks
    ours = ranking({k: v for k, v in summaries.items() if kinds[k] == CONVBENCH_KIND})
    if ours is not None:
        for k in ours.tied:
            marks.setdefault(k, "☆" if ours.clean else "≈☆")
    return marks


def _point_marks(timed: list[Record]) -> dict[str, str]:
    """``★``/``☆`` by median alone, for records that keep no samples."""
    fastest = min(timed, key=lambda r: r.median_s, default=None)
    if fastest is None:
        return {}
    marks = {fastest.kernel: "★"}
    ours = min((r for r in timed if r.get("kind") == CONVBENCH_KIND),
               key=lambda r: r.median_s, default=None)
    if ours is not None and ours is not fastest:
        marks[ours.kernel] = "☆"
    return marks


def peer_ratio(rec: Record, base: Record | None) -> Ratio | None:
    """``base`` time / ``rec`` time (> 1: ``rec`` is faster), paired by round."""
    if base is None or not rec.median_s or not base.median_s:
        return None
    a, b = summary_of(base), summary_of(rec)
    if a is None or b is None:
        return Ratio(base.median_s / rec.median_s, math.nan, math.nan, False)
    return ratio(a, b, paired=True)


def ratio_text(r: Ratio | None, spec: str = ".2f") -> str:
    """``0.85 [0.80, 0.91]``, or the value alone where there is no interval."""
    if r is None:
        return "—"
    if math.isnan(r.lo):
        return fmt(r.value, spec)
    return r.text(spec)


def median_text(rec: Record) -> str:
    """Median ms with its 95% interval, and ``~`` for an unstable record."""
    t = rec.median_s
    text = fmt(t * 1e3 if t else None, ".3f")
    ci = rec.ci95_s
    if ci:
        text += f" [{ci[0] * 1e3:.3f}, {ci[1] * 1e3:.3f}]"
    return text + (" ~" if rec.unstable else "")


def layer_table(records: Iterable[dict[str, Any]], peer: str = "onednn") -> str:
    """Per layer and kernel: time with its interval, GFLOP/s, speedup over ``peer``, errors,
    the winner's mark (:func:`layer_marks`).

    ``~`` after a time marks an unstable record (its rounds disagree; see
    :mod:`convbench.measure.stats`). Records of several platforms (a Dask
    sweep over different machines) get a table each, headed by the platform.
    """
    groups = by_platform(records)
    if len(groups) > 1:
        return "\n\n".join(f"**{platform_label(platform, recs)}**\n\n"
                            + layer_table(recs, peer) for platform, recs in groups.items())
    lines = [f"| layer | kernel | median ms [95% CI] | GFLOP/s | x {peer} [95% CI] | rel_l2 "
             "| bound_ratio | |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for problem, recs in group_by_layer(records).items():
        base = next((r for r in recs if r.kernel == peer and r.median_s), None)
        marks = layer_marks(recs)
        for i, rec in enumerate(recs):
            direction = f" [{rec.dir}]" if rec.dir != "fwd" else ""
            label = (f"{rec.label}{direction}{f' (x{rec.repeat})' if rec.repeat > 1 else ''}"
                     f"<br>`{problem}`" if i == 0 else "")
            if not rec.ok:
                cell = "skipped" if rec.status == "skipped" else "**FAILED**"
                reason = (rec.get("reason") or "").replace("|", "/")[:70]
                lines.append(f"| {label} | {rec.kernel} | {cell} | | | {reason} | | |")
                continue
            speedup = peer_ratio(rec, base) if rec is not base else None
            lines.append(
                f"| {label} | {kernel_label(rec)} | {median_text(rec)} | "
                f"{fmt(rec.gflops, '.1f')} | "
                f"{'1.00' if rec is base else ratio_text(speedup)} | "
                f"{fmt(rec.rel_l2, '.1e')} | {fmt(rec.bound_ratio, '.2f')} | "
                f"{marks.get(rec.kernel, '')} |")
    return "\n".join(lines)


def best_of_layer(ours: list[Record]) -> tuple[Summary | None, float]:
    """Best-of-convbench on one layer: its summary and median, cross-fitted by round.

    Each round reports the kernel that was fastest on the other rounds
    (:func:`convbench.measure.stats.crossfit_fastest`), so that the pick does
    not flatter itself; where the records carry no samples, the fastest median.
    """
    fitted = crossfit_fastest({r.kernel: r.samples_by_round_s for r in ours})
    if fitted is not None:
        try:
            summary = summarize(fitted[0])
            return summary, summary.median_s
        except ValueError:
            pass
    fastest = min(ours, key=lambda r: r.median_s)
    return summary_of(fastest), fastest.median_s


def network_totals(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Whole-network time per kernel: sum of median x repeat over the layers.

    A kernel that did not run every layer gets ``complete=False`` and the sum
    over the layers it ran. ``best-of-convbench`` takes, per layer, the
    fastest convbench kernel, cross-fitted by round (:func:`best_of_layer`).
    Each entry's ``summary`` is the total with its interval
    (:func:`convbench.measure.stats.total`), where every part has samples.
    """
    layers = group_by_layer(records)
    totals: dict[str, dict[str, Any]] = OrderedDict()
    parts: dict[str, list[tuple[Summary | None, int]]] = OrderedDict()
    best = {"time_s": 0.0, "layers": 0, "kind": "best", "complete": True}
    for recs in layers.values():
        for rec in recs:
            entry = totals.setdefault(rec.kernel, {"time_s": 0.0, "layers": 0,
                                                   "kind": rec.get("kind"), "complete": True})
            if rec.median_s:
                entry["time_s"] += rec.median_s * rec.repeat
                entry["layers"] += 1
                parts.setdefault(rec.kernel, []).append((summary_of(rec), rec.repeat))
            else:
                entry["complete"] = False
        ours = [r for r in recs if r.get("kind") == CONVBENCH_KIND and r.median_s]
        if ours:
            summary, median = best_of_layer(ours)
            best["time_s"] += median * recs[0].repeat
            best["layers"] += 1
            parts.setdefault("best-of-convbench", []).append((summary, recs[0].repeat))
        else:
            best["complete"] = False
    if layers:
        totals["best-of-convbench"] = best
    for name, entry in totals.items():
        pieces = parts.get(name, [])
        entry["summary"] = (total([(s, rep) for s, rep in pieces])
                            if pieces and all(s is not None for s, _ in pieces) else None)
        entry["unstable_layers"] = sum(1 for s, _ in pieces if s is not None and s.unstable)
    return totals


def network_table(records: Iterable[dict[str, Any]], peer: str = "onednn") -> Table:
    """Whole-network line per kernel and for best-of-convbench, against ``peer``, with the
    95% intervals of the time and of the ratio (paired by round within one sweep).

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
    base_complete = base is not None and base["complete"] and base["time_s"]
    rows = []
    for name, entry in totals.items():
        t = entry["time_s"]
        ran = f"{entry['layers']}/{len(layers)}"
        if entry["complete"] and t:
            summary = entry["summary"]
            time_text = f"{t * 1e3:.2f}"
            rerun = "—"
            if summary is not None:
                time_text += f" [{summary.ci95_s[0] * 1e3:.2f}, {summary.ci95_s[1] * 1e3:.2f}]"
                if summary.rounds >= 2:
                    lo, hi = prediction_interval(summary).pi95_s
                    rerun = f"[{lo * 1e3:.2f}, {hi * 1e3:.2f}]"
            speedup = None
            if base_complete:
                if summary is not None and base["summary"] is not None:
                    speedup = ratio(base["summary"], summary, paired=True)
                else:
                    speedup = Ratio(base["time_s"] / t, math.nan, math.nan, False)
            unstable = entry["unstable_layers"]
            rows.append([name, time_text, rerun, f"{flops / t / 1e9:.1f}",
                         "1.00" if name == peer else ratio_text(speedup),
                         ran + (f" ({unstable} unstable)" if unstable else "")])
        else:
            rows.append([name, f"— (partial: {t * 1e3:.2f} over the layers run)", "", "", "",
                         ran])
    return Table(["kernel", "whole network ms [95% CI]", "a rerun's 95% PI", "GFLOP/s",
                  f"x {peer} [95% CI]", "layers run"], rows)


def directions_of(records: Iterable[dict[str, Any]]) -> list[str]:
    """The directions the records measured, in :data:`~convbench.problem.DIRECTIONS` order."""
    from convbench.problem import DIRECTIONS  # noqa: PLC0415

    seen = {as_record(r).dir for r in records}
    return [d for d in DIRECTIONS if d in seen]


def layer_identity(rec: Record) -> str:
    """The layer a record measured, whatever its direction: its forward descriptor without
    bias (a line convbench cannot model: its text)."""
    from convbench.problem import ConvProblem  # noqa: PLC0415

    try:
        p = ConvProblem.parse(rec["problem"])
    except ValueError:
        return rec["problem"]
    return str(p.with_(dir="fwd", bias=False))


#: The directions of a training step: forward, backward data and backward weights
#: (with the bias gradient where the layer has a bias).
TRAINING_STEP = ("fwd", "bwd_d", "bwd_w")


def training_step_records(records: Iterable[dict[str, Any]]) -> tuple[list[Record], list[str]]:
    """The records a training step sums, and the layers left out of its ``bwd_d``.

    A training step computes, per layer, the forward pass, the gradient of the
    weights (``bwd_w``, or ``bwd_wb`` where that was measured) and the gradient
    of the input (``bwd_d``), except for the first layer of each suite: it is
    taken as the network's input layer, whose ``dx`` nothing upstream needs.
    """
    recs = [as_record(r) for r in records]
    first: dict[str, str] = {}
    for rec in recs:
        first.setdefault(rec.get("suite") or "", layer_identity(rec))
    has_wb = {layer_identity(r) for r in recs if r.dir == "bwd_wb"}
    chosen, left_out = [], []
    for rec in recs:
        layer = layer_identity(rec)
        if rec.dir == "bwd_d" and first.get(rec.get("suite") or "") == layer:
            if rec.label not in left_out:
                left_out.append(rec.label)
            continue
        if rec.dir == "bwd_w" and layer in has_wb:
            continue  # the layer's bwd_wb computes dw and db: that one counts
        chosen.append(rec)
    return chosen, left_out


def training_step_table(records: Iterable[dict[str, Any]], peer: str = "onednn") -> Table:
    """Whole-network training step per kernel and for best-of-convbench, against ``peer``.

    A training step is fwd + bwd_d + bwd_w per layer (:func:`training_step_records`:
    the first line of a suite is the input layer and gets no bwd_d). Each
    direction's sum is a column; the step's time has its 95% interval, and its
    ratio to ``peer`` is paired by round. A kernel that did not run every part
    gets the sum over the parts it ran, marked partial. Records of several
    platforms get their own lines each.
    """
    groups = by_platform(records)
    if len(groups) > 1:
        rows = [[platform_label(platform, recs), *row] for platform, recs in groups.items()
                for row in training_step_table(recs, peer).rows]
        return Table(["platform", *training_step_table([], peer).header], rows)
    chosen, _ = training_step_records(records)
    step = network_table(chosen, peer)
    per_direction = {d: network_totals([r for r in chosen if r.dir == d
                                        or (d == "bwd_w" and r.dir == "bwd_wb")])
                     for d in TRAINING_STEP}
    rows = []
    for row in step.rows:
        name = row[0]
        cells = []
        for d in TRAINING_STEP:
            entry = per_direction[d].get(name)
            cells.append(f"{entry['time_s'] * 1e3:.2f}" if entry and entry["complete"]
                         and entry["time_s"] else "—")
        rows.append([name, *cells, *row[1:]])
    return Table(["kernel", "fwd ms", "bwd_d ms", "bwd_w ms", "training step ms [95% CI]",
                  "a rerun's 95% PI", "GFLOP/s", f"x {peer} [95% CI]", "parts run"], rows)


def training_step_note(records: Iterable[dict[str, Any]]) -> str:
    """The sentence that says which layers' bwd_d a training step leaves out, and why."""
    _, left_out = training_step_records(records)
    if not left_out:
        return "Every layer's bwd_d is counted."
    return (f"The first line of the suite ({', '.join(left_out)}) is taken as the network's "
            "input layer: its bwd_d (the gradient of the image) is not part of the training "
            "step and is left out of the sum.")


def comparison_table(rows: list[Any]) -> str:
    """``convbench compare`` output: per (problem, kernel) the time ratio with its interval,
    the verdict, the error ratio, and the regressions flagged (with a platform column
    where the runs span several)."""
    several = len({r.new.platform for r in rows} | {r.old.platform for r in rows}) > 1
    lines = [f"| layer | kernel |{' platform |' if several else ''} old ms | new ms | "
             "time new/old [95% CI] | verdict | rel_l2 new/old | |",
             f"|---|---|{'---|' if several else ''}---:|---:|---:|---|---:|---|"]
    for row in rows:
        told, tnew = row.old.median_s, row.new.median_s
        flag = "**REGRESSION**: " + ", ".join(row.regressions) if row.regressions else ""
        if not row.same_platform:
            flag = "platforms differ: time not compared" + (f"; {flag}" if flag else "")
        where = (f" {row.new.platform or '?'} |" if row.same_platform else
                 f" {row.old.platform or '?'} → {row.new.platform or '?'} |") if several else ""
        lines.append(f"| {row.new.label} | {row.key[-1]} |{where} "
                     f"{fmt(told * 1e3 if told else None, '.3f')} | "
                     f"{fmt(tnew * 1e3 if tnew else None, '.3f')} | "
                     f"{ratio_text(row.time_ratio)} | {row.verdict or '—'} | "
                     f"{fmt(row.error_ratio, '.2f')} | {flag} |")
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
