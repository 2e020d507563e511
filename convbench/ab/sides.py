"""The controller's end of a worker: a process of :mod:`convbench.ab.worker` over pipes.

A :class:`WorkerProcess` starts ``worker.py TREE`` with the invoking
interpreter, in an environment that fixes its thread counts (and, to count
instructions, its Numba target and BLAS core, under Valgrind), and sends it
JSON-line requests. Both sides of a comparison are two such processes alive
at the same time.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The worker script shipped with this convbench (run as a file, not imported).
WORKER_FILE = Path(__file__).resolve().parent / "worker.py"
#: Seconds a worker may take to import its tree and say it is ready.
START_TIMEOUT_S = 300.0


def process_cpu_ns(pid: int) -> int | None:
    """CPU time of every thread of process ``pid`` (ns, ``/proc``), or None."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        names = os.listdir(tasks)
    except OSError:
        return None
    total = 0
    for tid in names:
        try:
            total += int((tasks / tid / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total


def wait_until_idle(pid: int, limit: float) -> float:
    """Sleep until process ``pid`` uses (almost) no CPU, at most ``limit`` s; seconds slept.

    :func:`convbench.measure.cooldown.cool_down`'s rule (two consecutive idle
    slices) applied to another process: a worker's own cool-down sees only
    its own threads, and the other side's BLAS threads may still spin for
    about 100 ms after its window ended.
    """
    from convbench.measure.cooldown import IDLE_SHARE, IDLE_SLICES, SLICE_S  # noqa: PLC0415

    started = time.perf_counter()
    last = process_cpu_ns(pid)
    idle = 0
    while last is not None and idle < IDLE_SLICES:
        left = limit - (time.perf_counter() - started)
        if left <= 0:
            break
        t0 = time.perf_counter()
        time.sleep(min(SLICE_S, left))
        now = process_cpu_ns(pid)
        if now is None:
            break
        elapsed = time.perf_counter() - t0
        idle = idle + 1 if (now - last) / 1e9 / elapsed < IDLE_SHARE else 0
        last = now
    return time.perf_counter() - started


class WorkerError(RuntimeError):
    """A worker that did not start, died, or answered a request with an error.

    ``label`` says whose: ``"BASE"`` or ``"HEAD"``.
    """

    def __init__(self, message: str, label: str = "") -> None:
        super().__init__(message)
        self.label = label


def thread_environment(threads: int) -> dict[str, str]:
    """The variables that fix every thread pool a kernel may use to ``threads``."""
    n = str(threads)
    return {"NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "MKL_NUM_THREADS": n}


class WorkerProcess:
    """A running worker of one tree.

    Parameters
    ----------
    tree : Path
        The source tree whose convbench the worker imports.
    env : mapping
        Variables added to this process's environment for the worker.
    prefix : sequence of str
        Command words before the interpreter (``valgrind ...`` to count instructions).
    label : str
        What errors call this side (``"BASE"``, ``"HEAD"``).
    wait : bool
        Wait for the worker to say it is ready (else call :meth:`wait_ready`, so
        that several workers import their trees at once).
    """

    def __init__(self, tree: Path, env: Mapping[str, str], prefix: Sequence[str] = (),
                 label: str = "worker", timeout: float = START_TIMEOUT_S,
                 wait: bool = True) -> None:
        self.tree = Path(tree)
        self.label = label
        full_env = {**os.environ, **env}
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, str(WORKER_FILE), str(self.tree)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, env=full_env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()
        self.timeout = timeout
        self.convbench_file = ""
        self.pid = self.proc.pid
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait for the worker's first line; raise :class:`WorkerError` unless it is ready."""
        hello = self._receive(self.timeout)
        if not hello.get("ready"):
            self.close()
            raise WorkerError(f"{self.label} worker for {self.tree} did not start: "
                              f"{hello.get('error', 'no reason given')}", self.label)
        self.convbench_file = hello["convbench_file"]
        self.pid = int(hello["pid"])

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)
            del self._stderr[:-40]  # the last lines say why a worker died

    def _receive(self, timeout: float | None) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise WorkerError(f"{self.label} worker gave no answer in {timeout:.0f} s",
                              self.label) from None
        if line is None:
            self.proc.wait(timeout=10)
            tail = "".join(self._stderr[-15:]).rstrip()
            raise WorkerError(f"{self.label} worker for {self.tree} exited "
                              f"({self.proc.returncode}); its last words:\n{tail}", self.label)
        return json.loads(line)

    def request(self, op: str, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its reply.

        Raises
        ------
        WorkerError
            The worker died, took longer than ``timeout`` seconds, or replied
            with an error (a bug of the harness's, not a kernel's fault: those
            come back as a ``failed`` status).
        """
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the reader reports the exit and the worker's last words
        reply = self._receive(timeout)
        if "error" in reply:
            raise WorkerError(f"{self.label} worker failed on {op}: {reply['error']}\n"
                              f"{reply.get('traceback', '')}", self.label)
        return reply

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        """Ask the worker to exit; kill it if it does not within 30 s."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.kill()
