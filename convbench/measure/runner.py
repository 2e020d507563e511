"""The sweep: problems x kernels -> result records, written as they are measured.

Each measurement runs in a worker process (spawned once, reused) so that a
kernel that crashes the interpreter (a segfault in compiled code, an abort
in a library) costs one ``failed`` record, not the sweep: the runner starts a
new worker and goes on. ``isolate=False`` measures in-process instead
(debuggers, profilers). Ctrl-C stops the sweep between or during
measurements; every finished record is already on disk.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from convbench.contract import ErrorModel, as_prepared
from convbench.errors import UnsupportedProblem
from convbench.measure.clocks import make_clock
from convbench.measure.compare import envelope
from convbench.measure.inputs import make_inputs
from convbench.measure.metrics import ReferenceCache, error_metrics
from convbench.measure.threads import pinned_threads
from convbench.measure.timing import Timing, bench
from convbench.problem import ConvProblem
from convbench.problem.arguments import array_module
from convbench.problem.suites import SuiteLayer
from convbench.registry import get_kernel
from convbench.store.jsonl import ResultWriter
from convbench.store.records import Record

MODES = ("perf", "accuracy", "both")


@dataclass(frozen=True)
class SweepSettings:
    """How every measurement of a sweep is taken.

    Attributes
    ----------
    backend : {"cpu", "gpu"}
    mode : {"perf", "accuracy", "both"}
    seed : int
        Seed of the inputs.
    min_reps, min_time, max_time
        :func:`~convbench.measure.timing.bench`'s stopping rule.
    threads : int or None
        Numba, BLAS and torch threads (None: all cores).
    isolate : bool
        Measure in a worker process (a crash costs one record, not the sweep).
    timeout : float or None
        Seconds one measurement may take before it is failed.
    fill : {"random", "exact"}
    flush_l2 : bool
        GPU: evict the L2 cache before every timed run.
    """

    backend: str = "cpu"
    mode: str = "both"
    seed: int = 0
    min_reps: int = 5
    min_time: float = 0.2
    max_time: float = 30.0
    threads: int | None = None
    isolate: bool = True
    timeout: float | None = 600.0
    fill: str = "random"
    flush_l2: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


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
    def key(self) -> tuple[str, str, str]:
        """(descriptor, backend, kernel): the key of the record it produces."""
        return (self.layer.descriptor, self.settings.backend, self.kernel)


def base_record(task: Task) -> Record:
    """The record's fields known before anything is measured."""
    p, s = task.layer.problem, task.settings
    return Record({
        "type": "result", "problem": task.layer.descriptor, "name": task.layer.name,
        "suite": task.suite, "repeat": task.layer.repeat, "kernel": task.kernel,
        "backend": s.backend, "kind": None, "dtype": p.dtype if p else None,
        "mb": p.mb if p else None, "flops": p.flops if p else None, "mode": s.mode,
        "seed": s.seed, "fill": s.fill, "status": None, "reason": None, "gflops": None,
        "time": None, "error": None, "workspace_bytes": None})


def measure(task: Task, references: ReferenceCache | None = None) -> Record:
    """Measure one (problem, kernel): time and/or error. Never raises for kernel faults."""
    rec = base_record(task)
    settings = task.settings
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
    reason = kernel.supports(p)
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
        if settings.mode in ("perf", "both"):
            timing = _time(call, settings, kernel.clock)
            timing.prepare_s = prepare_s
            rec["time"] = timing.summary()
            rec["gflops"] = p.flops / timing.median_s / 1e9
            if settings.backend == "gpu":
                rec["time"]["clock"] = kernel.clock
                rec["time"]["flush_l2"] = settings.flush_l2
        y = call()
        if call.details:
            rec["details"] = dict(call.details)
        if settings.mode in ("accuracy", "both"):
            reference = references.get(p, settings.seed, x, w, b, settings.fill,
                                       array_module(y))
            model = _error_model(kernel, p, call.details)
            limit = envelope(p, reference, model, exact_fill=settings.fill == "exact")
            rec["error"] = error_metrics(y, reference, p.dtype, limit)
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


def _time(call: Callable[[], Any], settings: SweepSettings, clock: str) -> Timing:
    """Timing of ``call`` on the kernel's clock, by the sweep's stopping rule."""
    return bench(call, clock=make_clock(clock), min_reps=settings.min_reps,
                 min_time=settings.min_time, max_time=settings.max_time,
                 warmup=3 if settings.backend == "gpu" else 1, flush_l2=settings.flush_l2)


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
    """Worker loop: receive tasks, send records; Ctrl-C is the parent's business."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    references = ReferenceCache()
    with pinned_threads(threads) as pinned:
        conn.send({"ready": True, "threads": pinned})
        while True:
            try:
                task = conn.recv()
            except EOFError:
                return
            if task is None:
                return
            conn.send(measure(task, references))


class WorkerDied(RuntimeError):
    """The worker process exited (crashed) or exceeded the timeout."""


class Worker:
    """A spawned process that measures tasks one at a time."""

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

    def run(self, task: Task, timeout: float | None) -> Record:
        self._conn.send(task)
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


def run_sweep(tasks: list[Task], settings: SweepSettings, writer: ResultWriter | None, *,
              done: set[tuple[str, str, str]] | None = None,
              on_record: Callable[[dict[str, Any]], None] | None = None,
              cluster: Any = None) -> SweepOutcome:
    """Measure ``tasks`` and write each record as soon as it exists.

    Parameters
    ----------
    tasks : list of Task
    settings : SweepSettings
    writer : ResultWriter or None
        Open writer; every record is flushed before the next task starts.
        ``None`` keeps the records in memory only (``convbench check``).
    done : set, optional
        Keys (problem, backend, kernel) to skip (``--resume``).
    on_record : callable, optional
        Progress callback, called with every new record.
    cluster : convbench.measure.cluster.Cluster, optional
        Measure on this Dask cluster instead, one Dask task per task; the
        records are written here as they finish, in the order they finish.

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
    worker: Worker | None = None
    threads_info = None
    interrupted = False
    references = ReferenceCache()
    pinned_ctx = None if settings.isolate else pinned_threads(settings.threads)
    try:
        if pinned_ctx is not None:
            threads_info = pinned_ctx.__enter__()
        for task in todo:
            if settings.isolate:
                try:
                    if worker is None:
                        worker = Worker(settings.threads)
                        threads_info = worker.threads
                    rec = worker.run(task, settings.timeout)
                except WorkerDied as exc:
                    worker = None
                    rec = base_record(task)
                    rec.update(status="failed", reason=str(exc))
            else:
                rec = measure(task, references)
            rec["threads"] = (threads_info or {}).get("threads")
            rec["numba_threading_layer"] = (threads_info or {}).get("numba_threading_layer")
            if writer is not None:
                writer.write(rec)
            records.append(rec)
            if on_record is not None:
                on_record(rec)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if worker is not None:
            if interrupted:
                worker.kill()
            else:
                worker.close()
        if pinned_ctx is not None:
            pinned_ctx.__exit__(None, None, None)
    return SweepOutcome(records, interrupted, len(tasks) - len(todo), threads_info)


def settings_dict(settings: SweepSettings) -> dict[str, Any]:
    return asdict(settings)


def existing_keys(records: Iterable[Record]) -> set[tuple[str, str, str]]:
    """Keys of finished measurements (``ok`` or ``skipped``; ``failed`` is retried)."""
    return {r.key for r in records if r.status in ("ok", "skipped")}
