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
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from convbench.accuracy import ReferenceCache, error_metrics, make_inputs
from convbench.errors import UnsupportedProblem
from convbench.problem import ConvProblem
from convbench.registry import get_kernel
from convbench.results import ResultWriter, record_key
from convbench.suites import SuiteLayer
from convbench.timing import pinned_threads, time_call

MODES = ("perf", "accuracy", "both")


@dataclass(frozen=True)
class Task:
    """One measurement, as sent to a worker (plain data, picklable)."""

    problem: str
    name: str
    suite: str
    repeat: int
    kernel: str
    backend: str
    mode: str
    seed: int
    min_reps: int
    min_time: float
    max_time: float
    fill: str = "random"
    flush_l2: bool = False


@dataclass(frozen=True)
class SweepSettings:
    """How every measurement of a sweep is taken."""

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


def base_record(task: Task) -> dict[str, Any]:
    p = ConvProblem.parse(task.problem)
    return {"type": "result", "problem": task.problem, "name": task.name, "suite": task.suite,
            "repeat": task.repeat, "kernel": task.kernel, "backend": task.backend,
            "kind": None, "dtype": p.dtype, "mb": p.mb, "flops": p.flops, "mode": task.mode,
            "seed": task.seed, "fill": task.fill, "status": None, "reason": None,
            "gflops": None, "time": None, "error": None, "workspace_bytes": None}


def measure(task: Task, references: ReferenceCache | None = None) -> dict[str, Any]:
    """Measure one (problem, kernel): time and/or error. Never raises for kernel faults."""
    rec = base_record(task)
    references = references or ReferenceCache()
    try:
        kernel = get_kernel(task.kernel, task.backend)
    except ValueError as exc:
        rec.update(status="failed", reason=str(exc))
        return rec
    p = ConvProblem.parse(task.problem)
    rec["kind"] = kernel.kind
    reason = kernel.supports(p)
    if reason is not None:
        rec.update(status="skipped", reason=reason)
        return rec
    try:
        rec["workspace_bytes"] = int(kernel.workspace_bytes(p))
        if hasattr(kernel, "math_mode"):
            rec["math_mode"] = kernel.math_mode(p)
        # Inputs are made on the host; GPU kernels copy them in prepare (untimed).
        x, w, b = make_inputs(p, task.seed, task.fill)
        t0 = time.perf_counter()
        fn = kernel.prepare(p, x, w, b)
        prepare_s = time.perf_counter() - t0
        if task.mode in ("perf", "both"):
            timing, clock = _time(fn, task, kernel)
            timing.prepare_s = prepare_s
            rec["time"] = timing.summary()
            rec["gflops"] = p.flops / timing.median_s / 1e9
            if clock is not None:
                rec["time"]["clock"] = clock
                rec["time"]["flush_l2"] = task.flush_l2
        y = fn()
        details = getattr(fn, "details", None)
        if details is not None:
            rec["details"] = details
        if task.mode in ("accuracy", "both"):
            ref, scale = references.get(p, task.seed, x, w, b, task.fill)
            rec["error"] = error_metrics(y, ref, scale, p.dtype)
        rec["status"] = "ok"
    except UnsupportedProblem as exc:
        rec.update(status="skipped", reason=str(exc))
    except MemoryError:
        rec.update(status="skipped", reason="out of memory")
    except Exception as exc:  # noqa: BLE001 -- a faulty kernel is a result, not a crash
        if is_device_oom(exc):
            rec.update(status="skipped", reason=f"out of GPU memory: {exc}")
        else:
            tb = traceback.format_exc(limit=-3)
            rec.update(status="failed", reason=f"{type(exc).__name__}: {exc}", traceback=tb)
    finally:
        if task.backend == "gpu":
            _release_device_memory()
    return rec


def is_device_oom(exc: BaseException) -> bool:
    """CuPy's ``OutOfMemoryError``, torch's ``OutOfMemoryError`` and friends."""
    name = type(exc).__name__
    return name == "OutOfMemoryError" or (name == "CUDARuntimeError"
                                           and "memory" in str(exc).lower())


def _time(fn: Callable[[], Any], task: Task, kernel: Any) -> tuple[Any, str | None]:
    """Timing of ``fn`` and the device clock's name (``None``: the CPU's timer)."""
    if task.backend != "gpu":
        return time_call(fn, min_reps=task.min_reps, min_time=task.min_time,
                         max_time=task.max_time), None
    from convbench.gpu_timing import CudaEventClock, time_device_call  # noqa: PLC0415

    # A GPU kernel times on its runtime's clock (CUDA events; the host clock on the
    # emulator); baselines without a runtime run on CuPy's current stream.
    runtime = getattr(kernel, "runtime", None)
    clock = runtime.clock() if hasattr(runtime, "clock") else CudaEventClock()
    timing = time_device_call(fn, clock, min_reps=task.min_reps, min_time=task.min_time,
                              max_time=task.max_time, flush_l2=task.flush_l2)
    return timing, clock.name


def _release_device_memory() -> None:
    try:
        from kernels.gpu.runtime import release_memory  # noqa: PLC0415

        release_memory()
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

    def run(self, task: Task, timeout: float | None) -> dict[str, Any]:
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


def plan_tasks(layers: Iterable[SuiteLayer], kernel_names: list[str], suite: str,
               settings: SweepSettings) -> list[Task]:
    """Every (layer, kernel) in problem-major order (the reference is reused)."""
    return [Task(str(layer.problem), layer.problem.name, suite, layer.repeat, name,
                 settings.backend, settings.mode, settings.seed, settings.min_reps,
                 settings.min_time, settings.max_time, settings.fill, settings.flush_l2)
            for layer in layers for name in kernel_names]


def run_sweep(tasks: list[Task], settings: SweepSettings, writer: ResultWriter | None, *,
              done: set[tuple[str, str, str]] | None = None,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> SweepOutcome:
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

    Returns
    -------
    SweepOutcome
        ``interrupted`` is true when Ctrl-C stopped the sweep.
    """
    done = done or set()
    todo = [t for t in tasks if (t.problem, t.backend, t.kernel) not in done]
    records: list[dict[str, Any]] = []
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


def existing_keys(records: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Keys of finished measurements (``ok`` or ``skipped``; ``failed`` is retried)."""
    return {record_key(r) for r in records if r.get("status") in ("ok", "skipped")}
