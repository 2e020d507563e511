"""The sweep: problems x kernels -> result records, measured in rounds, written as they finish.

Every timed record is measured in ``rounds`` rounds. Round ``r`` of every
record runs in worker process ``r`` (spawned once, reused), and within a
layer the kernels take their turns in an order shuffled anew for every round,
so that neither the state a process starts in (its buffers' addresses, its
compiled code's placement, which threads it has) nor the library that ran
just before belongs to one kernel. Each round starts with a cool-down and
warm calls (:func:`~convbench.measure.timing.bench`). A layer's records are
combined and written when its last round is done: the median over all
samples, the 95% interval from the rounds, and whether the rounds agree
(:mod:`convbench.measure.stats`).

A kernel that raises, or crashes its worker (a segfault in compiled code, an
abort in a library), costs one ``failed`` record, not the sweep: the runner
starts a new worker and goes on. ``isolate=False`` measures in-process
instead (debuggers, profilers; the rounds then share one process). Ctrl-C
stops the sweep between or during measurements; every finished record is
already on disk, and the layer that was running is written with the rounds
it has, marked ``incomplete`` so that ``--resume`` measures it again.

The seam for other executors is :func:`measure_round` (one round of one
task, in whatever process runs it) and :func:`combine_rounds` (a task's
rounds into its record).
"""

from __future__ import annotations

import multiprocessing
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from convbench.contract import ErrorModel, as_prepared, refusal
from convbench.errors import UnsupportedProblem
from convbench.measure.clocks import make_clock
from convbench.measure.compare import output_errors
from convbench.measure.cooldown import WARM_S
from convbench.measure.disturbance import CpuWatch, disturbance, wait_for_quiet
from convbench.measure.inputs import make_inputs
from convbench.measure.metrics import ReferenceCache
from convbench.measure.stats import (
    RoundVariancePool,
    prediction_interval,
    summarize,
    summary_of,
)
from convbench.measure.threads import pinned_threads
from convbench.measure.timing import Timing, bench
from convbench.problem import ConvProblem
from convbench.problem.arguments import array_module
from convbench.problem.suites import SuiteLayer
from convbench.registry import get_kernel
from convbench.store.jsonl import ResultWriter
from convbench.store.records import Record

MODES = ("perf", "accuracy", "both")
#: Rounds of a timed record unless asked otherwise: the fewest that give an
#: interval from the level that varies (two would, barely; t(1) = 12.7).
DEFAULT_ROUNDS = 3
#: Seconds between one measurement and the next round's warm calls: long
#: enough for idle OpenBLAS, OpenMP and Numba threads to stop spinning.
DEFAULT_COOLDOWN = 0.15
#: Warm calls after the cool-down, before the clock starts.
DEFAULT_WARMUP = 2
#: Seconds a timed run lasts at least: calls shorter than this are timed in batches,
#: so that a round of a microsecond call keeps about a hundred runs.
MIN_SAMPLE_S = 1e-3
#: Layers whose rounds are interleaved (see ``SweepSettings.round_block``): every shipped
#: suite but GoogLeNet and DeepBench is one block, so a record's rounds spread over the
#: whole sweep (about 30 s apart for ResNet-50 at batch 1 on this project's 2-core
#: machine, where the speed of memory-bound kernels drifts over minutes).
DEFAULT_ROUND_BLOCK = 24
#: Times a disturbed round is timed again (see :mod:`convbench.measure.disturbance`).
DEFAULT_RETRIES = 3
#: Significant digits kept of each stored sample (far below any run-to-run change).
SAMPLE_DIGITS = 6


@dataclass(frozen=True)
class SweepSettings:
    """How every measurement of a sweep is taken.

    Attributes
    ----------
    backend : {"cpu", "gpu"}
    mode : {"perf", "accuracy", "both"}
    seed : int
        Seed of the inputs (and of the rounds' kernel order).
    min_reps, min_time, max_time
        :func:`~convbench.measure.timing.bench`'s stopping rule, per round.
    threads : int or None
        Numba, BLAS and torch threads (None: all cores).
    isolate : bool
        Measure in worker processes (a crash costs one record, not the sweep;
        each round in its own process).
    timeout : float or None
        Seconds one round of one measurement may take before it is failed.
    fill : {"random", "exact"}
    flush_l2 : bool
        GPU: evict the L2 cache before every timed run.
    rounds : int
        Rounds of every timed record (accuracy alone needs one).
    cooldown : float
        Seconds of pause before each round's warm calls.
    warmup : int
        Warm calls after the cool-down.
    warm_time : float
        Least seconds of those warm calls (more calls where they are short):
        the cores a pause left idle take that long to come back
        (:data:`convbench.measure.cooldown.WARM_S`).
    round_block : int
        Layers whose rounds are taken together: round ``r`` of every layer of
        a block runs before round ``r + 1`` of any of them, so a record's
        rounds lie a pass over the block apart in time and sample the
        machine's slower changes too; a block's records are written when its
        last round ends. 0: the whole sweep is one block.
    retries : int
        Times a round is timed again when other processes or the hypervisor
        took CPU time while it ran (:mod:`convbench.measure.disturbance`);
        a round still disturbed after them makes its record unstable.
    """

    backend: str = "cpu"
    mode: str = "both"
    seed: int = 0
    min_reps: int = 5
    min_time: float = 0.1
    max_time: float = 30.0
    threads: int | None = None
    isolate: bool = True
    timeout: float | None = 600.0
    fill: str = "random"
    flush_l2: bool = False
    rounds: int = DEFAULT_ROUNDS
    cooldown: float = DEFAULT_COOLDOWN
    warmup: int = DEFAULT_WARMUP
    warm_time: float = WARM_S
    retries: int = DEFAULT_RETRIES
    round_block: int = DEFAULT_ROUND_BLOCK

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not self.cooldown >= 0:
            raise ValueError(f"cooldown must be >= 0, got {self.cooldown}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not self.warm_time >= 0:
            raise ValueError(f"warm_time must be >= 0, got {self.warm_time}")
        if self.round_block < 0:
            raise ValueError(f"round_block must be >= 0, got {self.round_block}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")

    @property
    def timed(self) -> bool:
        return self.mode in ("perf", "both")

    @property
    def planned_rounds(self) -> int:
        """Rounds each record gets: ``rounds`` when timed, one for accuracy alone."""
        return self.rounds if self.timed else 1


@dataclass(frozen=True)
class Task:
    """One measurement: a layer, a kernel and the sweep's settings (picklable).

    ``layer.problem`` is None for a suite line convbench cannot model; such a
    task records ``skipped`` with the line's reason.
    """

    layer: SuiteLayer
    kernel: str
    settings: SweepSettings
    suite: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(descriptor, dir, backend, kernel): the key of the record it produces."""
        p = self.layer.problem
        return (self.layer.descriptor, p.dir if p is not None else "fwd",
                self.settings.backend, self.kernel)


def base_record(task: Task) -> Record:
    """The record's fields known before anything is measured."""
    p, s = task.layer.problem, task.settings
    return Record({
        "type": "result", "problem": task.layer.descriptor,
        "dir": p.dir if p is not None else "fwd", "name": task.layer.name,
        "suite": task.suite, "repeat": task.layer.repeat, "kernel": task.kernel,
        "backend": s.backend, "kind": None, "dtype": p.dtype if p else None,
        "mb": p.mb if p else None, "flops": p.flops if p else None, "mode": s.mode,
        "seed": s.seed, "fill": s.fill, "status": None, "reason": None, "gflops": None,
        "time": None, "error": None, "workspace_bytes": None})


def measure_round(task: Task, round_index: int = 0,
                  references: ReferenceCache | None = None) -> Record:
    """One round of one (problem, kernel): timed runs, and in round 0 the error.

    The round prepares the kernel afresh, times its first call apart, pauses
    ``settings.cooldown`` seconds, makes ``settings.warmup`` warm calls (more, until
    ``settings.warm_time`` seconds), then
    times runs until the stopping rule is met. Never raises for kernel faults:
    they become the round's ``failed`` (or ``skipped``) status.

    Returns
    -------
    Record
        With ``round`` and, when timed, ``time`` = ``{"samples_s", "prepare_s",
        "first_call_s"}`` (what :func:`combine_rounds` reduces).
    """
    rec = base_record(task)
    rec["round"] = round_index
    settings = task.settings
    with_error = settings.mode in ("accuracy", "both") and round_index == 0
    references = references or ReferenceCache()
    p = task.layer.problem
    if p is None:
        rec.update(status="skipped", reason=task.layer.unsupported)
        return rec
    try:
        kernel = get_kernel(task.kernel, settings.backend)
    except ValueError as exc:
        rec.update(status="failed", reason=str(exc))
        return rec
    rec["kind"] = kernel.kind
    reason = refusal(kernel, p)
    if reason is not None:
        rec.update(status="skipped", reason=reason)
        return rec
    try:
        rec["workspace_bytes"] = int(kernel.workspace_bytes(p))
        rec["math_mode"] = kernel.math_mode(p)
        # Inputs are made on the host; GPU kernels copy them in prepare (untimed).
        x, w, b = make_inputs(p, settings.seed, settings.fill)
        t0 = time.perf_counter()
        call = as_prepared(kernel.prepare(p, x, w, b))
        prepare_s = time.perf_counter() - t0
        if settings.timed:
            timing, retries, disturbed = _time(call, settings, kernel.clock)
            rec["time"] = {"samples_s": [float(f"{v:.{SAMPLE_DIGITS}g}")
                                         for v in timing.times_s],
                           "prepare_s": prepare_s, "first_call_s": timing.first_call_s,
                           "batch": timing.batch, "retries": retries,
                           "cooled_s": round(timing.cooldown_s, 4),
                           "disturbed": disturbed}
            if timing.window is not None:
                rec["time"].update(foreign_cores=round(timing.window["foreign_cores"], 3),
                                   steal_cores=round(timing.window["steal_cores"], 3))
            if settings.backend == "gpu":
                rec["time"].update(clock=kernel.clock, flush_l2=settings.flush_l2)
        y = call()
        if call.details:
            rec["details"] = dict(call.details)
        if with_error:
            reference = references.get(p, settings.seed, x, w, b, settings.fill,
                                       array_module(y[0] if p.dir == "bwd_wb" else y))
            model = _error_model(kernel, p, call.details)
            rec["error"] = output_errors(p, y, reference, model,
                                         exact_fill=settings.fill == "exact")
            rec["error_model"] = asdict(model)
        rec["status"] = "ok"
    except UnsupportedProblem as exc:
        rec.update(status="skipped", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 -- a faulty kernel is a result, not a crash
        # CuPy's OutOfMemoryError is a MemoryError: the device is asked first.
        if is_device_oom(exc):
            rec.update(status="skipped", reason=f"{OUT_OF_GPU_MEMORY}: {exc}")
        elif isinstance(exc, MemoryError):
            rec.update(status="skipped", reason=f"{OUT_OF_HOST_MEMORY}: {exc}")
        else:
            tb = traceback.format_exc(limit=-3)
            rec.update(status="failed", reason=f"{type(exc).__name__}: {exc}", traceback=tb)
    finally:
        if settings.backend == "gpu":
            _release_device_memory()
    return rec


def combine_rounds(task: Task, rounds: list[Record]) -> Record:
    """A task's round records as its result record.

    A round that failed or was skipped makes the record (its status and
    reason; the rounds after it were not run). Otherwise the record is round
    0's (its error, details, workspace) with the times of every round:
    ``time.times_s`` (all samples, flat), ``time.samples_by_round_s``,
    ``time.rounds``, ``time.median_s`` (each round weighted equally),
    ``time.ci95_s``, ``time.round_medians_s``, ``time.unstable`` (with
    ``time.unstable_reasons``), and ``time.incomplete`` where fewer rounds
    than planned ran (an interrupted sweep; ``--resume`` measures it again).
    """
    if not rounds:
        rec = base_record(task)
        rec.update(status="failed", reason="no round was measured")
        return rec
    bad = next((r for r in rounds if r.get("status") != "ok"), None)
    rec = Record(dict(bad if bad is not None else rounds[0]))
    rec.pop("round", None)
    planned = task.settings.planned_rounds
    if bad is not None or not task.settings.timed:
        if bad is None and len(rounds) < planned:
            rec["incomplete"] = True
        return rec
    samples = [list(r["time"]["samples_s"]) for r in rounds]
    summary = summarize(samples)
    disturbed = [f"round {i}: {r['time']['disturbed']}" for i, r in enumerate(rounds)
                 if r["time"].get("disturbed")]
    flat = Timing(times_s=[v for r in samples for v in r])
    first = rounds[0]["time"]
    rec["time"] = {
        "rounds": len(rounds), "median_s": summary.median_s,
        "ci95_s": list(summary.ci95_s), "round_medians_s": list(summary.round_medians_s),
        "log_se": summary.log_se, "df": summary.df,
        "unstable": summary.unstable or bool(disturbed),
        "unstable_reasons": list(summary.why_unstable) + disturbed,
        "retries": [r["time"].get("retries", 0) for r in rounds],
        "foreign_cores": [r["time"].get("foreign_cores") for r in rounds],
        "min_s": flat.min_s, "p10_s": flat.percentile(10), "p90_s": flat.percentile(90),
        "reps": flat.reps, "prepare_s": first["prepare_s"],
        "first_call_s": first["first_call_s"],
        "compile_s": max(0.0, first["first_call_s"] - summary.median_s),
        "cooldown_s": task.settings.cooldown,
        "cooled_s": [r["time"].get("cooled_s") for r in rounds],
        "warmup": task.settings.warmup,
        "warm_s": task.settings.warm_time,
        "batch": [r["time"].get("batch", 1) for r in rounds],
        "samples_by_round_s": samples, "times_s": flat.times_s,
        **{k: v for k, v in first.items() if k in ("clock", "flush_l2")}}
    if len(rounds) < planned:
        rec["time"]["incomplete"] = True
        rec["incomplete"] = True
    p = task.layer.problem
    rec["gflops"] = p.flops / summary.median_s / 1e9 if p is not None else None
    return rec


def _variance_key(rec: Record) -> str:
    return f"{rec.get('kernel')} {rec.get('dir', 'fwd')}"


def pool_variance(variances: RoundVariancePool, rec: Record) -> None:
    """Count an ``ok`` timed record's rounds towards its kernel's pool (see
    :func:`attach_prediction`)."""
    summary = summary_of(rec)
    if summary is not None:
        variances.add(_variance_key(rec), summary)


def attach_prediction(rec: Record, variances: RoundVariancePool) -> None:
    """Add ``time.pi95_s``, where a rerun's median will fall with 95% probability, with
    ``time.pi_df`` and ``time.pi_basis`` (:func:`convbench.measure.stats.prediction_interval`,
    the record's rounds shrunk towards its kernel's pool of this sweep's rounds)."""
    summary = summary_of(rec)
    if summary is None:
        return
    pred = prediction_interval(summary, variances.get(_variance_key(rec)))
    rec["time"].update(pi95_s=list(pred.pi95_s), pi_df=pred.df, pi_basis=pred.basis)


def measure(task: Task, references: ReferenceCache | None = None) -> Record:
    """Every round of one task in this process, combined (tests, ``--no-isolate``)."""
    references = references or ReferenceCache()
    rounds: list[Record] = []
    for r in range(task.settings.planned_rounds):
        rounds.append(measure_round(task, r, references))
        if rounds[-1].get("status") != "ok":
            break
    return combine_rounds(task, rounds)


#: How the reason of a measurement that ran out of memory begins.
OUT_OF_HOST_MEMORY = "out of host memory"
OUT_OF_GPU_MEMORY = "out of GPU memory"


def _error_model(kernel: Any, p: ConvProblem, details: Any) -> ErrorModel:
    """The kernel's error model, or what its prepared call says it really computed."""
    chosen = (details or {}).get("error_model")
    if isinstance(chosen, ErrorModel):
        return chosen
    if isinstance(chosen, dict):
        return ErrorModel(**chosen)
    return kernel.error_model(p)


def is_device_oom(exc: BaseException) -> bool:
    """CuPy's ``OutOfMemoryError``, torch's ``OutOfMemoryError`` and friends."""
    name = type(exc).__name__
    return name == "OutOfMemoryError" or (name == "CUDARuntimeError"
                                           and "memory" in str(exc).lower())


#: Rounds in a row that stayed disturbed after all their retries, in this process.
_busy_streak = 0
#: After this many such rounds the machine is taken to be busy for longer than a retry
#: waits: rounds are timed once (and marked) until one comes out quiet.
BUSY_STREAK_LIMIT = 2


def _time(call: Callable[[], Any], settings: SweepSettings,
          clock: str) -> tuple[Timing, int, str | None]:
    """One round's timing of ``call`` on the kernel's clock, by the sweep's rule.

    A host-clock round during which other processes or the hypervisor took CPU
    time is timed again, after waiting for the machine to go quiet, up to
    ``settings.retries`` times; on a machine that stays busy (see
    :data:`BUSY_STREAK_LIMIT`) retries stop until a round is quiet again, so
    that a busy machine costs marked records rather than hours. Returns the
    timing, the retries it took, and why the timing kept is still disturbed
    (None: it is not). The first call's time is the first attempt's (the one
    that compiled).
    """
    global _busy_streak
    warmup = max(settings.warmup, 3) if settings.backend == "gpu" else settings.warmup
    watched = clock == "host"
    retries = settings.retries if _busy_streak < BUSY_STREAK_LIMIT else 0
    first_call_s = None
    for attempt in range(retries + 1):
        timing = bench(call, clock=make_clock(clock), min_reps=settings.min_reps,
                       min_time=settings.min_time, max_time=settings.max_time, warmup=warmup,
                       cooldown=settings.cooldown, min_sample=MIN_SAMPLE_S,
                       warm_time=settings.warm_time if settings.cooldown > 0 else 0.0,
                       flush_l2=settings.flush_l2, watch=CpuWatch() if watched else None)
        if first_call_s is None:
            first_call_s = timing.first_call_s
        reason = disturbance(timing.window)
        if reason is None or attempt == retries:
            break
        wait_for_quiet()
    _busy_streak = _busy_streak + 1 if reason is not None else 0
    timing.first_call_s = first_call_s
    return timing, attempt, reason


def _release_device_memory() -> None:
    """Return CuPy's pooled device memory between measurements (if CuPy is in use)."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return
    try:
        cupy.get_default_memory_pool().free_all_blocks()
    except Exception:  # noqa: BLE001,S110 -- best effort between problems
        pass


# --------------------------------------------------------------------- worker
def _worker_main(conn: Any, threads: int | None) -> None:
    """Worker loop: receive (task, round), send round records; Ctrl-C is the parent's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    references = ReferenceCache()
    with pinned_threads(threads) as pinned:
        conn.send({"ready": True, "threads": pinned})
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if message is None:
                return
            task, round_index = message
            conn.send(measure_round(task, round_index, references))


class WorkerDied(RuntimeError):
    """The worker process exited (crashed) or exceeded the timeout."""


class Worker:
    """A spawned process that measures rounds one at a time."""

    def __init__(self, threads: int | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, args=(child, threads), daemon=True,
                                 name="convbench-worker")
        self._proc.start()
        child.close()
        hello = self._receive(timeout=300)
        self.threads = hello["threads"]

    def _receive(self, timeout: float | None) -> Any:
        if not self._conn.poll(timeout):
            self.kill()
            raise WorkerDied(f"timed out after {timeout:.0f} s")
        try:
            return self._conn.recv()
        except (EOFError, ConnectionResetError):
            self._proc.join(5)
            code = self._proc.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            raise WorkerDied(f"worker process died ({how})") from None

    def run(self, task: Task, round_index: int, timeout: float | None) -> Record:
        self._conn.send((task, round_index))
        return self._receive(timeout)

    def kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(5)

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(5)
        self.kill()


class WorkerPool:
    """One worker process per round, started when first needed, replaced when it dies."""

    def __init__(self, threads: int | None) -> None:
        self._threads = threads
        self._workers: dict[int, Worker] = {}
        self.threads_info: dict[str, Any] | None = None

    def run(self, task: Task, round_index: int, timeout: float | None) -> Record:
        try:
            worker = self._workers.get(round_index)
            if worker is None:
                worker = self._workers[round_index] = Worker(self._threads)
                self.threads_info = worker.threads
            return worker.run(task, round_index, timeout)
        except WorkerDied as exc:
            self._workers.pop(round_index, None)
            rec = base_record(task)
            rec.update(status="failed", reason=str(exc), round=round_index)
            return rec

    def close(self, kill: bool = False) -> None:
        for worker in self._workers.values():
            worker.kill() if kill else worker.close()
        self._workers.clear()


@dataclass
class SweepOutcome:
    """What a sweep produced."""

    records: list[dict[str, Any]]
    interrupted: bool
    skipped_existing: int
    threads: dict[str, Any] | None


def plan_tasks(layers: Iterable[tuple[str, SuiteLayer]], kernel_names: list[str],
               settings: SweepSettings) -> list[Task]:
    """Every (layer, kernel) in problem-major order (the reference is reused)."""
    return [Task(layer, name, settings, suite) for suite, layer in layers
            for name in kernel_names]


def layer_groups(tasks: list[Task]) -> Iterator[list[Task]]:
    """Consecutive tasks of the same layer (descriptor and suite), in order."""
    group: list[Task] = []
    for task in tasks:
        if group and (task.layer.descriptor, task.suite) != (group[0].layer.descriptor,
                                                              group[0].suite):
            yield group
            group = []
        group.append(task)
    if group:
        yield group


def round_order(tasks: list[Task], seed: int, layer_index: int,
                round_index: int) -> list[Task]:
    """The order a layer's kernels take their turns in one round: shuffled, reproducibly.

    Round 0 keeps the given order only by chance: every round draws its own
    permutation from ``(seed, layer_index, round_index)``.
    """
    order = list(tasks)
    random.Random(f"{seed}:{layer_index}:{round_index}").shuffle(order)
    return order


def run_sweep(tasks: list[Task], settings: SweepSettings, writer: ResultWriter | None, *,
              done: set[tuple[str, str, str, str]] | None = None,
              on_record: Callable[[dict[str, Any]], None] | None = None,
              cluster: Any = None) -> SweepOutcome:
    """Measure ``tasks`` in rounds and write each record as soon as its block is done.

    Layers are taken in blocks of ``settings.round_block``: round 0 of every
    layer of the block (its kernels in a shuffled order), then round 1, and so
    on; then the block's records are written and the next block starts.

    Parameters
    ----------
    tasks : list of Task
    settings : SweepSettings
    writer : ResultWriter or None
        Open writer; every record is flushed before the next block starts.
        ``None`` keeps the records in memory only (``convbench check``).
    done : set, optional
        Keys (problem, dir, backend, kernel) to skip (``--resume``).
    on_record : callable, optional
        Progress callback, called with every new record.
    cluster : convbench.measure.cluster.Cluster, optional
        Measure on this Dask cluster instead, one Dask task per round of a
        task; each record is written here as its last round finishes.

    Returns
    -------
    SweepOutcome
        ``interrupted`` is true when Ctrl-C stopped the sweep.
    """
    done = done or set()
    todo = [t for t in tasks if t.key not in done]
    if cluster is not None:
        records, interrupted = cluster.sweep(todo, writer, on_record)
        return SweepOutcome(records, interrupted, len(tasks) - len(todo), None)
    records: list[Record] = []
    pool = WorkerPool(settings.threads) if settings.isolate else None
    threads_info = None
    interrupted = False
    references = ReferenceCache()
    pinned_ctx = None if settings.isolate else pinned_threads(settings.threads)

    def one_round(task: Task, r: int) -> Record:
        if pool is not None:
            return pool.run(task, r, settings.timeout)
        return measure_round(task, r, references)

    written: set[tuple[str, str, str, str]] = set()

    variances = RoundVariancePool()

    def finish(block: list[list[Task]], rounds: dict[tuple, list[Record]]) -> None:
        combined = [(task.key, combine_rounds(task, rounds[task.key])) for group in block
                    for task in group if rounds.get(task.key) and task.key not in written]
        for _, rec in combined:
            pool_variance(variances, rec)
        for key, rec in combined:
            written.add(key)
            attach_prediction(rec, variances)
            info = (pool.threads_info if pool is not None else threads_info) or {}
            rec["threads"] = info.get("threads")
            rec["numba_threading_layer"] = info.get("numba_threading_layer")
            if writer is not None:
                writer.write(rec)
            records.append(rec)
            if on_record is not None:
                on_record(rec)

    block: list[list[Task]] = []
    rounds: dict[tuple, list[Record]] = {}
    try:
        if pinned_ctx is not None:
            threads_info = pinned_ctx.__enter__()
        groups = list(layer_groups(todo))
        size = settings.round_block or len(groups) or 1
        for first in range(0, len(groups), size):
            block = groups[first:first + size]
            rounds = {t.key: [] for group in block for t in group}
            live = {first + i: list(group) for i, group in enumerate(block)}
            for r in range(settings.planned_rounds):
                for layer_index, tasks_left in live.items():
                    for task in round_order(tasks_left, settings.seed, layer_index, r):
                        rounds[task.key].append(one_round(task, r))
                live = {i: [t for t in left if rounds[t.key][-1].get("status") == "ok"]
                        for i, left in live.items()}
                live = {i: left for i, left in live.items() if left}
                if not live:
                    break
            finish(block, rounds)
    except KeyboardInterrupt:
        interrupted = True
        finish(block, rounds)
    finally:
        if pool is not None:
            pool.close(kill=interrupted)
            threads_info = pool.threads_info
        if pinned_ctx is not None:
            pinned_ctx.__exit__(None, None, None)
    return SweepOutcome(records, interrupted, len(tasks) - len(todo), threads_info)


def settings_dict(settings: SweepSettings) -> dict[str, Any]:
    return asdict(settings)


def existing_keys(records: Iterable[Record]) -> set[tuple[str, str, str, str]]:
    """Keys of finished measurements (``ok`` or ``skipped``, all their rounds); ``failed``
    and ``incomplete`` ones are measured again."""
    return {r.key for r in records
            if r.status in ("ok", "skipped") and not r.get("incomplete")}
