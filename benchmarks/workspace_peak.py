"""The largest extra memory of a prepared call of every CPU kernel, against the workspace cap.

Over every layer of the shipped suites (``convbench/problem/suites/*.txt``,
at their own batch: DeepBench's lines name theirs, the others take the
default of 2), every direction and every CPU kernel convbench registers
(oneDNN aside: torch's allocator and oneDNN's scratchpad are neither Numba's
heap nor separable from torch's caches, so its figures would not be the
kernel's), each (kernel, problem) either refuses with the bytes it would need
(``workspace: needs N bytes ...``) or is prepared and called once, measured
by :func:`convbench.measure.memory.measure_prepared_call`: the peak of Numba's
heap (NRT bytes) and the resident high-water mark above inputs and outputs.
Each kernel x suite runs in a fresh worker process (a pool of one that
restarts for every task), its environment set before Numba starts; the
high-water mark is reset before each measurement.

Usage::

    nice -n 10 python benchmarks/workspace_peak.py --out results/cpu/workspace_peak
    python benchmarks/workspace_peak.py --suite lenet5 --algo direct,fft --direction fwd
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from convbench.measure.memory import CHILD_ENVIRONMENT

DIRECTIONS = ("fwd", "bwd_d", "bwd_w", "bwd_wb")
#: Registered CPU kernels this cannot measure, and why.
_INSIDE_TORCH = ("oneDNN inside torch: its scratchpad and torch's caching allocator are "
                 "neither Numba's heap nor separable from torch's own memory")
OUT_OF_SCOPE = {name: _INSIDE_TORCH for name in ("onednn", "onednn_best", "onednn_cl")}
MIB = 2**20
#: What Numba's heap, as counted, holds besides a kernel's arrays: CPython's large objects
#: and NRT's headers (a few KiB).
NRT_ALLOWANCE = 64 * 1024
#: What the resident set moves by besides a kernel's arrays and its libraries' allowance:
#: thread stacks, Python's heap, pages a library touches once per process.
RSS_ALLOWANCE = MIB


def layers_of(suites: Iterable[str], directions: Iterable[str],
              batch: int | None) -> list[tuple[str, str, str]]:
    """(suite, layer name, descriptor) of every layer and direction, bwd_wb with a bias."""
    from convbench.problem.suites import load_suite  # noqa: PLC0415

    out = []
    for suite in suites:
        for layer in load_suite(suite, batch=batch):
            if layer.problem is None:
                continue
            for d in directions:
                p = layer.problem.with_(dir=d, bias=True) if d == "bwd_wb" else \
                    layer.problem.with_(dir=d)
                out.append((suite, layer.name, str(p)))
    return out


def quick_choices() -> None:
    """Make every ``prepare``'s timed choice (``kernels.cpu.base.fastest``) :func:`once_each`.

    The candidates allocate what they allocate however often they are timed;
    the choice is then noisier, which changes which buffers a call keeps after
    ``prepare``, not the largest it held.
    """
    from convbench.kernels.cpu import base, im2col  # noqa: PLC0415
    from convbench.kernels.cpu import winograd_channels_last as channels_last  # noqa: PLC0415

    for module in (base, im2col, channels_last):
        module.fastest = once_each


def on_team_threads(fn: Callable[[], None]) -> None:
    """``fn`` on each thread of the CPU kernels' team, with BLAS single-threaded there, as
    the Winograd schedules call it."""
    from convbench.kernels.cpu.base import num_threads  # noqa: PLC0415
    from convbench.kernels.cpu.winograd_channels_last import (  # noqa: PLC0415
        single_threaded_blas,
        team_of,
    )

    team = team_of(num_threads())
    with single_threaded_blas():
        team.split(lambda lo, hi: [fn() for _ in range(lo, hi)], team.n)


def once_each(candidates: dict[str, Callable[[], object]], key: Any = None) -> str:
    """``kernels.cpu.base.fastest`` reduced to one call of each candidate, the fastest kept.

    Each candidate is called, so it allocates what it allocates, as in the timed
    choice; one call each instead of a dozen keeps a sweep of every layer short.
    """
    seconds = {}
    for name, call in candidates.items():
        t0 = time.perf_counter()
        call()
        seconds[name] = time.perf_counter() - t0
    return min(seconds, key=seconds.__getitem__)


def measure_task(kernel_name: str, problems: list[tuple[str, str, str]],
                 hwm_resettable: bool) -> list[dict[str, Any]]:
    """In a worker: every problem of one kernel, refused or measured."""
    from convbench.measure.memory import (  # noqa: PLC0415
        RAW_HEAP,
        measure_prepared_call,
        warm_libraries,
    )

    RAW_HEAP.install()  # before any Numba array exists
    warm_libraries(on_team_threads)
    from convbench.contract import WORKSPACE_REFUSAL, refusal  # noqa: PLC0415
    from convbench.kernels.cpu.base import forget_choices  # noqa: PLC0415
    from convbench.problem import ConvProblem  # noqa: PLC0415
    from convbench.registry import get_kernel  # noqa: PLC0415

    quick_choices()
    kernel = get_kernel(kernel_name, "cpu")
    cap = getattr(kernel, "workspace_cap", None)
    done: dict[str, dict[str, Any]] = {}
    records = []
    for suite, name, text in problems:
        p = ConvProblem.parse(text)
        rec: dict[str, Any] = {"kernel": kernel_name, "suite": suite, "layer": name,
                               "dir": p.dir, "problem": text, "cap": cap}
        reason = refusal(kernel, p)
        if reason is not None:
            workspace = reason.startswith(WORKSPACE_REFUSAL)
            rec.update(status="refused" if workspace else "not applicable", reason=reason)
            if workspace:
                rec["workspace_bytes"] = int(kernel.workspace_bytes(p))
            records.append(rec)
            continue
        rec["workspace_bytes"] = int(kernel.workspace_bytes(p))
        key = str(p.with_(name=""))
        if key not in done:
            try:
                done[key] = {"status": "measured",
                             **measure_prepared_call(kernel, p, hwm_resettable=hwm_resettable,
                                                     forget=forget_choices)}
            except Exception as exc:  # noqa: BLE001 -- a kernel fault is a finding, not a stop
                done[key] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        rec.update(done[key])
        records.append(rec)
    return records


def run_all(tasks: list[tuple[str, str, list]], hwm_resettable: bool) -> list[dict[str, Any]]:
    """Each task in a fresh worker process, one at a time; a crashed worker fails its task."""
    context = multiprocessing.get_context("spawn")
    records: list[dict[str, Any]] = []
    pool = ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=1)
    try:
        for i, (kernel, suite, problems) in enumerate(tasks, 1):
            t0 = time.perf_counter()
            try:
                got = pool.submit(measure_task, kernel, problems, hwm_resettable).result()
            except BrokenProcessPool as exc:
                pool.shutdown(wait=False, cancel_futures=True)
                pool = ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=1)
                got = [{"kernel": kernel, "suite": s, "layer": n, "problem": t,
                        "status": "failed", "reason": f"worker died: {exc}"}
                       for s, n, t in problems]
            records += got
            print(f"[{i}/{len(tasks)}] {kernel} {suite}: {len(problems)} problems, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        pool.shutdown()
    return records


def _largest(records: list[dict[str, Any]], field: str) -> dict[str, Any] | None:
    measured = [r for r in records if r.get("status") == "measured"]
    return max(measured, key=lambda r: r[field], default=None)


def _where(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    if rec is None:
        return None
    return {k: rec[k] for k in ("kernel", "suite", "layer", "dir", "problem", "nrt_peak_bytes",
                                "rss_growth_bytes", "workspace_bytes", "cap")}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kernel x direction the largest figures against the cap, the refusals, the largest."""
    table = []
    kernels = list(dict.fromkeys(r["kernel"] for r in records))
    for kernel in kernels:
        for d in DIRECTIONS:
            mine = [r for r in records if r["kernel"] == kernel and r.get("dir") == d]
            if not mine:
                continue
            nrt, rss = _largest(mine, "nrt_peak_bytes"), _largest(mine, "rss_growth_bytes")
            table.append({
                "kernel": kernel, "dir": d, "cap": mine[0].get("cap"),
                "measured": sum(r.get("status") == "measured" for r in mine),
                "refused": sum(r.get("status") == "refused" for r in mine),
                "not_applicable": sum(r.get("status") == "not applicable" for r in mine),
                "failed": sum(r.get("status") == "failed" for r in mine),
                "largest_nrt": _where(nrt), "largest_rss": _where(rss),
                "largest_claim": max((r["workspace_bytes"] for r in mine
                                      if r.get("status") == "measured"), default=None)})
    measured = [r for r in records if r.get("status") == "measured"]
    over = [_where(r) for r in measured
            if r.get("cap") is not None
            and max(r["nrt_peak_bytes"], r["rss_growth_bytes"]) > r["cap"]]
    nrt_above = [_where(r) for r in measured
                 if r["nrt_peak_bytes"] > r["workspace_bytes"] + NRT_ALLOWANCE]
    rss_above = [_where(r) for r in measured
                 if r["rss_growth_bytes"] > r["workspace_bytes"] + RSS_ALLOWANCE]
    largest = max(measured, key=lambda r: max(r["nrt_peak_bytes"], r["rss_growth_bytes"]),
                  default=None)
    refusals = [{k: r[k] for k in ("kernel", "suite", "layer", "dir", "problem",
                                   "workspace_bytes", "cap", "reason")}
                for r in records if r.get("status") == "refused"]
    return {"by_kernel_direction": table, "refusals": refusals, "largest": _where(largest),
            "over_cap": over, "nrt_above_workspace_bytes": nrt_above,
            "rss_above_workspace_bytes": rss_above,
            "failed": [r for r in records if r.get("status") == "failed"]}


def _mib(value: int | None) -> str:
    return "" if value is None else f"{value / MIB:.1f}"


def markdown(summary: dict[str, Any], prov: dict[str, Any], wall_s: float, scope: str) -> str:
    """The results file: provenance, the per kernel x direction table, refusals, the largest."""
    from convbench.store.provenance import markdown_block  # noqa: PLC0415

    lines = ["# Workspace: the largest extra memory of a prepared call, against the cap", "",
             markdown_block(prov), "",
             f"{scope} Wall time {wall_s / 60:.1f} min. Figures in MiB: **NRT** is the peak of "
             "Numba's heap (CPython's raw allocator) above its level before `prepare`; **RSS** "
             "is the resident high-water mark above the resident set before `prepare`, less "
             "the call's result, from `prepare` through one call (inputs exist before). "
             "**claim** is the largest `workspace_bytes` of the measured problems.", "",
             "| kernel | dir | measured | refused | n/a | NRT max | layer | RSS max | layer "
             "| claim max | cap |", "|---|---|---:|---:|---:|---:|---|---:|---|---:|---:|"]
    for row in summary["by_kernel_direction"]:
        nrt, rss = row["largest_nrt"] or {}, row["largest_rss"] or {}
        lines.append(
            f"| {row['kernel']} | {row['dir']} | {row['measured']} | {row['refused']} "
            f"| {row['not_applicable']} | {_mib(nrt.get('nrt_peak_bytes'))} "
            f"| {nrt.get('suite', '')} {nrt.get('layer', '')} "
            f"| {_mib(rss.get('rss_growth_bytes'))} | {rss.get('suite', '')} "
            f"{rss.get('layer', '')} | {_mib(row['largest_claim'])} | {_mib(row['cap'])} |")
    big = summary["largest"]
    if big:
        lines += ["", f"**Largest figure overall**: {big['kernel']} {big['dir']} on "
                      f"{big['suite']} {big['layer']} (`{big['problem']}`): NRT "
                      f"{_mib(big['nrt_peak_bytes'])} MiB, RSS {_mib(big['rss_growth_bytes'])} "
                      f"MiB, claimed {_mib(big['workspace_bytes'])} MiB, cap "
                      f"{_mib(big['cap'])} MiB."]
    nrt, rss = summary["nrt_above_workspace_bytes"], summary["rss_above_workspace_bytes"]
    lines += ["", f"Measured figures over the cap: {len(summary['over_cap'])}. Above the "
                  f"kernel's own `workspace_bytes`: NRT {len(nrt)} (by more than "
                  f"{NRT_ALLOWANCE // 1024} KiB of CPython objects and NRT headers), RSS "
                  f"{len(rss)} (by more than {RSS_ALLOWANCE / MIB:.0f} MiB). Failed: "
                  f"{len(summary['failed'])}."]
    for label, rows in (("Over the cap", summary["over_cap"]),
                        ("NRT above workspace_bytes", nrt), ("RSS above workspace_bytes", rss)):
        for r in rows:
            lines.append(f"- {label}: {r['kernel']} {r['dir']} {r['suite']} {r['layer']}: NRT "
                         f"{_mib(r['nrt_peak_bytes'])}, RSS {_mib(r['rss_growth_bytes'])}, "
                         f"claim {_mib(r['workspace_bytes'])} MiB")
    lines += ["", "## Refusals", "", "| kernel | dir | suite | layer | needs MiB | needs bytes |",
              "|---|---|---|---|---:|---:|"]
    lines += [f"| {r['kernel']} | {r['dir']} | {r['suite']} | {r['layer']} "
              f"| {_mib(r['workspace_bytes'])} | {r['workspace_bytes']} |"
              for r in summary["refusals"]]
    if summary["refusals"]:
        lines += ["", f"The message, for example: `{summary['refusals'][0]['reason']}`"]
    lines += ["", "Out of scope: " + "; ".join(f"`{k}` ({v})" for k, v in OUT_OF_SCOPE.items())
              + "."]
    return "\n".join(lines) + "\n"


def describe_scope(suites: list[str], kernels: list[str], directions: list[str],
                   batch: int | None) -> str:
    """What was measured, in a sentence."""
    where = f"batch {batch}" if batch else "each suite's batch"
    return (f"Suites {', '.join(suites)} at {where}; directions {', '.join(directions)}; "
            f"kernels {', '.join(kernels)}.")


def write(out: Path, data: dict[str, Any]) -> None:
    """OUT.json (provenance, scope, summary, records) and OUT.md."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(data["summary"], data["provenance"],
                                               data["wall_s"], data["scope_text"]))
    head = {k: v for k, v in data.items() if k != "records"}
    text = json.dumps(head, indent=1)
    # One record a line: three thousand of them stay readable and diffable.
    records = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in data["records"])
    out.with_suffix(".json").write_text(f'{text[:-2]},\n "records": [\n{records}\n ]\n}}\n')


def resummarize(source: Path, out: Path, note: str | None = None) -> int:
    """The summary and Markdown of ``source``'s records again, its provenance kept; the
    scope says which commit summarized them, and ``note`` what else a reader should know."""
    from convbench.store.provenance import provenance  # noqa: PLC0415

    data = json.loads(source.read_text())
    data["summary"] = summarize(data["records"])
    now = provenance(repetitions=None, noise={})
    scope = data.get("scope_text") or describe_scope(**{
        k: data["scope"][k] for k in ("suites", "kernels", "directions", "batch")})
    data["scope_text"] = (scope.split(" Summarized again")[0]
                          + f" Summarized again from these records at commit `{now['commit']}` "
                          f"({now['date']}).")
    if note:
        data["scope_text"] += f" {note}"
    write(out, data)
    print(markdown(data["summary"], data["provenance"], data["wall_s"], data["scope_text"]))
    return 1 if data["summary"]["over_cap"] or data["summary"]["failed"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", help="comma list of suites (default: every shipped one)")
    parser.add_argument("--algo", help="comma list of CPU kernels (default: every one but "
                                       "onednn)")
    parser.add_argument("--direction", default=",".join(DIRECTIONS),
                        help="comma list of directions (default: all four)")
    parser.add_argument("--batch", type=int, help="batch of every layer (default: the suite's)")
    parser.add_argument("--out", help="write OUT.json and OUT.md")
    parser.add_argument("--summarize", metavar="JSON",
                        help="measure nothing: summarize the records of an earlier OUT.json "
                             "again (with its provenance) into OUT.json and OUT.md")
    parser.add_argument("--note", help="with --summarize: a sentence added to the scope")
    args = parser.parse_args()
    if args.summarize:
        return resummarize(Path(args.summarize), Path(args.out or args.summarize), args.note)
    # Before anything imports Numba here, and for the workers from their start.
    os.environ.update(CHILD_ENVIRONMENT)
    from convbench.measure.memory import can_reset_high_water  # noqa: PLC0415
    from convbench.problem.suites import list_suites  # noqa: PLC0415
    from convbench.registry import kernels  # noqa: PLC0415
    from convbench.store.provenance import noise_verdict, provenance  # noqa: PLC0415

    suites = args.suite.split(",") if args.suite else list_suites()
    names = (args.algo.split(",") if args.algo else
             [k.name for k in kernels("cpu") if k.name not in OUT_OF_SCOPE])
    directions = [d.strip() for d in args.direction.split(",") if d.strip()]
    hwm = can_reset_high_water()
    tasks = [(name, suite, layers_of([suite], directions, args.batch))
             for name in names for suite in suites]
    t0 = time.perf_counter()
    records = run_all(tasks, hwm)
    wall_s = time.perf_counter() - t0
    summary = summarize(records)
    scope = describe_scope(suites, names, directions, args.batch)
    prov = provenance(
        repetitions={"measurements": "one prepare and one call per (kernel, problem), after "
                                     "one at batch 1; timed choices in prepare: one round"},
        noise=noise_verdict(None, "memory only: bytes, not times"))
    print(markdown(summary, prov, wall_s, scope))
    if args.out:
        write(Path(args.out), {
            "provenance": prov, "scope": {"suites": suites, "kernels": names,
                                          "directions": directions, "batch": args.batch,
                                          "out_of_scope": OUT_OF_SCOPE},
            "scope_text": scope, "wall_s": round(wall_s, 1), "hwm_resettable": hwm,
            "summary": summary, "records": records})
    return 1 if summary["over_cap"] or summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
