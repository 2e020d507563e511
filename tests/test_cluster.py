"""Sweeps on a Dask cluster: a real scheduler and workers on 127.0.0.1.

The clusters are ``dask scheduler`` and ``dask worker`` subprocesses (each worker
with its own environment, so that two can pose as two hosts with different
platform fingerprints), and ``LocalCluster`` through ``--scheduler local:N``.
"""

import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="sweeps on a Dask cluster need dask.distributed: "
                                          "pip install 'convbench[cluster]'")

from convbench import cli  # noqa: E402
from convbench.measure.cluster import parse_scheduler  # noqa: E402
from convbench.store.jsonl import load_run  # noqa: E402

TESTS = Path(__file__).parent
CORES = len(os.sched_getaffinity(0))
#: Two small suites' worth of layers, four algorithms: the accuracy sweep both ways.
ACCURACY = ("--suite", "lenet5,alexnet", "--algo", "direct,im2col,fft,winograd", "--batch", "1",
            "--mode", "accuracy", "--fill", "exact", "--no-progress")
SMALL = ['mb1ic8ih12oc8kh3ph1n"small3x3"', 'mb1ic8ih12oc16kh1n"small1x1"',
         'mb1ic4ih10oc8kh5ph2n"small5x5"']


def _env(**extra):
    env = {**os.environ, "CONVBENCH_KERNEL_MODULES": "faulty_kernels",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS),
                                                      os.environ.get("PYTHONPATH")]))}
    env.pop("CONVBENCH_HOST", None)
    return {**env, **extra}


class DaskCluster:
    """``dask scheduler`` and one ``dask worker`` per environment given (without a nanny
    unless ``nanny``: then each worker starts with the nanny's ``pre-spawn-environ``)."""

    def __init__(self, tmp: Path, workers: list[dict], nanny: bool = False):
        self.file = tmp / "scheduler.json"
        self.procs = []
        self.tmp = tmp
        # The health and metrics routes listen even without a dashboard: loopback only.
        self.scheduler = self._start(tmp, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                     "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
                                     "--scheduler-file", str(self.file))
        deadline = time.time() + 120
        while not self.file.exists() and time.time() < deadline:
            time.sleep(0.2)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = [self.start_worker(env, nanny, f"w{i}") for i, env in enumerate(workers)]
        self.wait_for_workers(len(workers))

    def start_worker(self, env: dict, nanny: bool, name: str) -> subprocess.Popen:
        """``dask worker SCHEDULER --nthreads 1``, on loopback, with ``env`` added."""
        return self._start(self.tmp, "worker", self.address, "--nthreads", "1",
                           "--nanny" if nanny else "--no-nanny", "--host", "127.0.0.1",
                           "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
                           "--name", name, env=env)

    def wait_for_workers(self, count: int, names: set[str] | None = None) -> None:
        """Until ``count`` workers are up (and, given ``names``, only those: gone ones left)."""
        from distributed import Client

        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(count, timeout=120)
            deadline = time.time() + 120
            while names is not None and time.time() < deadline and names != {
                    w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}:
                time.sleep(0.2)

    def _start(self, tmp, *args, env=None):
        log = open(tmp / f"{args[0]}-{len(self.procs)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log,
                                stderr=subprocess.STDOUT, env=_env(**(env or {})),
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def kill(self, proc):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def close(self):
        for proc in reversed(self.procs):  # test clusters keep nothing worth a clean exit
            if proc.poll() is None:
                self.kill(proc)


#: Host B's oneDNN dispatch is held to the default ISA: another platform fingerprint.
HOST_A = {"CONVBENCH_HOST": "host-a", "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
HOST_B = {"CONVBENCH_HOST": "host-b", "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
          "ATEN_CPU_CAPABILITY": "default"}


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    """Two workers posing as two hosts with different fingerprints (non-daemonic workers
    under a nanny: each round runs in a convbench worker process beside the Dask worker)."""
    cluster = DaskCluster(tmp_path_factory.mktemp("two_hosts"), [HOST_A, HOST_B], nanny=True)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def one_host(tmp_path_factory):
    """Two daemonic workers on one host (each measures in its own process)."""
    cluster = DaskCluster(tmp_path_factory.mktemp("one_host"), [{}, {}])
    yield cluster
    cluster.close()


def _convbench(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "convbench.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=_env(**(env or {})))


def _errors(path):
    return {r.key: (r["status"], r.get("reason"), r.get("error")) for r in load_run(path).records}


@pytest.mark.slow
def test_an_accuracy_sweep_on_the_cluster_equals_the_sweep_without_it(two_hosts, tmp_path):
    here, there = tmp_path / "here.jsonl", tmp_path / "there.jsonl"
    assert cli.main(["run", *ACCURACY, "--out", str(here), "--no-isolate"]) == 0
    proc = _convbench("run", *ACCURACY, "--out", str(there), "--scheduler", two_hosts.address)
    assert proc.returncode == 0, proc.stderr
    ours, theirs = _errors(here), _errors(there)
    assert len(ours) == 32 and ours.keys() == theirs.keys()
    assert len(load_run(there).records) == 32  # each measurement once
    assert ours == theirs  # the exact fill's errors, bit for bit
    records = load_run(there).records
    assert {r["host"] for r in records} == {"host-a", "host-b"}  # every worker took part
    # One worker per host: each measurement gets all the host's cores, BLAS included
    # (not the single thread a Dask nanny gives its worker).
    assert {n for r in records for n in r["blas_threads"]} == {CORES}
    assert not any("worker_environ" in r for r in records)
    header = load_run(there).headers[0]["environment"]["cluster"]
    assert header["scheduler"] == two_hosts.address
    assert sorted(w["host"] for w in header["workers"].values()) == ["host-a", "host-b"]


#: AlexNet's conv1 and conv3, whose FFT records' rel_l2 came out apart in the last digits when
#: Dask gave each round one BLAS thread (the norm is OpenBLAS's ddot: a partial sum per thread).
FFT_SUBSET = ("--suite", "alexnet", "--match", "conv[13]", "--algo", "fft",
              "--mode", "accuracy", "--fill", "exact", "--no-progress")


@pytest.mark.slow
def test_workers_under_a_nanny_measure_the_errors_a_local_sweep_measures(tmp_path):
    """Two workers on this host as Dask's docs start them (``dask worker ADDR --nthreads 1``):
    daemonic, their nanny's single-threaded BLAS and eager heap trim in their environment."""
    from convbench.measure.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD

    cluster = DaskCluster(tmp_path, [{}, {}], nanny=True)
    try:
        here, there = tmp_path / "here.jsonl", tmp_path / "there.jsonl"
        proc = _convbench("run", *FFT_SUBSET, "--out", str(there), "--scheduler", cluster.address)
    finally:
        cluster.close()
    assert proc.returncode == 0, proc.stderr
    assert cli.main(["run", *FFT_SUBSET, "--out", str(here), "--no-isolate"]) == 0
    ours, theirs = _errors(here), _errors(there)
    assert len(ours) == 2 and ours == theirs  # the exact fill's errors, bit for bit
    records = load_run(there).records
    assert all(r["threads"] == CORES and set(r["blas_threads"]) == {CORES} for r in records)
    assert all(r["worker_environ"]["OPENBLAS_NUM_THREADS"] == "1" for r in records)
    assert all(r["allocator"]["mmap_threshold"] == MMAP_THRESHOLD
               and r["allocator"]["trim_threshold"] == TRIM_THRESHOLD for r in records)


@pytest.mark.slow
@pytest.mark.skipif(CORES < 2, reason="Numba launched with one thread is all a 1-core host has")
def test_a_worker_that_cannot_is_refused_with_the_command_line_that_can(tmp_path):
    """Numba launched with one thread, and a heap variable glibc reads only at start: the
    sweep is refused before its file is written, and the command line it gives works."""
    cluster = DaskCluster(tmp_path, [{"NUMBA_NUM_THREADS": "1",
                                      "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON":
                                      '{"MALLOC_ARENA_MAX": 2}'}], nanny=True)
    out = tmp_path / "refused.jsonl"
    sweep = ("run", SMALL[0], "--algo", "direct", "--mode", "accuracy", "--threads", "2",
             "--out", str(out), "--no-progress", "--scheduler", cluster.address)
    try:
        refused = _convbench(*sweep)
        cluster.kill(cluster.workers[0])
        assert refused.returncode == 2, refused.stderr
        assert not out.exists()
        assert "MALLOC_ARENA_MAX=2, which glibc reads only when a process starts" in refused.stderr
        assert "Numba was launched with 1 thread(s) (NUMBA_NUM_THREADS) and cannot run the 2" \
            in refused.stderr
        unset = ('{"MALLOC_ARENA_MAX": None, "MALLOC_TRIM_THRESHOLD_": None, "MKL_NUM_THREADS": '
                 'None, "OMP_NUM_THREADS": None, "OPENBLAS_NUM_THREADS": None}')
        command = (f"NUMBA_NUM_THREADS=2 DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON='{unset}' "
                   f"dask worker {cluster.address} --nthreads 1")
        assert refused.stderr.rstrip().endswith(command)
        # Started as it says (on this scheduler, with what else the test needs), it measures.
        *assignments, _, _, _, _, _ = shlex.split(command)
        cluster.start_worker(dict(a.split("=", 1) for a in assignments), True, "fixed")
        cluster.wait_for_workers(1, {"fixed"})
        accepted = _convbench(*sweep)
    finally:
        cluster.close()
    assert accepted.returncode == 0, accepted.stderr
    (record,) = load_run(out).records
    assert record["status"] == "ok" and record["threads"] == 2 and "worker_environ" not in record


def test_a_round_in_a_nanny_worker_gets_a_local_rounds_threads_and_heap(monkeypatch):
    """What a round does in a daemonic worker under a nanny, here in this process: it takes the
    nanny's variables out, raises BLAS past their single thread and fixes the C heap."""
    from threadpoolctl import threadpool_limits

    from convbench.measure import cluster, runner
    from convbench.measure.allocator import keep_freed_memory
    from convbench.problem.suites import select_layers

    nanny = {"OPENBLAS_NUM_THREADS": "1", "MALLOC_TRIM_THRESHOLD_": "65536"}
    for var, value in nanny.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(cluster, "_STATE", {})
    monkeypatch.setattr(cluster, "_measures_here", lambda: True)
    ((_, layer),) = select_layers(descriptors=[SMALL[0]])
    task = runner.Task(layer, "direct", runner.SweepSettings(mode="accuracy", fill="exact"))
    with threadpool_limits(limits=1):  # what the nanny's variables gave the worker's BLAS
        rec = cluster._measure_round(task, 0)
    assert rec["status"] == "ok" and rec["threads"] == CORES
    assert rec["blas_threads"] and set(rec["blas_threads"]) == {CORES}
    assert rec["worker_environ"] == nanny and not set(nanny) & set(os.environ)
    assert rec["allocator"] == keep_freed_memory()


def test_the_refusal_names_what_falls_short_and_how_to_start_the_worker():
    from convbench.measure import cluster

    info = {"threads": 4, "numba_threads": 1,
            "blas": [{"internal_api": "openblas", "version": "0.3.30", "num_threads": 1},
                     {"internal_api": "openmp", "version": None, "num_threads": 4}]}
    reasons = cluster._thread_shortfall(info, 4)
    cores = min(4, CORES)
    assert reasons[-1] == "its openblas 0.3.30 runs 1 thread(s), not the 4 asked for"
    assert len(reasons) == 1 + (cores > 1)  # Numba falls short where the host has the cores
    assert cluster._heap_shortfall({"MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1",
                                    "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}) == [
        "its nanny started it with GLIBC_TUNABLES=glibc.malloc.tcache_count=0, which glibc "
        "reads only when a process starts"]  # the trim threshold convbench sets again itself
    text = cluster.refusal_message(["its Numba was launched with 1 thread(s) (NUMBA_NUM_THREADS)"
                                    " and cannot run the 4 asked for"],
                                   worker="tcp://127.0.0.1:2", scheduler="tcp://127.0.0.1:1",
                                   nthreads=1, count=4, nanny={}, has_nanny=False)
    assert text.endswith("\n    NUMBA_NUM_THREADS=4 dask worker tcp://127.0.0.1:1 --nthreads 1 "
                         "--no-nanny")
    assert text.startswith("worker tcp://127.0.0.1:2 cannot measure what a local sweep measures")


@pytest.mark.slow
def test_perf_records_of_two_hosts_keep_their_platforms_apart(two_hosts, tmp_path):
    out = tmp_path / "perf.jsonl"
    proc = _convbench("run", *SMALL, "--algo", "direct,im2col,onednn", "--mode", "perf",
                      "--rounds", "2", "--cooldown", "0", "--min-reps", "3", "--min-time", "0",
                      "--retries", "0", "--threads", "1", "--out", str(out),
                      "--no-progress", "--scheduler", two_hosts.address)
    assert proc.returncode == 0, proc.stderr
    run = load_run(out)
    by_host = {h: [r for r in run.records if r["host"] == h] for h in ("host-a", "host-b")}
    assert all(by_host.values()), "both hosts measured"
    ids = {h: {r["fingerprint"]["id"] for r in recs} for h, recs in by_host.items()}
    assert len(ids["host-a"]) == len(ids["host-b"]) == 1 and ids["host-a"] != ids["host-b"]
    assert all(r["fingerprint"]["overrides"].get("ATEN_CPU_CAPABILITY") == "default"
               and r["fingerprint"]["onednn_isa"] == "DEFAULT" for r in by_host["host-b"])
    a, b = ids["host-a"].pop(), ids["host-b"].pop()
    # Each layer's kernels were timed on one platform, so its comparison is complete there.
    for layer in SMALL:
        assert len({r["host"] for r in run.records if r["problem"] == layer}) == 1
    # The sweep's tables: one per platform, each with its own whole-network lines.
    assert f"**platform {a} (host-a)**" in proc.stdout
    assert f"**platform {b} (host-b)**" in proc.stdout
    assert "| platform | kernel | whole network ms [95% CI] |" in proc.stdout
    # The report: one section per platform; compare pairs only within a platform.
    report = tmp_path / "report"
    assert cli.main(["report", str(out), "-o", str(report)]) == 0
    text = (report / "README.md").read_text()
    assert f"on platform {a} (host-a)" in text and f"on platform {b} (host-b)" in text
    from convbench.measure.compare import compare_runs
    from convbench.present.plots import RunView

    views = RunView.from_run(run, "perf")
    assert len(views) == 2 and all(len({r.platform for r in v.records}) == 1 for v in views)
    rows = compare_runs(run, run)
    assert rows and all(r.same_platform and r.old.platform == r.new.platform for r in rows)
    assert len(rows) == len(run.records)  # a key measured on both hosts pairs on each


def test_records_of_other_platforms_get_no_time_ratio(tmp_path):
    from convbench.measure.compare import compare_runs
    from convbench.present.tables import group_by_layer, layer_table
    from convbench.store.jsonl import write_records

    rec = {"type": "result", "problem": SMALL[0], "backend": "cpu", "kernel": "direct",
           "name": "small3x3", "status": "ok", "time": {"median_s": 1.0},
           "error": {"rel_l2": 1e-7}}
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    write_records(old, [{**rec, "fingerprint": {"id": "aaaa"}}])
    write_records(new, [{**rec, "fingerprint": {"id": "bbbb"}, "time": {"median_s": 9.0}}])
    (row,) = compare_runs(load_run(old), load_run(new))
    assert not row.same_platform and row.time_ratio is None and not row.regressions
    assert cli.main(["compare", str(old), str(new)]) == 0
    mixed = [*load_run(old).records, *load_run(new).records]
    with pytest.raises(ValueError, match="2 platforms"):
        group_by_layer(mixed)
    assert layer_table(mixed).count("**platform ") == 2


@pytest.mark.slow
def test_one_timing_measurement_at_a_time_per_host(one_host, tmp_path):
    out = tmp_path / "timed.jsonl"
    proc = _convbench("run", *SMALL, "--algo", "direct,im2col,test_sleeping", "--mode", "perf",
                      "--rounds", "2", "--cooldown", "0", "--min-reps", "3", "--min-time", "0",
                      "--retries", "0", "--threads", "1",
                      "--out", str(out), "--no-progress", "--scheduler", one_host.address)
    assert proc.returncode == 0, proc.stderr
    records = load_run(out).records
    assert len(records) == 9 and len({r["worker"] for r in records}) == 2
    assert all(len(r["measured_at"]) == 2 for r in records)  # two rounds each
    spans = sorted(span for r in records for span in r["measured_at"])
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "two timing measurements overlapped on one host"


@pytest.mark.slow
def test_accuracy_work_uses_every_worker_at_once(one_host, tmp_path):
    out = tmp_path / "accuracy.jsonl"
    proc = _convbench("run", "--suite", "resnet50", "--match", "res[45]", "--algo",
                      "test_sleeping", "--mode", "accuracy", "--batch", "1", "--out", str(out),
                      "--no-progress", "--scheduler", one_host.address)
    assert proc.returncode == 0, proc.stderr
    spans = sorted(span for r in load_run(out).records for span in r["measured_at"])
    assert any(end > start for (_, end), (start, _) in itertools.pairwise(spans))


@pytest.mark.slow
def test_a_crashing_kernel_costs_one_record_on_the_cluster(two_hosts, tmp_path):
    out = tmp_path / "crash.jsonl"
    proc = _convbench("run", *SMALL[:2], "--algo", "test_crashing,direct", "--mode", "accuracy",
                      "--out", str(out), "--no-progress", "--scheduler", two_hosts.address)
    assert proc.returncode == 0, proc.stderr
    by_kernel = {}
    for r in load_run(out).records:
        by_kernel.setdefault(r["kernel"], []).append(r)
    assert [r["status"] for r in by_kernel["direct"]] == ["ok", "ok"]
    assert all(r["status"] == "failed" and "worker process died (signal 11)" in r["reason"]
               for r in by_kernel["test_crashing"])


def _wait_for_records(path, count, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and sum('"type": "result"' in line
                                 for line in path.read_text().splitlines()) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended early: {proc.communicate()}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the sweep wrote no records")


#: A timed sweep of 15 quick measurements (ResNet-50's res3 to res5 layers, a sleeping kernel).
#: No retries: a sleeping kernel leaves the CPU to the cluster's other processes, which the
#: round's watch would count as disturbance; these tests are about records, not timing.
SLEEPY = ("run", "--suite", "resnet50", "--match", "res[345]", "--batch", "1", "--algo",
          "test_sleeping", "--mode", "perf", "--rounds", "2", "--min-reps", "3",
          "--min-time", "0", "--cooldown", "0", "--retries", "0", "--no-progress")
SLEEPY_COUNT = 15


@pytest.mark.slow
def test_killing_a_worker_mid_sweep_loses_and_duplicates_nothing(tmp_path):
    """Host A's worker dies mid-measurement. Being its platform's only worker, the layers
    held to it (a timed sweep keeps a layer on one platform) go to host B."""
    cluster = DaskCluster(tmp_path, [{"CONVBENCH_HOST": "host-a"},
                                     {"CONVBENCH_HOST": "host-b",
                                      "ATEN_CPU_CAPABILITY": "default"}])
    try:
        out = tmp_path / "killed.jsonl"
        proc = subprocess.Popen([sys.executable, "-m", "convbench.cli", *SLEEPY, "--out",
                                 str(out), "--scheduler", cluster.address],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_env())
        _wait_for_records(out, 3, proc)
        victim = cluster.workers[0]
        cluster.kill(victim)
        killed_at = time.time()
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
    finally:
        cluster.close()
    records = load_run(out).records
    keys = [r.key for r in records]
    assert len(keys) == SLEEPY_COUNT and len(set(keys)) == SLEEPY_COUNT  # each layer once
    assert all(r["status"] == "ok" for r in records)
    rounds = [(host, span) for r in records
              for host, span in zip(r["round_hosts"], r["measured_at"], strict=True)]
    assert "host-a" in {host for host, (_, end) in rounds if end < killed_at}
    assert {host for host, (start, _) in rounds if start > killed_at} == {"host-b"}
    assert all(len(r["measured_at"]) == 2 for r in records)  # every record has its rounds


#: Runs a sweep whose first finished round loses its result: the worker that holds it is
#: killed just before the client gathers it, so Dask must compute that round again.
LOSE_FIRST_RESULT = """
import os, signal, sys, time
from convbench import cli
from convbench.measure import cluster

gather = cluster._result
lost = []

def lose_then_gather(future, task, round_index):
    if not lost:
        client = future.client
        (holder,) = client.who_has(future)[future.key]
        pid = client.run(os.getpid, workers=[holder])[holder]
        os.kill(pid, signal.SIGKILL)
        while holder in client.scheduler_info(n_workers=-1)["workers"]:
            time.sleep(0.1)
        lost.append(holder)
        print("killed", holder, "holding", future.key, file=sys.stderr, flush=True)
    return gather(future, task, round_index)

cluster._result = lose_then_gather
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_result_lost_with_its_worker_is_measured_again(tmp_path):
    """The worker holding a finished round dies before the client gathers it. The round is
    held to that worker's platform, which has no worker left, so it must go elsewhere."""
    cluster = DaskCluster(tmp_path, [{"CONVBENCH_HOST": "host-a"},
                                     {"CONVBENCH_HOST": "host-b",
                                      "ATEN_CPU_CAPABILITY": "default"}])
    try:
        out = tmp_path / "lost.jsonl"
        proc = subprocess.run([sys.executable, "-c", LOSE_FIRST_RESULT, *SLEEPY[:4],
                               "res[45]_branch2b", *SLEEPY[5:], "--out", str(out),
                               "--scheduler", cluster.address],
                              capture_output=True, text=True, env=_env(), timeout=180)
    finally:
        cluster.close()
    assert proc.returncode == 0, proc.stderr
    assert "killed" in proc.stderr
    records = load_run(out).records
    keys = [r.key for r in records]
    assert len(keys) == 2 and len(set(keys)) == 2
    assert all(r["status"] == "ok" and len(r["measured_at"]) == 2 for r in records)


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_keeps_every_finished_record_and_resume_completes(one_host, tmp_path):
    """Interrupted on a LocalCluster (local:2), resumed on the running one_host cluster."""
    out = tmp_path / "interrupted.jsonl"
    args = [*SLEEPY, "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "convbench.cli", *args, "--scheduler",
                             "local:2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), preexec_fn=_default_sigint)
    _wait_for_records(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    first = load_run(out).records
    assert all(r["status"] == "ok" for r in first)
    # A timed sweep gives each measurement all the cores, BLAS included.
    assert {n for r in first for n in r["blas_threads"]} == {CORES}
    complete = [r for r in first if not r.get("incomplete")]
    # Records whose rounds the interrupt cut short are kept, marked incomplete.
    assert 2 <= len(complete) < SLEEPY_COUNT
    assert all(len(r["measured_at"]) < 2 for r in first if r.get("incomplete"))
    proc = _convbench(*args, "--resume", "--scheduler", one_host.address)
    assert proc.returncode == 0, proc.stderr
    records = load_run(out).records
    assert records[:len(first)] == first
    finished = [r.key for r in records if not r.get("incomplete")]
    assert len(finished) == SLEEPY_COUNT and len(set(finished)) == SLEEPY_COUNT
    assert f"{len(complete)} measurements reused" in proc.stdout


@pytest.mark.slow
def test_check_and_tune_run_on_the_cluster(two_hosts, tmp_path):
    proc = _convbench("check", "--suite", "lenet5", "--algo", "direct,im2col", "--dtype", "f32",
                      "--no-progress", "--scheduler", two_hosts.address,
                      "--baseline", str(tmp_path / "none.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no baseline file: the envelopes alone decided" in proc.stdout
    plans = tmp_path / "plans.json"
    proc = _convbench("tune", *SMALL[:2], "--algo", "direct,im2col", "--budget", "1e-5",
                      "--min-reps", "3", "--min-time", "0", "--threads", "1", "--out",
                      str(plans), "--no-progress", "--scheduler", two_hosts.address)
    assert proc.returncode == 0, proc.stderr
    assert plans.exists(), proc.stdout + proc.stderr
    doc = json.loads(plans.read_text())
    records = load_run(plans.with_suffix(".jsonl")).records
    measured_on = {r["fingerprint"]["id"] for r in records}
    # Each layer's plan is filed under the platform whose records chose it.
    assert set(doc["platforms"]) == measured_on


def test_scheduler_values_and_a_missing_extra(monkeypatch, capsys):
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.1:8786") == ("address", "tcp://10.0.0.1:8786")
    for bad in ("local:0", "local:x", "10.0.0.1:8786", "tcp://"):
        with pytest.raises(ValueError, match="tcp://HOST:PORT .* or local:N"):
            parse_scheduler(bad)
    monkeypatch.setitem(sys.modules, "distributed", None)
    assert cli.main(["run", SMALL[0], "--algo", "direct", "--scheduler", "local:2",
                     "--out", os.devnull]) == 2
    assert "pip install 'convbench[cluster]'" in capsys.readouterr().err
