"""`convbench check` on emulated platforms, with planted faults, and the margin between them.

For each platform of :mod:`convbench.measure.platforms` this CPU can emulate,
in fresh processes with that platform's variables set:

1. ``convbench check --backend cpu`` over the chosen suites (every CPU kernel
   and baseline, float32 and float64): every correct kernel must pass;
2. the same with the planted faults of ``tests/planted_faults.py`` (and the
   dropped bias of ``tests/planted_bias_fault.py``) registered under the
   built-ins' names, float32: every fault must be caught wherever it bites
   (moves the output well beyond rounding).

Then the margin table: per kernel, dtype and metric, the largest legitimate
value over every platform against the smallest fault. The rule can tell
them apart only while the margin stays far above 1 (10x is the bar).

Usage::

    python benchmarks/check_platforms.py --out results/accuracy/platforms
    python benchmarks/check_platforms.py --suite lenet5,alexnet --platform native,sse
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from convbench.measure.compare import fault_bites, margins, widest_margins
from convbench.measure.platforms import PLATFORMS, platform
from convbench.store.jsonl import load_run
from convbench.store.provenance import (
    accuracy_provenance,
    combined,
    file_provenance,
    with_json,
    with_markdown,
)
from convbench.store.records import Record

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
#: Fault modules and the kernels they replace.
FAULT_RUNS = (("planted_faults", "direct,im2col,fft,winograd"), ("planted_bias_fault", "im2col"))


def run_check(env_extra: dict[str, str], out: Path, args: list[str]) -> tuple[int, float, str]:
    """``convbench check ARGS --out OUT`` in a fresh process; (exit status, seconds, stdout)."""
    env = dict(os.environ, **env_extra)
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "convbench", "check", "--no-progress",
                           "--out", str(out), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=False)
    return done.returncode, time.perf_counter() - t0, done.stdout + done.stderr


def caught(rec: dict) -> bool:
    """Whether the check's rule flags a record (the envelope, non-finite output, a failure)."""
    error = rec.get("error") or {}
    ratio = error.get("envelope_ratio")
    return (rec.get("status") == "failed" or bool(error.get("nonfinite"))
            or (ratio is not None and float(ratio) > 1.0))


def measure_platform(name: str, suites: str, out: Path, reuse: bool = False) -> dict:
    """The legitimate and the faulty check of one platform; what each found.

    ``reuse`` reads the records an earlier run left in ``out`` instead of measuring.
    """
    p = platform(name)
    legit_path = out / f"{name}-legit.jsonl"
    if reuse:  # the times and exit codes of the run that measured, where it left them
        earlier = {s["platform"]: s for s in json.loads(Path(f"{out}.json").read_text())
                   ["platforms"]} if Path(f"{out}.json").exists() else {}
        summary = {k: v for k, v in earlier.get(name, {}).items()
                   if k.endswith(("_s", "_exit", "_summary"))}
        summary.update(platform=name, env=p.env)
    else:
        rc, seconds, text = run_check(p.env, legit_path, ["--suite", suites])
        summary = {"platform": name, "env": p.env, "check_exit": rc,
                   "check_s": round(seconds, 1), "check_summary": text.strip().splitlines()[:2]}
    legit = load_run(legit_path).records
    summary["legitimate"] = {"records": len(legit), "ok": sum(r.ok for r in legit),
                             "flagged": sum(caught(r) for r in legit),
                             "largest_envelope_ratio": max(
                                 (r.error("envelope_ratio") or 0.0 for r in legit), default=0.0)}
    summary.setdefault("check_exit", 1 if summary["legitimate"]["flagged"] else 0)
    faulty = []
    for module, algos in FAULT_RUNS:
        env = dict(p.env, CONVBENCH_KERNEL_MODULES=module,
                   PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS),
                                                            os.environ.get("PYTHONPATH")])))
        path = out / f"{name}-{module}.jsonl"
        if not reuse:
            rc_fault, seconds, _ = run_check(env, path, ["--suite", suites, "--dtype", "f32",
                                                         "--algo", algos])
            summary[f"{module}_exit"], summary[f"{module}_s"] = rc_fault, round(seconds, 1)
        faulty += [Record(r, fault=module) for r in load_run(path).records]
    clean = {(r.kernel, r["problem"]): r for r in legit}
    real = [r for r in faulty if fault_bites(r, clean.get((r.kernel, r["problem"])))]
    summary["faults"] = {"records": len(faulty), "bites": len(real),
                         "caught": sum(caught(r) for r in real),
                         "missed": [f"{r['fault']} {r.kernel} {r.label}" for r in real
                                    if not caught(r)]}
    return summary, legit, real


def margin_table(rows: list) -> str:
    lines = ["| kernel | metric | largest legitimate | at | smallest fault | at | margin |",
             "|---|---|---:|---|---:|---|---:|"]
    for m in rows:
        if m.largest_legitimate is None and m.smallest_fault is None:
            continue
        ratio = m.ratio
        lines.append(f"| {m.kernel} | {m.metric} | {_g(m.largest_legitimate)} | "
                     f"{m.legitimate_at} | {_g(m.smallest_fault)} | {m.fault_at} | "
                     f"{'—' if ratio is None else f'{ratio:.3g}x'} |")
    return "\n".join(lines)


def _g(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default=",".join(p.name for p in PLATFORMS),
                        help="comma list of platforms (default: every one this CPU can run)")
    parser.add_argument("--suite", default="all", help="suites to check (default all)")
    parser.add_argument("--out", default="results/accuracy/platforms",
                        help="writes OUT.md, OUT.json and the records under OUT/")
    parser.add_argument("--reuse", action="store_true",
                        help="summarize the records an earlier run left under OUT/")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries, per_platform, skipped = [], [], []
    for name in args.platform.split(","):
        reason = platform(name).unsupported_reason()
        if reason:
            skipped.append(f"{name}: {reason}")
            continue
        summary, legit, faults = measure_platform(name, args.suite, out, args.reuse)
        print(json.dumps(summary), flush=True)
        summaries.append(summary)
        per_platform.append(margins(legit, faults))
    rows = widest_margins(per_platform)
    ok = all(s["check_exit"] == 0 and not s["faults"]["missed"] for s in summaries)
    text = ["| platform | variables | check exit | legitimate flagged | largest "
            "envelope_ratio | check s | faults caught / that bite | fault runs s |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        env = " ".join(f"{k}={v}" for k, v in s["env"].items()) or "(none)"
        fault_s = sum(v for k, v in s.items() if k.endswith("_s") and k != "check_s")
        text.append(f"| {s['platform']} | `{env}` | {s['check_exit']} | "
                    f"{s['legitimate']['flagged']}/{s['legitimate']['records']} | "
                    f"{s['legitimate']['largest_envelope_ratio']:.3g} | "
                    f"{s.get('check_s', '—')} | {s['faults']['caught']}/{s['faults']['bites']}"
                    f" | {fault_s:.0f} |")
    report = "\n".join([f"Suites: {args.suite}. " + (f"Not run: {'; '.join(skipped)}."
                                                       if skipped else ""), "",
                        *text, "", "Margins over all platforms (largest legitimate value "
                        "against the smallest fault, where it bites):", "",
                        margin_table(rows), "", "every check passed and every fault was caught"
                        if ok else "**a legitimate kernel failed or a fault was missed**"])
    print("\n" + report)
    prov = platforms_provenance(out, [s["platform"] for s in summaries])
    Path(f"{out}.md").write_text(with_markdown(report + "\n", prov))
    Path(f"{out}.json").write_text(json.dumps(with_json(
        {"platforms": summaries, "skipped": skipped, "margins": [vars(m) for m in rows]},
        prov), indent=1))
    return 0 if ok else 1


def platforms_provenance(out: Path, names: list[str]) -> dict:
    """The checks' own records, one source per platform: each legitimate check's header
    names the platform its variables made (the fault runs ran beside it, alike)."""
    runs = {name: file_provenance(path) for name in names
            if (path := out / f"{name}-legit.jsonl").exists()}
    runs = {name: {**prov, "repetitions": {"mode": "accuracy", "measurements_per_entry": 1,
                                           "checks": 1 + len(FAULT_RUNS)}}
            for name, prov in runs.items() if prov is not None}
    if not runs:  # nothing checked: this process says where it ran
        return accuracy_provenance()
    return combined(runs)


if __name__ == "__main__":
    sys.exit(main())
