"""Tables of a sweep's records (Markdown, so they paste into issues and READMEs)."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

from convbench.results import Comparison, number

CONVBENCH_KIND = "kernel"


def _fmt(value: float | None, spec: str, missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def _median(rec: dict[str, Any]) -> float | None:
    return number((rec.get("time") or {}).get("median_s"))


def group_by_layer(records: list[dict[str, Any]]) -> OrderedDict[str, list[dict[str, Any]]]:
    """Records grouped by problem descriptor, in first-seen order, last record wins."""
    layers: OrderedDict[str, OrderedDict[str, dict[str, Any]]] = OrderedDict()
    for rec in records:
        layers.setdefault(rec["problem"], OrderedDict())[rec["kernel"]] = rec
    return OrderedDict((k, list(v.values())) for k, v in layers.items())


def layer_table(records: list[dict[str, Any]], baseline: str = "onednn") -> str:
    """Per layer and kernel: time, GFLOP/s, speedup over ``baseline``, errors, winner.

    ``★`` marks the fastest entry of a layer; ``☆`` the fastest convbench
    kernel where a baseline won.
    """
    lines = [f"| layer | kernel | median ms | GFLOP/s | x {baseline} | rel_l2 | bound_ratio | |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for problem, recs in group_by_layer(records).items():
        ok = [r for r in recs if r.get("status") == "ok" and _median(r)]
        base = next((r for r in ok if r["kernel"] == baseline), None)
        fastest = min(ok, key=_median, default=None)
        ours = [r for r in ok if r.get("kind") == CONVBENCH_KIND]
        best_ours = min(ours, key=_median, default=None)
        first = True
        for rec in recs:
            name = rec.get("name") or problem
            repeat = rec.get("repeat", 1)
            label = (f"{name}{f' (x{repeat})' if repeat > 1 else ''}<br>`{problem}`"
                     if first else "")
            first = False
            status = rec.get("status")
            if status != "ok":
                cell = "skipped" if status == "skipped" else "**FAILED**"
                reason = (rec.get("reason") or "").replace("|", "/")[:70]
                lines.append(f"| {label} | {rec['kernel']} | {cell} | | | {reason} | | |")
                continue
            t = _median(rec)
            speedup = (_median(base) / t) if base is not None and t else None
            err = rec.get("error") or {}
            mark = "★" if rec is fastest else ("☆" if rec is best_ours else "")
            lines.append(
                f"| {label} | {kernel_label(rec)} | {_fmt(t * 1e3 if t else None, '.3f')} | "
                f"{_fmt(number(rec.get('gflops')), '.1f')} | {_fmt(speedup, '.2f')} | "
                f"{_fmt(number(err.get('rel_l2')), '.1e')} | "
                f"{_fmt(number(err.get('bound_ratio')), '.2f')} | {mark} |")
    return "\n".join(lines)


def kernel_label(rec: dict[str, Any]) -> str:
    """Kernel name, with the cuDNN engine and its algorithm class when recorded."""
    details = rec.get("details") or {}
    if details.get("engine"):
        return f"{rec['kernel']} `{details['engine']}` ({details.get('algorithm', '?')})"
    return rec["kernel"]


def network_totals(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Whole-network time per kernel: sum of median x repeat over the layers.

    A kernel that did not run every layer gets ``complete=False`` and the sum
    over the layers it ran. ``best-of-convbench`` takes, per layer, the
    fastest convbench kernel.
    """
    layers = group_by_layer(records)
    totals: dict[str, dict[str, Any]] = OrderedDict()
    for recs in layers.values():
        for rec in recs:
            entry = totals.setdefault(rec["kernel"], {"time_s": 0.0, "layers": 0,
                                                      "kind": rec.get("kind"),
                                                      "complete": True})
            t = _median(rec)
            if rec.get("status") == "ok" and t:
                entry["time_s"] += t * rec.get("repeat", 1)
                entry["layers"] += 1
            else:
                entry["complete"] = False
    best = {"time_s": 0.0, "layers": 0, "kind": "best", "complete": True}
    for recs in layers.values():
        ours = [_median(r) for r in recs if r.get("kind") == CONVBENCH_KIND
                and r.get("status") == "ok" and _median(r)]
        if ours:
            best["time_s"] += min(ours) * recs[0].get("repeat", 1)
            best["layers"] += 1
        else:
            best["complete"] = False
    if layers:
        totals["best-of-convbench"] = best
    return totals


def network_table(records: list[dict[str, Any]], baseline: str = "onednn") -> str:
    """Whole-network line per kernel and for best-of-convbench, vs ``baseline``."""
    totals = network_totals(records)
    n_layers = len(group_by_layer(records))
    flops = sum(recs[0]["flops"] * recs[0].get("repeat", 1)
                for recs in group_by_layer(records).values())
    base = totals.get(baseline)
    base_t = base["time_s"] if base and base["complete"] else None
    lines = [f"| kernel | whole network ms | GFLOP/s | x {baseline} | layers run |",
             "|---|---:|---:|---:|---:|"]
    for name, entry in totals.items():
        t = entry["time_s"]
        if entry["complete"] and t:
            lines.append(f"| {name} | {t * 1e3:.2f} | {flops / t / 1e9:.1f} | "
                         f"{_fmt(base_t / t if base_t else None, '.2f')} | "
                         f"{entry['layers']}/{n_layers} |")
        else:
            lines.append(f"| {name} | — (partial: {t * 1e3:.2f} over the layers run) | | | "
                         f"{entry['layers']}/{n_layers} |")
    return "\n".join(lines)


def comparison_table(rows: list[Comparison]) -> str:
    """``convbench compare`` output: ratios per (problem, kernel), regressions flagged."""
    lines = ["| layer | kernel | old ms | new ms | time new/old | rel_l2 new/old | |",
             "|---|---|---:|---:|---:|---:|---|"]
    for row in rows:
        problem, _, kernel = row.key
        told, tnew = _median(row.old), _median(row.new)
        flag = "**REGRESSION**: " + ", ".join(row.regressions) if row.regressions else ""
        lines.append(f"| {row.new.get('name') or problem} | {kernel} | "
                     f"{_fmt(told * 1e3 if told else None, '.3f')} | "
                     f"{_fmt(tnew * 1e3 if tnew else None, '.3f')} | "
                     f"{_fmt(row.time_ratio, '.2f')} | {_fmt(row.error_ratio, '.2f')} | {flag} |")
    return "\n".join(lines)
