"""Do convbench's numbers reproduce? The same sweep several times, and what changed.

Runs ``convbench run`` ``--runs`` times in fresh processes, back to back, the
same command each time (and once more with the kernel order reversed), then
measures, from the records alone:

* **spread** -- for each kernel, each layer's median's ``max / min - 1`` over
  the runs, reported as the median over layers and the largest;
* **coverage** -- the share of (record, other run) pairs whose median lies in
  the other run's 95% interval of its median (``ci95_s``, which is not meant
  to hold a rerun's median);
* **prediction** -- the same share for the 95% prediction interval of a
  rerun's median (``pi95_s``, which is), per kernel, with its median
  half-width: it should hold about 95% of the other runs' medians (between
  90% and 99% with this many pairs);
* **verdicts** -- the layers whose winner (``★``) is the same in every run, or
  that at least one run marks as a tie (``≈``), with the reversed run too;
* **compare** -- ``convbench compare`` of every pair of runs: the share of
  ``ok`` pairs it calls ``same``, and its exit status.

Usage::

    python benchmarks/reproducibility.py --out results/cpu/reproducibility
    python benchmarks/reproducibility.py --runs 2 --match res2 --out /tmp/r   # quick look
    python benchmarks/reproducibility.py --analyze run0.jsonl run1.jsonl ...  # no new runs

Writes ``OUT/run<i>.jsonl``, ``OUT/reversed.jsonl``, ``OUT/README.md`` (the
report) and ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from convbench.measure.compare import compare_runs
from convbench.measure.stats import summary_of
from convbench.present.tables import group_by_layer, layer_marks
from convbench.store.jsonl import Run, load_run
from convbench.store.provenance import markdown_block, noise_verdict, provenance

DEFAULT_ALGO = "direct,im2col,fft,winograd,onednn"


def spreads(runs: list[Run]) -> dict[str, dict[str, float]]:
    """Kernel -> {"median": ..., "largest": ..., "layers": n}: max/min - 1 of each layer's
    median over the runs."""
    per_kernel: dict[str, list[float]] = {}
    latest = [r.latest() for r in runs]
    for key in set.intersection(*(set(x) for x in latest)):
        medians = [x[key].median_s for x in latest]
        if all(medians):
            per_kernel.setdefault(key[-1], []).append(max(medians) / min(medians) - 1)
    return {k: {"median": statistics.median(v), "largest": max(v), "layers": len(v)}
            for k, v in sorted(per_kernel.items())}


def coverage(runs: list[Run]) -> dict[str, Any]:
    """Share of (record, other run) pairs whose median lies in the other run's interval
    (a file from before rounds: the interval of its one round)."""
    latest = [r.latest() for r in runs]
    inside = total = 0
    misses = []
    for i, j in itertools.permutations(range(len(runs)), 2):
        for key, rec in latest[i].items():
            other = latest[j].get(key)
            if other is None or not rec.median_s:
                continue
            interval = other.ci95_s or getattr(summary_of(other), "ci95_s", None)
            if interval is None:
                continue
            lo, hi = interval
            total += 1
            if lo <= rec.median_s <= hi:
                inside += 1
            else:
                misses.append((rec.label, key[-1], i, j))
    return {"inside": inside, "pairs": total, "share": inside / total if total else None,
            "misses": misses[:20]}


def prediction(runs: list[Run]) -> dict[str, Any]:
    """Per kernel and overall: the share of (record, other run) pairs whose median lies in
    the record's ``pi95_s``, and the median half-width (``sqrt(hi / lo) - 1``)."""
    latest = [r.latest() for r in runs]
    per_kernel: dict[str, dict[str, list]] = {}
    for i, j in itertools.permutations(range(len(runs)), 2):
        for key, rec in latest[i].items():
            other = latest[j].get(key)
            pi = rec.pi95_s
            if other is None or pi is None or not other.median_s:
                continue
            entry = per_kernel.setdefault(key[-1], {"inside": [], "half": []})
            entry["inside"].append(pi[0] <= other.median_s <= pi[1])
            entry["half"].append((pi[1] / pi[0]) ** 0.5 - 1)
    out: dict[str, Any] = {
        k: {"inside": sum(v["inside"]), "pairs": len(v["inside"]),
            "share": sum(v["inside"]) / len(v["inside"]),
            "median_half_width": statistics.median(v["half"])}
        for k, v in sorted(per_kernel.items())}
    inside = [x for v in per_kernel.values() for x in v["inside"]]
    halves = [x for v in per_kernel.values() for x in v["half"]]
    out["all"] = ({"inside": sum(inside), "pairs": len(inside),
                   "share": sum(inside) / len(inside),
                   "median_half_width": statistics.median(halves)} if inside else None)
    return out


def winners(run: Run) -> dict[str, tuple[str, ...]]:
    """Layer -> the kernels marked ``★`` (one) or ``≈`` (several) in a run."""
    out = {}
    for problem, recs in group_by_layer(run.records).items():
        marks = layer_marks(recs)
        top = tuple(sorted(k for k, m in marks.items() if m in ("★", "≈")))
        out[problem] = top
    return out


def verdicts(runs: list[Run]) -> dict[str, Any]:
    """Layers whose verdict holds: the same clean winner everywhere, or a tie somewhere."""
    per_run = [winners(r) for r in runs]
    layers = set.intersection(*(set(w) for w in per_run))
    consistent, flips = 0, []
    for layer in sorted(layers):
        tops = [w[layer] for w in per_run]
        if len(set(tops)) == 1 or any(len(t) > 1 for t in tops):
            consistent += 1
        else:
            flips.append((layer, [t[0] if t else None for t in tops]))
    return {"consistent": consistent, "layers": len(layers), "flips": flips}


def compares(paths: list[Path]) -> dict[str, Any]:
    """Every pair of runs through ``compare``: the share called ``same`` and the exit codes."""
    same = total = 0
    exits = []
    for a, b in itertools.combinations(paths, 2):
        rows = [r for r in compare_runs(load_run(a), load_run(b)) if r.verdict is not None]
        same += sum(r.verdict == "same" for r in rows)
        total += len(rows)
        code = subprocess.run([sys.executable, "-m", "convbench.cli", "compare", str(a), str(b)],
                              capture_output=True, text=True).returncode
        exits.append(code)
    return {"same": same, "pairs": total, "share": same / total if total else None,
            "exit_codes": exits}


def analyze(paths: list[Path], reversed_path: Path | None) -> dict[str, Any]:
    runs = [load_run(p) for p in paths]
    out = {"runs": [str(p) for p in paths], "spread": spreads(runs), "coverage": coverage(runs),
           "prediction": prediction(runs),
           "verdicts": verdicts(runs), "compare": compares(paths),
           "noise": [r.noise[-1] if r.noise else None for r in runs]}
    if reversed_path is not None:
        out["reversed"] = str(reversed_path)
        out["verdicts_with_reversed"] = verdicts(runs + [load_run(reversed_path)])
    return out


def report(summary: dict[str, Any], command: list[str], seconds: list[float]) -> str:
    lines = [f"# Reproducibility: {len(summary['runs'])} identical sweeps", "",
             "Command, run in a fresh process each time: `" + " ".join(command) + "`", ""]
    if seconds:
        lines.append("Wall time per run: " + ", ".join(f"{s:.0f} s" for s in seconds) + ".")
    noisy = [i for i, n in enumerate(summary["noise"]) if n and n.get("noisy")]
    recorded = all(summary["noise"])
    lines += ["", "Machine: " + ("not recorded (files from before noise records)" if not recorded
                                 else "quiet in every run" if not noisy else
                                 f"noisy in runs {noisy}: " + "; ".join(
                                     summary["noise"][i]["reasons"][0] for i in noisy)), ""]
    lines += ["## Spread of each layer's median over the runs (max / min - 1)", "",
              "| kernel | layers | median over layers | largest |", "|---|---:|---:|---:|"]
    for kernel, s in summary["spread"].items():
        lines.append(f"| {kernel} | {s['layers']} | {s['median']:.1%} | {s['largest']:.1%} |")
    c = summary["coverage"]
    lines += ["", "## Intervals", "",
              f"{c['inside']} of {c['pairs']} record medians ({c['share']:.1%}) lie inside the "
              "95% interval of the median (`ci95_s`) of every other run's same record: that "
              "interval describes this run's median, not a rerun's."]
    pred = summary.get("prediction") or {}
    if pred.get("all"):
        lines += ["", "## Prediction intervals (`pi95_s`)", "",
                  "Share of (record, other run) pairs whose median lies in the record's 95% "
                  "prediction interval for a rerun, and its median half-width "
                  "(sqrt(hi / lo) - 1). The intervals come from each record's rounds, shrunk "
                  "towards the sweep's pooled rounds of the same kernel "
                  "(`convbench.measure.stats.prediction_interval`).", "",
                  "| kernel | pairs | inside | median half-width |", "|---|---:|---:|---:|"]
        for kernel, row in pred.items():
            lines.append(f"| {kernel} | {row['pairs']} | {row['share']:.1%} | "
                         f"{row['median_half_width']:.1%} |")
    v = summary["verdicts"]
    lines += ["", "## Verdicts", "",
              f"{v['consistent']} of {v['layers']} layers: the same winner in every run, or "
              "marked as a tie (≈) in at least one."]
    if "verdicts_with_reversed" in summary:
        vr = summary["verdicts_with_reversed"]
        lines.append(f"With the reversed kernel order as one more run: {vr['consistent']} of "
                     f"{vr['layers']}.")
    for layer, tops in v["flips"]:
        lines.append(f"- flipped: {layer}: {tops}")
    k = summary["compare"]
    lines += ["", "## compare", "",
              f"Every pair of runs: {k['same']} of {k['pairs']} ok pairs ({k['share']:.1%}) are "
              f"`same`; exit codes {k['exit_codes']}."]
    return "\n".join(lines)


def run_noise_verdict(noises: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The study's noise verdict: noisy if any run was, with each run's reasons."""
    if not all(noises):
        return noise_verdict(None, "some runs have no closing noise record")
    noisy = [i for i, n in enumerate(noises) if n.get("noisy")]
    return {"verdict": "noisy" if noisy else "quiet",
            "reasons": [f"run {i}: {r}" for i in noisy for r in noises[i]["reasons"]]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--suite", default="resnet50")
    parser.add_argument("--batch", default="1")
    parser.add_argument("--algo", default=DEFAULT_ALGO)
    parser.add_argument("--match")
    parser.add_argument("--extra", default="", help="more `convbench run` options, quoted")
    parser.add_argument("--no-reversed", action="store_true",
                        help="skip the run with the kernel order reversed")
    parser.add_argument("--out", default="results/cpu/reproducibility")
    parser.add_argument("--analyze", nargs="+", type=Path,
                        help="analyze these results files instead of running")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "convbench.cli", "run", "--suite", args.suite, "--batch",
            args.batch, "--backend", "cpu", "--mode", "perf", "--no-progress",
            *(["--match", args.match] if args.match else []), *args.extra.split()]
    seconds: list[float] = []
    if args.analyze:
        paths, reversed_path = args.analyze, None
    else:
        paths = [out / f"run{i}.jsonl" for i in range(args.runs)]
        jobs = [(p, args.algo) for p in paths]
        reversed_path = None if args.no_reversed else out / "reversed.jsonl"
        if reversed_path is not None:
            jobs.append((reversed_path, ",".join(reversed(args.algo.split(",")))))
        for path, algo in jobs:
            path.unlink(missing_ok=True)
            t0 = time.perf_counter()
            done = subprocess.run([*base, "--algo", algo, "--out", str(path)],
                                  capture_output=True, text=True)
            seconds.append(time.perf_counter() - t0)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            print(f"{path}: {seconds[-1]:.0f} s", flush=True)
    summary = analyze(paths, reversed_path)
    command = [*base[2:], "--algo", args.algo]
    prov = provenance(repetitions={"runs": len(paths), "each": "convbench run's default rounds "
                                   "and samples (see each run's header)"},
                      noise=run_noise_verdict(summary["noise"]),
                      command=[sys.executable, *sys.argv])
    (out / "summary.json").write_text(json.dumps({"provenance": prov, **summary}, indent=1,
                                                 default=str))
    text = report(summary, ["convbench", *command[1:]], seconds)
    (out / "README.md").write_text(markdown_block(prov) + "\n" + text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
