"""An accuracy sweep on two Dask workers under nannies against the same sweep without Dask.

Starts ``dask scheduler`` and two workers the way Dask's docs start them
(``dask worker ADDR --nthreads 1``: each under a nanny, daemonic, with the
nanny's single-threaded BLAS and eager heap trim), on 127.0.0.1 only; runs the
exact-fill accuracy sweep of LeNet-5 and AlexNet over the four algorithms on
them and then without Dask; stops the cluster; and writes the errors record by
record, side by side, with the count of identical records (status, reason and
every error metric equal, bit for bit). ``--before FILE`` adds the records of an
earlier Dask run of the same sweep (say, at a commit before a fix) as a third
column, and for each record it has apart from the local sweep's, a probe in this
process: the kernel's output and the record's ``rel_l2`` with BLAS on one thread
and on all cores (Numba on all cores both times).

    python benchmarks/dask_vs_local.py --out results/cpu/dask_vs_local
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SWEEP = ["run", "--suite", "lenet5,alexnet", "--algo", "direct,im2col,fft,winograd",
         "--mode", "accuracy", "--fill", "exact", "--no-progress"]
#: Loopback only: the health/metrics routes listen even with --no-dashboard.
LOOPBACK = ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
WORKERS = 2


def dask_command(*args: str) -> list[str]:
    """``dask ARGS`` with this interpreter's Dask."""
    return [sys.executable, "-m", "dask", *args]


def start_cluster(folder: Path) -> tuple[str, list[subprocess.Popen]]:
    """A scheduler and :data:`WORKERS` nanny workers on 127.0.0.1: its address, the processes."""
    file = folder / "scheduler.json"
    procs = [_start(dask_command("scheduler", "--port", "0", *LOOPBACK,
                                 "--scheduler-file", str(file)), folder / "scheduler.log")]
    deadline = time.time() + 120
    while not file.exists() and time.time() < deadline:
        time.sleep(0.2)
    address = json.loads(file.read_text())["address"]
    procs += [_start(worker_command(address), folder / f"worker-{i}.log")
              for i in range(WORKERS)]
    from distributed import Client  # noqa: PLC0415 -- only with the cluster extra

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(WORKERS, timeout=120)
    return address, procs


def worker_command(address: str) -> list[str]:
    """The worker command line as Dask's docs give it (a nanny, the default), bound to
    loopback (flags that change where it listens, not its environment)."""
    return dask_command("worker", address, "--nthreads", "1", *LOOPBACK)


def _start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(procs: list[subprocess.Popen]) -> None:
    """End the cluster's processes (each its own session: the nanny's worker with it)."""
    for proc in reversed(procs):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def sweep(folder: Path, out: str, *extra: str) -> list[str]:
    """Run the sweep into ``folder / out`` (from there); its command line."""
    command = [sys.executable, "-m", "convbench.cli", *SWEEP, "--out", out, *extra]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=folder)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return command


def records(path: Path) -> dict[tuple, dict[str, Any]]:
    """The result records of a JSONL run by key."""
    from convbench.store.jsonl import load_run  # noqa: PLC0415

    return {r.key: dict(r) for r in load_run(path).records}


def header_commit(path: Path) -> str | None:
    """The convbench commit a JSONL run's header names."""
    from convbench.store.jsonl import load_run  # noqa: PLC0415

    headers = load_run(path).headers
    return headers[0].get("environment", {}).get("convbench_commit") if headers else None


def same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two records measured the same: status, reason and every error metric."""
    return a is not None and b is not None and \
        (a["status"], a.get("reason"), a.get("error")) == \
        (b["status"], b.get("reason"), b.get("error"))


def rows(local: dict, dask: dict, before: dict | None) -> list[dict[str, Any]]:
    """One row per local record, in the sweep's order."""
    out = []
    for key, rec in local.items():
        theirs, earlier = dask.get(key), (before or {}).get(key)
        row = {"layer": rec["name"], "suite": rec["suite"], "problem": key[0], "kernel": key[3],
               "status": rec["status"], "local_rel_l2": _rel_l2(rec),
               "dask_rel_l2": _rel_l2(theirs), "identical": same(rec, theirs),
               "dask_threads": (theirs or {}).get("threads"),
               "dask_blas_threads": (theirs or {}).get("blas_threads")}
        if before is not None:
            row.update(before_rel_l2=_rel_l2(earlier), before_identical=same(rec, earlier),
                       before_threads=(earlier or {}).get("threads"))
        out.append(row)
    return out


def blas_thread_probe(keys: list[tuple]) -> list[dict[str, Any]]:
    """Each (problem, kernel)'s output and ``rel_l2`` with BLAS on 1 thread and on all cores.

    Tells a kernel whose arithmetic depends on BLAS's thread count from an error
    metric that does (the ``rel_l2`` norm is a BLAS ``ddot``).
    """
    import numpy as np  # noqa: PLC0415
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    from convbench.contract import as_prepared  # noqa: PLC0415
    from convbench.measure import runner  # noqa: PLC0415
    from convbench.measure.inputs import make_inputs  # noqa: PLC0415
    from convbench.measure.threads import default_threads, pinned_threads  # noqa: PLC0415
    from convbench.problem.suites import select_layers  # noqa: PLC0415
    from convbench.registry import get_kernel  # noqa: PLC0415

    settings = runner.SweepSettings(mode="accuracy", fill="exact", isolate=False)
    out = []
    for descriptor, _, backend, kernel in keys:
        ((_, layer),) = select_layers(descriptors=[descriptor])
        p = layer.problem
        x, w, b = make_inputs(p, settings.seed, settings.fill)
        outputs, errors = {}, {}
        call = get_kernel(kernel, backend)
        for n in sorted({1, default_threads()}):
            with pinned_threads(None), threadpool_limits(limits=n):
                outputs[n] = np.array(as_prepared(call.prepare(p, x, w, b))())
                task = runner.Task(layer, kernel, settings)
                errors[n] = runner.measure_round(task)["error"]["rel_l2"]
        first, *others = outputs.values()
        out.append({"problem": descriptor, "kernel": kernel,
                    "outputs_identical": all(np.array_equal(first, o) for o in others),
                    "rel_l2_by_blas_threads": {str(n): e for n, e in errors.items()}})
    return out


def _rel_l2(rec: dict[str, Any] | None) -> float | None:
    return ((rec or {}).get("error") or {}).get("rel_l2")


def _shell(command: list[str]) -> str:
    """A command line as a user types it (``convbench``/``dask`` for ``python -m ...``)."""
    words = list(command)
    if words[:2] == [sys.executable, "-m"]:
        words = [words[2].split(".")[0]] + words[3:]
    return " ".join(words)


def markdown(doc: dict[str, Any], prov_block: str) -> str:
    """The Markdown page."""
    table = doc["records"]
    before = "before_rel_l2" in table[0]
    head = "| suite | layer | kernel | status | rel_l2 local | rel_l2 Dask |"
    rule = "|---|---|---|---|---:|---:|"
    if before:
        head += f" rel_l2 Dask at {doc['before']['commit']} |"
        rule += "---:|"
    lines = ["# Accuracy sweep on two Dask workers under nannies against the sweep without Dask",
             "", prov_block, "Local (no Dask):", "", f"    {doc['commands']['local']}", "",
             "Dask, on a scheduler and 2 workers on 127.0.0.1, each started as:", "",
             f"    {doc['worker_command']}", "", f"    {doc['commands']['dask']}", "",
             f"**{doc['identical']} of {doc['total']} records identical** (status, reason and "
             "every error metric, bit for bit)."]
    if before:
        b = doc["before"]
        lines += ["", f"Before the fix (commit {b['commit']}, the same workers and commands) "
                  f"{b['identical']} of {doc['total']} were: each Dask round got "
                  f"{_counts(b['threads'])} thread(s), the host's cores over its workers, "
                  f"where the local sweep uses {_counts(doc['local_threads'])} (all cores). "
                  "The records that differed, measured again in one process with BLAS on 1 "
                  "thread and on all cores (Numba on all cores both times):", "",
                  "| layer | kernel | output at 1 and all BLAS threads | rel_l2 by BLAS threads |",
                  "|---|---|---|---|"]
        for c in b["probe"]:
            errors = ", ".join(f"{n}: {e!r}" for n, e in c["rel_l2_by_blas_threads"].items())
            lines.append(f"| `{c['problem']}` | {c['kernel']} | "
                         f"{'bit-identical' if c['outputs_identical'] else 'different'} | "
                         f"{errors} |")
        lines += ["", "The kernel computes the same output either way; the `rel_l2` norm "
                  "(`np.linalg.norm`, OpenBLAS's `ddot`: one partial sum per thread) is what "
                  "differs, in its last digits."]
    lines += ["", head, rule]
    for r in table:
        cells = [r["suite"], r["layer"], r["kernel"], r["status"], _num(r["local_rel_l2"]),
                 _num(r["dask_rel_l2"]) + ("" if r["identical"] else " **≠**")]
        if before:
            cells.append(_num(r["before_rel_l2"]) + ("" if r["before_identical"] else " **≠**"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _counts(values: list[int]) -> str:
    return ", ".join(map(str, values)) or "?"


def _num(value: float | None) -> str:
    return "—" if value is None else repr(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    parser.add_argument("--before", type=Path, help="an earlier Dask run of the sweep (JSONL)")
    args = parser.parse_args()
    from convbench.store.provenance import (  # noqa: PLC0415
        markdown_block,
        noise_verdict,
        provenance,
    )

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        address, procs = start_cluster(folder)
        try:
            dask_cmd = sweep(folder, "dask.jsonl", "--scheduler", address)
        finally:
            stop(procs)
        local_cmd = sweep(folder, "local.jsonl")
        local, dask = records(folder / "local.jsonl"), records(folder / "dask.jsonl")
    before = records(args.before) if args.before else None
    table = rows(local, dask, before)
    doc: dict[str, Any] = {
        "commands": {"local": _shell(local_cmd), "dask": _shell(dask_cmd)},
        "worker_command": _shell(worker_command(address)),
        "total": len(table), "identical": sum(r["identical"] for r in table),
        "local_threads": sorted({r.get("threads") for r in local.values()} - {None}),
        "records": table}
    if before is not None:
        apart = [key for key, rec in local.items() if not same(rec, before.get(key))]
        doc["before"] = {"file": str(args.before), "commit": header_commit(args.before),
                         "identical": sum(r["before_identical"] for r in table),
                         "threads": sorted({r["before_threads"] for r in table} - {None}),
                         "probe": blas_thread_probe(apart)}
    prov = provenance(repetitions={"sweeps": 2, "rounds_per_record": 1,
                                   "note": "one accuracy round per record in each sweep"},
                      noise=noise_verdict(None, "accuracy only: errors do not depend on "
                                                "machine noise"))
    doc = {"provenance": prov, **doc}
    text = markdown(doc, markdown_block(prov))
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.md").write_text(text)
        Path(f"{args.out}.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0 if doc["identical"] == doc["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
