"""The Markdown ``convbench ab`` prints (and ``--table`` writes): a head, the table, the tally."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from convbench.ab.verdict import VERDICTS


def tally(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many records got each verdict, in :data:`~convbench.ab.verdict.VERDICTS`' order
    first (the others after)."""
    counts = Counter(r.get("verdict") for r in records)
    ordered = {v: counts.pop(v) for v in VERDICTS if v in counts}
    return {**ordered, **dict(counts)}


def _figure(rec: Mapping[str, Any]) -> tuple[str, str]:
    if rec.get("count") == "instructions":
        if rec.get("base_instructions") is None:
            return "", ""
        return (f"{rec['base_instructions']:.4g}", f"{rec['head_instructions']:.4g}")
    if rec.get("base_median_s") is None:
        return "", ""
    return (f"{rec['base_median_s'] * 1e3:.3g}", f"{rec['head_median_s'] * 1e3:.3g}")


def table(records: Sequence[Mapping[str, Any]]) -> str:
    """One row per record: layer, direction, kernel, both figures, ratio, interval, verdict."""
    instructions = any(r.get("count") == "instructions" for r in records)
    unit = "instructions per call" if instructions else "ms"
    rows = [f"| layer | dir | kernel | BASE ({unit}) | HEAD ({unit}) | HEAD/BASE | 95% CI "
            "| t | verdict |", "|---|---|---|---:|---:|---:|---|---:|---|"]
    for r in records:
        base, head = _figure(r)
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.3f}"
        ci = "" if not r.get("ci95") else f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}"
        verdict = r.get("verdict") or ""
        if r.get("reason"):
            verdict += f": {r['reason']}".replace("|", "/").replace("\n", " ")
        rows.append(f"| {r.get('name') or r['problem']} | {r.get('dir', 'fwd')} | {r['kernel']} "
                    f"| {base} | {head} | {ratio} | {ci} | {r['threshold']:.3f} | {verdict} |")
    return "\n".join(rows)


def text(records: Sequence[Mapping[str, Any]], about: Mapping[str, Any],
         threshold_lines: Sequence[str], exit_code: int) -> str:
    """The whole printout: how it measured, the thresholds, the table, the tally."""
    instructions = about.get("count") == "instructions"
    if instructions:
        how = (f"instructions per call counted by callgrind on one thread "
               f"(NUMBA_CPU_NAME={about.get('cpu')}, {about.get('calls')} calls per figure), "
               "one process pair; the figures are instructions, not time")
    else:
        p = about.get("pairing", {})
        how = (f"{about.get('threads')} threads, {p.get('pairs')} fresh process pairs in "
               f"random order, {p.get('blocks')} ABBA blocks per pair and kernel x layer, "
               f"windows of {p.get('window_s')} s after a cool-down of up to "
               f"{p.get('cooldown_s')} s and {p.get('warm_s')} s of warm calls; ratio: median "
               "of the blocks' HEAD/BASE, 95% bootstrap interval over the process pairs")
    head = [f"## convbench ab: BASE `{about.get('base_commit')}` against HEAD "
            f"`{about.get('head_commit')}`", "",
            f"BASE {about.get('base')}, HEAD {about.get('head')}; {how}.", "",
            "Thresholds:", "", *[f"- {line}" for line in threshold_lines], "",
            "Verdicts: `slower` where the ratio is >= 1 + t and the interval is above 1; "
            "`faster` where it is <= 1/(1 + t) and the interval is below 1; `unclear` where "
            "neither and the interval reaches beyond 1 +- 2t; `same` otherwise. `head_fails`: "
            "ok in BASE, failed, refused or outside its error envelope in HEAD."]
    counts = tally(records)
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    compared = sum(counts.get(v, 0) for v in VERDICTS)
    same = counts.get("same", 0)
    share = f" ({same / compared:.0%} same)" if compared else ""
    tail = (f"{len(records)} kernel x layer: {summary}{share}; "
            f"exit {exit_code}" + (" (a regression)" if exit_code else "") + ".")
    blocks = [r["block_s_max"] for r in records if r.get("block_s_max") is not None]
    if blocks:
        tail += f" Longest ABBA block: {max(blocks):.2f} s."
    if about.get("seconds") is not None:
        tail += f" The run took {about['seconds']} s."
    return "\n".join(head) + "\n\n" + table(records) + "\n\n" + tail
