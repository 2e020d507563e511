"""The measurements behind ``convbench ab``: A/A, a planted slowdown, instruction counts, cost.

``python benchmarks/ab_study.py --work DIR --study NAME[,NAME...] --out results/cpu/ab``
makes (once, in ``DIR``) two plain worktrees of ``--commit`` and one whose im2col
does an eighth of its GEMM work twice (:mod:`ab_slowdown`), then runs, with
this checkout's convbench, on ResNet-50 at batch 1 with ``--algo
im2col,winograd,direct``:

* ``calibrate``: ``convbench ab --calibrate BASE`` (2 threads): each kernel's ``t``;
* ``aa``: ``convbench ab BASE BASE2`` five times (2 threads);
* ``slowdown``: ``convbench ab BASE SLOW`` (2 threads);
* ``instructions-aa`` and ``instructions-slowdown``: the same with ``--count instructions``.

Each run writes ``NAME.jsonl`` and ``NAME.md`` (the command's own ``--out``
and ``--table``, with provenance) under ``--out``; ``NAME.json`` sums it up:
the command, its wall time, its exit status, the verdicts, the share of
``same`` and what the issue asks of it. ``--match`` narrows the layers (a
check of the commands, not the study).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab_slowdown import patch_im2col, worktree  # noqa: E402

from convbench.store import provenance  # noqa: E402

STUDIES = ("calibrate", "aa", "slowdown", "instructions-aa", "instructions-slowdown")
PROBLEM = ["--suite", "resnet50", "--batch", "1", "--algo", "im2col,winograd,direct"]
AA_RUNS = 5


def trees(work: Path, commit: str) -> dict[str, Path]:
    """BASE, BASE2 (the same commit) and SLOW (im2col patched), made once in ``work``."""
    made = {"base": work / "base", "base2": work / "base2", "slow": work / "slow"}
    for name, path in made.items():
        if path.exists():
            continue
        worktree(ROOT, commit, path)
        if name == "slow":
            target = path / "kernels" / "cpu" / "im2col.py"
            target.write_text(patch_im2col(target.read_text()))
    return made


def run_ab(name: str, args: list[str], out: Path) -> dict[str, Any]:
    """One ``convbench ab`` run writing ``out/name.jsonl|md``; its summary."""
    jsonl, table = out / f"{name}.jsonl", out / f"{name}.md"
    jsonl.unlink(missing_ok=True)
    command = [sys.executable, "-m", "convbench", "ab", *args, "--out", str(jsonl),
               "--table", str(table)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print("+", " ".join(command), flush=True)
    t0 = time.perf_counter()
    code = subprocess.run(command, env=env, check=False).returncode
    seconds = time.perf_counter() - t0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()] \
        if jsonl.exists() else []
    ab = [r for r in records if r.get("type") == "ab"]
    compared = [r for r in ab if r.get("verdict") in ("slower", "faster", "unclear", "same")]
    summary: dict[str, Any] = {
        "command": command, "exit": code, "seconds": round(seconds, 1),
        "verdicts": dict(Counter(r["verdict"] for r in ab)),
        "compared": len(compared),
        "same_share": (sum(r["verdict"] == "same" for r in compared) / len(compared)
                       if compared else None),
        "thresholds": {r["kernel"]: r["threshold"] for r in ab},
        "per_kernel": {}}
    for kernel in sorted({r["kernel"] for r in ab}):
        mine = [r for r in ab if r["kernel"] == kernel and r.get("ratio") is not None]
        summary["per_kernel"][kernel] = {
            "layers": len(mine), "verdicts": dict(Counter(r["verdict"] for r in mine)),
            "ratio_min": min((r["ratio"] for r in mine), default=None),
            "ratio_max": max((r["ratio"] for r in mine), default=None)}
    return summary


def write_summary(out: Path, name: str, summary: dict[str, Any], argv: list[str],
                  repetitions: Any, counted: bool) -> None:
    noise = (provenance.noise_verdict(None, "instruction counts do not depend on machine "
                                            "noise") if counted
             else _noise_of(out / f"{name}.jsonl"))
    prov = provenance.provenance(repetitions=repetitions, noise=noise,
                                 command=[sys.executable, *argv])
    path = out / f"{name}.json"
    path.write_text(json.dumps(provenance.with_json(summary, prov), indent=1) + "\n")
    print(f"wrote {path}")


def _noise_of(jsonl: Path) -> dict[str, Any]:
    found = provenance.read_provenance(jsonl) if jsonl.exists() else None
    return (found or {}).get("noise") or provenance.noise_verdict(None, "the run wrote nothing")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="where the worktrees go")
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--study", default=",".join(STUDIES),
                        help=f"comma list of {', '.join(STUDIES)} (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "cpu" / "ab")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--match", help="only these layers (a check of the commands)")
    args = parser.parse_args(argv)
    argv = argv if argv is not None else sys.argv
    studies = [s for s in args.study.split(",") if s]
    unknown = sorted(set(studies) - set(STUDIES))
    if unknown:
        parser.error(f"unknown study {', '.join(unknown)}; known: {', '.join(STUDIES)}")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    t = trees(args.work, args.commit)
    problem = PROBLEM + (["--match", args.match] if args.match else [])
    timed = [*problem, "--threads", args.threads]
    counted = [*problem, "--count", "instructions"]
    plan = {
        "calibrate": [("calibrate", [str(t["base"]), "--calibrate", *timed])],
        "aa": [(f"aa-{i}", [str(t["base"]), str(t["base2"]), "--seed", str(i), *timed])
               for i in range(1, AA_RUNS + 1)],
        "slowdown": [("slowdown", [str(t["base"]), str(t["slow"]), *timed])],
        "instructions-aa": [("instructions-aa", [str(t["base"]), str(t["base2"]), *counted])],
        "instructions-slowdown": [("instructions-slowdown",
                                   [str(t["base"]), str(t["slow"]), *counted])],
    }
    for study in studies:
        for name, ab_args in plan[study]:
            summary = run_ab(name, ab_args, args.out)
            counting = study.startswith("instructions")
            reps = ({"count": "instructions", "process_pairs": 1, "calls": 1} if counting
                    else {"count": "time", "process_pairs": 5, "blocks": 2, "window_s": 0.07,
                          "cooldown_s": 0.08})
            write_summary(args.out, name, summary, argv, reps, counting)
    return 0


if __name__ == "__main__":
    sys.exit(main())
