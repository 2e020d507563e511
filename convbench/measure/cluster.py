"""Sweeps on a Dask cluster: one Dask task per round of a measurement, records streamed
into one file.

``--scheduler tcp://HOST:PORT`` (any address ``distributed`` takes) sends a
sweep's measurements to a running scheduler; ``--scheduler local:N`` starts a
``LocalCluster`` of N worker processes on this machine. Each round of each
:class:`~convbench.measure.runner.Task` is one Dask task that runs
:func:`~convbench.measure.runner.measure_round` and returns the round's
record; a task's next round is sent when its previous one is done, and when
its last is, this process combines them
(:func:`~convbench.measure.runner.combine_rounds`) and writes the record, so
the results file fills as it does without Dask. A layer's kernels take their
turns in the order :func:`~convbench.measure.runner.round_order` shuffles for
each round, as Dask's priorities allow; in a worker that may start processes
round ``r`` runs in that worker's convbench worker process ``r``.

Timing stays honest with **a lock per host**: a round of a sweep that times
(mode ``perf`` or ``both``) holds the ``distributed.Lock`` named after its
worker's host while it runs, so one timing measurement runs on a host at a
time, however many workers the host has. Accuracy-only sweeps take no lock
and use every worker. The host is ``CONVBENCH_HOST`` where set (say,
containers that share one machine under different host names), else the
host name.

On a cluster of several platforms a timed sweep measures all the kernels of
one layer, every round, on one platform, layers dealt to the platforms in
proportion to their hosts, so that every layer's comparison is complete on
the platform that measured it (and ``tune`` finds each layer's plan there).

Each record carries ``host``, ``worker`` and ``fingerprint`` (its round 0's
worker's :func:`~convbench.store.environment.platform_fingerprint`),
``round_hosts`` and ``measured_at`` (per round, the wall-clock start and end
in seconds since the epoch, inside the lock). Tables, reports and ``compare``
keep records of different fingerprints apart.

**A round on a worker measures what it measures without Dask.** Each round
gets the threads the sweep asks for: ``--threads``, else every core the worker
may run on, as a local sweep's round does, however many workers share the host
(some errors depend on the count: the ``rel_l2`` norm is OpenBLAS's ``ddot``,
one partial sum per thread, and it differs in the last digits between one
thread and two). Several workers on one host then run more threads than it
has cores, which costs an accuracy sweep time but not its errors; a timed
sweep measures one round per host at a time anyway.

How the round gets there depends on the worker. Started the way Dask's docs
and dask-jobqueue start one (``dask worker ADDR``, under a nanny), the worker
process is daemonic and its nanny started it with
``distributed.nanny.pre-spawn-environ``: ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` of 1 and
``MALLOC_TRIM_THRESHOLD_=65536``. Before its first round the task takes those
variables out of the environment (where they still have the nanny's values)
and then, for every round:

* pins the thread count in the round's own thread
  (:func:`~convbench.measure.threads.pinned_threads`): Numba by
  ``numba.set_num_threads``, within the pool it was launched with; BLAS and
  OpenMP through threadpoolctl, which raises them past the nanny's 1; torch;
* fixes the C heap's thresholds as a timed local round does
  (:func:`~convbench.measure.allocator.keep_freed_memory`, by ``mallopt``,
  which overrides what glibc read from the nanny's trim threshold), for every
  round, timed or not (records carry ``allocator``, and ``worker_environ``: what
  the nanny had set).

It refuses (:class:`WorkerUnfit`; up front, before the results file gets its
header, and again in every round) where it cannot: a Numba launched with fewer
threads than asked (``NUMBA_NUM_THREADS``), a BLAS threadpoolctl cannot raise,
or a heap variable of the nanny's other than the trim and mmap thresholds
(glibc reads ``MALLOC_ARENA_MAX``, ``GLIBC_TUNABLES`` and the like only when a
process starts). The message gives the command line that starts a worker
which can, for example::

    NUMBA_NUM_THREADS=2 DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON='{"MALLOC_ARENA_MAX": None,
    "MALLOC_TRIM_THRESHOLD_": None, "MKL_NUM_THREADS": None, "OMP_NUM_THREADS": None,
    "OPENBLAS_NUM_THREADS": None}' dask worker tcp://HOST:8786 --nthreads 1

(a variable the nanny would set is left alone where the config gives it
``None``; one already in the shell's environment wins over the config).

A worker process that may start processes (``LocalCluster`` here, ``dask
worker`` with ``DASK_DISTRIBUTED__WORKER__DAEMON=False``, or ``--no-nanny``)
runs each round in a convbench worker process beside it, started without the
nanny's variables, as without Dask: a kernel that crashes costs one ``failed``
record, and ``--timeout`` holds. In a daemonic worker a crash kills that
worker and Dask runs the round again elsewhere, until
``distributed.scheduler.allowed-failures`` is spent, and the record is
``failed`` with Dask's ``KilledWorker``. Either way a round whose worker dies
runs again on another worker and the record is written once. Ctrl-C cancels
what has not finished; every record with a finished round is on disk (those
short of their rounds marked ``incomplete``), and ``--resume`` completes the
rest.

Start workers with ``--nthreads 1`` (one round per worker process at a time
in any case) and, on a shared or multi-homed machine, on loopback or the
cluster's network only::

    dask scheduler --host 127.0.0.1 --port 8786 --dashboard-address 127.0.0.1:0
    dask worker tcp://127.0.0.1:8786 --nthreads 1 --host 127.0.0.1 \\
        --dashboard-address 127.0.0.1:0
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from convbench.errors import MissingExtra
from convbench.measure import runner
from convbench.measure.stats import RoundVariancePool
from convbench.store.records import Record

CLUSTER_HINT = "sweeps on a Dask cluster need dask.distributed: pip install 'convbench[cluster]'"
#: Prefix of the per-host timing locks' names.
TIMING_LOCK = "convbench-timing"
#: Seconds between checks for tasks held to a platform that has no worker left.
STRANDED_CHECK_S = 5.0
#: Variable that names the machine a worker runs on, for its timing lock and its records.
HOST_VARIABLE = "CONVBENCH_HOST"


def require_distributed() -> Any:
    """The ``distributed`` module, or a :class:`MissingExtra` that says how to install it."""
    try:
        import distributed  # noqa: PLC0415 -- optional: the cluster extra
    except ImportError as exc:
        raise MissingExtra(f"{CLUSTER_HINT} ({exc})") from None
    return distributed


def parse_scheduler(text: str) -> tuple[str, str | int]:
    """``"local:N"`` -> ``("local", N)``; ``"tcp://host:port"`` -> ``("address", text)``.

    Raises
    ------
    ValueError
        Anything else (the message shows both forms).
    """
    if text.startswith("local:"):
        count = text.partition(":")[2]
        if count.isdigit() and int(count) >= 1:
            return "local", int(count)
    elif "://" in text and text.partition("://")[2]:
        return "address", text
    raise ValueError(f"--scheduler takes tcp://HOST:PORT (a running dask scheduler) or "
                     f"local:N (N worker processes here), got {text!r}")


def host_name() -> str:
    """The machine a worker runs on: ``CONVBENCH_HOST``, else the host name."""
    return os.environ.get(HOST_VARIABLE) or socket.gethostname()


# ------------------------------------------------------------------ worker side
_ONE_AT_A_TIME = threading.Lock()
_STATE: dict[str, Any] = {}
#: Environment variables of the C heap that glibc reads once, when a process starts.
#: convbench sets the two thresholds again itself (``mallopt``); nothing resets the others.
HEAP_VARIABLES = ("MALLOC_", "GLIBC_TUNABLES")


class WorkerUnfit(RuntimeError):
    """A worker cannot give a round the threads or the C heap that a local sweep's gets."""


def round_on_worker(task: runner.Task, round_index: int) -> Record:
    """One round of one task in a Dask worker: the round record, tagged with host and platform.

    Runs one round per worker process at a time, under the host's timing lock
    when the sweep times, with the threads and the C heap a local sweep's
    round would have (:func:`worker_refusal` says why not, and the round
    raises :class:`WorkerUnfit` with that).
    """
    import distributed  # noqa: PLC0415 -- we run inside a Dask worker

    from convbench.store.environment import platform_fingerprint  # noqa: PLC0415

    host = host_name()
    settings = task.settings
    with _ONE_AT_A_TIME:
        lock = (distributed.Lock(f"{TIMING_LOCK}:{host}") if settings.timed
                else contextlib.nullcontext())
        with lock:
            started = time.time()
            rec = _measure_round(task, round_index)
            rec["measured_at"] = [started, time.time()]
        fingerprints = _STATE.setdefault("fingerprints", {})
        if settings.backend not in fingerprints:
            fingerprints[settings.backend] = platform_fingerprint(settings.backend)
        rec.update(host=host, worker=distributed.get_worker().address,
                   fingerprint=fingerprints[settings.backend])
    return rec


def asked_threads(threads: int | None) -> int:
    """Threads a round gets: the sweep's ``--threads``, else every core this worker may use.

    That is what a local sweep's round gets (Numba's pool size in a process
    started without ``NUMBA_NUM_THREADS``), however many workers share the
    host: some errors depend on it (the ``rel_l2`` norm is OpenBLAS's ``ddot``,
    one partial sum per thread).
    """
    return threads or _cores()


def _measure_round(task: runner.Task, round_index: int) -> Record:
    """:func:`runner.measure_round` in this worker's convbench worker process for the round,
    where it may start one, else here; either way with :func:`asked_threads` threads."""
    settings = task.settings
    count = asked_threads(settings.threads)
    nanny = _prepare_worker()
    if _measures_here():
        from convbench.measure.metrics import ReferenceCache  # noqa: PLC0415
        from convbench.measure.threads import pinned_threads  # noqa: PLC0415

        # Pinned for each round: Numba's thread count belongs to the calling thread,
        # and Dask may run the next task on another thread of its pool.
        with pinned_threads(count) as info:
            _refuse(_heap_shortfall(nanny) + _thread_shortfall(info, count), count, nanny)
            rec = runner.measure_round(task, round_index,
                                       _STATE.setdefault("references", ReferenceCache()))
        rec["allocator"] = _STATE["heap"]
        if nanny:  # this process started with them; convbench set what it measures by again
            rec["worker_environ"] = dict(nanny)
    else:
        pool = _STATE.get("pool")
        if pool is None or _STATE.get("pool_threads") != count:
            if pool is not None:
                pool.close()
            pool = _STATE["pool"] = runner.WorkerPool(count)
            _STATE["pool_threads"] = count
        rec = pool.run(task, round_index, settings.timeout)
        info = pool.threads_info or {}
        _refuse(_thread_shortfall(info, count), count, nanny)
    rec["threads"] = info.get("threads")
    rec["numba_threading_layer"] = info.get("numba_threading_layer")
    rec["blas_threads"] = [pool.get("num_threads") for pool in info.get("blas") or []
                           if pool.get("internal_api") != "openmp"]
    return rec


def _measures_here() -> bool:
    """Whether rounds run in this worker process itself (a daemonic one may start none)."""
    return multiprocessing.current_process().daemon


def _prepare_worker() -> dict[str, str]:
    """Take out what the nanny set (once); where rounds run here, fix the C heap as
    convbench's timed rounds do. Returns the nanny's variables taken out."""
    if "nanny_environ" not in _STATE:
        from convbench.measure.allocator import keep_freed_memory  # noqa: PLC0415

        _STATE["nanny_environ"] = _forget_nanny_environ()
        # After the nanny's trim threshold left os.environ: it is no user's choice, and
        # mallopt overrides what glibc read from it when the process started.
        _STATE["heap"] = keep_freed_memory() if _measures_here() else None
    return _STATE["nanny_environ"]


def _forget_nanny_environ() -> dict[str, str]:
    """Take out of this worker's environment what a Dask nanny put there for it.

    A nanny starts its worker with ``distributed.nanny.pre-spawn-environ``:
    single-threaded OpenMP, MKL and OpenBLAS and an eager trim of the C heap,
    which would change what convbench measures (its thread counts and the
    heap it fixes). A variable is taken out only where it still has the
    nanny's value; the convbench worker processes started after that run as
    they would without Dask. Returns what was taken out.
    """
    import dask  # noqa: PLC0415 -- we run inside a Dask worker

    removed = {}
    for var, value in (dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}).items():
        if value is not None and os.environ.get(var) == str(value):
            removed[var] = os.environ.pop(var)
    return removed


def _heap_shortfall(nanny: dict[str, str]) -> list[str]:
    """Why this process's C heap is not a local sweep's: the nanny's start-only variables."""
    from convbench.measure.allocator import USER_VARIABLES  # noqa: PLC0415

    return [f"its nanny started it with {var}={value}, which glibc reads only when a "
            f"process starts" for var, value in sorted(nanny.items())
            if var.startswith(HEAP_VARIABLES) and var not in USER_VARIABLES]


def _thread_shortfall(info: dict[str, Any], count: int) -> list[str]:
    """Why the pools :func:`~convbench.measure.threads.pinned_threads` pinned (``info``) run
    fewer threads than a local sweep's process would with ``count``.

    Numba cannot grow past the pool it was launched with (``NUMBA_NUM_THREADS``);
    a local process started without that variable gets ``min(count, cores)``.
    """
    reasons = []
    numba = info.get("numba_threads")
    if numba is not None and numba < min(count, _cores()):
        reasons.append(f"its Numba was launched with {numba} thread(s) (NUMBA_NUM_THREADS) "
                       f"and cannot run the {min(count, _cores())} asked for")
    reasons += [f"its {pool.get('internal_api')} {pool.get('version')} runs "
                f"{pool.get('num_threads')} thread(s), not the {count} asked for"
                for pool in info.get("blas") or []
                if (pool.get("num_threads") or count) < count]
    return reasons


def _refuse(reasons: list[str], count: int, nanny: dict[str, str]) -> None:
    """Raise :class:`WorkerUnfit` where there are reasons (:func:`_refusal`); in a task."""
    import distributed  # noqa: PLC0415 -- we run inside a Dask worker

    message = _refusal(reasons, count, nanny, distributed.get_worker()) if reasons else None
    if message is not None:
        raise WorkerUnfit(message)


def _refusal(reasons: list[str], count: int, nanny: dict[str, str],
             worker: Any) -> str | None:
    """:func:`refusal_message` for ``worker`` (this process's), or None without reasons."""
    if not reasons:
        return None
    return refusal_message(reasons, worker=worker.address, scheduler=worker.scheduler.address,
                           nthreads=worker.state.nthreads, count=count, nanny=nanny,
                           has_nanny=worker.nanny is not None)


def refusal_message(reasons: list[str], *, worker: str, scheduler: str, nthreads: int,
                    count: int, nanny: dict[str, str], has_nanny: bool = True) -> str:
    """Why ``worker`` cannot measure what a local sweep measures, and how to start it so it can.

    Parameters
    ----------
    reasons : list of str
        From :func:`_thread_shortfall` and :func:`_heap_shortfall`.
    worker, scheduler : str
        Addresses.
    nthreads : int
        The worker's Dask threads (kept in the command line).
    count : int
        Threads the sweep asks for.
    nanny : dict
        The variables the worker's nanny set; the command line unsets them all.
    has_nanny : bool
        Whether the worker runs under a nanny (else the command says ``--no-nanny``).
    """
    env = []
    if any("NUMBA_NUM_THREADS" in reason for reason in reasons):  # _thread_shortfall's words
        env.append(f"NUMBA_NUM_THREADS={count}")
    if nanny:
        unset = ", ".join(f'"{var}": None' for var in sorted(nanny))
        env.append(f"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON='{{{unset}}}'")
    command = " ".join([*env, "dask worker", scheduler, "--nthreads", str(nthreads),
                        *([] if has_nanny else ["--no-nanny"])])
    return (f"worker {worker} cannot measure what a local sweep measures: "
            f"{'; '.join(reasons)}. Start it as\n    {command}")


def worker_refusal(threads: int | None, dask_worker: Any = None) -> str | None:
    """Whether this worker gives a round what a local sweep's gets (``Client.run``): None,
    else :func:`refusal_message`.

    Takes out the nanny's variables and fixes the heap as a round would; where
    rounds run here, pins ``threads`` for a moment to see what BLAS and Numba
    give. Where they run in convbench worker processes, those start afresh
    from this environment: only ``NUMBA_NUM_THREADS`` can hold them back.
    ``Client.run`` passes ``dask_worker``.
    """
    from convbench.measure.threads import pinned_threads  # noqa: PLC0415

    count = asked_threads(threads)
    nanny = _prepare_worker()
    if _measures_here():
        with pinned_threads(count) as info:
            reasons = _heap_shortfall(nanny) + _thread_shortfall(info, count)
    else:
        launched = int(os.environ.get("NUMBA_NUM_THREADS") or _cores())
        reasons = _thread_shortfall({"numba_threads": min(count, launched)}, count)
    return _refusal(reasons, count, nanny, dask_worker)


def platform_id(backend: str) -> str:
    """This worker's platform fingerprint id for ``backend`` (``Client.run``)."""
    from convbench.store.environment import platform_fingerprint  # noqa: PLC0415

    return platform_fingerprint(backend)["id"]


def describe_worker(backend: str) -> dict[str, Any]:
    """What a worker says about itself for a run's header (``Client.run``)."""
    from convbench.store.environment import cpu_model  # noqa: PLC0415

    return {"host": host_name(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "fingerprint": platform_id(backend),
            "daemon": multiprocessing.current_process().daemon}


# ------------------------------------------------------------------ client side
@dataclass
class Cluster:
    """A connected Dask client.

    Attributes
    ----------
    client : distributed.Client
    address : str
        The scheduler's address (``local:N`` clusters say so too).
    """

    client: Any
    address: str
    #: Task index -> the workers a timed sweep holds it to (see :meth:`_place`).
    _held_to: dict[int, list[str]] = field(default_factory=dict, repr=False)

    def workers(self, backend: str = "cpu") -> dict[str, Any]:
        """Each worker's host, CPU and platform fingerprint id (for the run's header)."""
        return self.client.run(describe_worker, backend)

    def refuse_unfit_workers(self, threads: int | None) -> None:
        """Raise where a worker cannot give rounds of ``threads`` threads (None: all its
        cores) what a local sweep's rounds get (:func:`worker_refusal`).

        Raises
        ------
        ValueError
            Each such worker's reason and the ``dask worker`` command line that
            starts one that can.
        """
        refusals = [message for _, message in sorted(
            self.client.run(worker_refusal, threads).items()) if message]
        if refusals:
            raise ValueError("\n".join(refusals))

    def sweep(self, todo: list[runner.Task], writer: Any,
              on_record: Callable[[Record], None] | None = None) -> tuple[list[Record], bool]:
        """Measure ``todo``, one Dask task per round; write each record as its last round
        finishes.

        Returns
        -------
        (records, interrupted)
            Records in the order they finished; ``interrupted`` after Ctrl-C
            (the tasks with some rounds done are written, ``incomplete``).
        """
        distributed = require_distributed()
        sweep_id = uuid.uuid4().hex[:8]
        if todo:
            self.refuse_unfit_workers(todo[0].settings.threads)
        self._place(todo)
        pending: dict[str, tuple[Any, int, int]] = {}
        rounds: dict[int, list[Record]] = {i: [] for i in range(len(todo))}
        priority = _priorities(todo)
        guard = threading.Lock()

        def submit(i: int, r: int, workers: list[str] | None, attempt: str = "") -> Any:
            future = self.client.submit(round_on_worker, todo[i], r, pure=False,
                                        key=f"convbench-{sweep_id}-{i}-{r}{attempt}",
                                        priority=priority[i, r], workers=workers)
            pending[future.key] = (future, i, r)
            return future

        records: list[Record] = []
        # Each record's rerun interval borrows from the records of its kernel written
        # before it (the pool grows as the sweep goes; see runner.attach_prediction).
        variances = RoundVariancePool()

        def finish(i: int) -> None:
            rec = _combine(todo[i], rounds.pop(i))
            runner.pool_variance(variances, rec)
            runner.attach_prediction(rec, variances)
            if writer is not None:
                writer.write(rec)
            records.append(rec)
            if on_record is not None:
                on_record(rec)

        with guard:
            finished = distributed.as_completed([submit(i, 0, self._held_to.get(i))
                                                 for i in range(len(todo))])
        stop = threading.Event()
        watcher = threading.Thread(target=self._rescue_stranded, daemon=True,
                                   args=(pending, guard, finished, submit, stop))
        watcher.start()
        try:
            for future in finished:
                with guard:
                    entry = pending.get(future.key)
                if entry is None or future.cancelled():
                    continue  # resubmitted elsewhere (its platform left)
                _, i, r = entry
                # The entry stays pending while its result is gathered: should the worker
                # holding it die first, Dask computes the round again, and a round held to
                # a platform with no worker left waits until the watcher sends it elsewhere.
                rec = _result(future, todo[i], r)
                with guard:
                    if pending.pop(future.key, None) is None:
                        continue  # the watcher resubmitted it while we waited
                rounds[i].append(rec)
                if rec.get("status") == "ok" and r + 1 < todo[i].settings.planned_rounds:
                    with guard:
                        finished.add(submit(i, r + 1, self._held_to.get(i)))
                else:
                    finish(i)
        except KeyboardInterrupt:
            with guard:
                self.client.cancel([f for f, _, _ in pending.values()])
            for i in [i for i, done in rounds.items() if done]:
                finish(i)
            return records, True
        finally:
            stop.set()
        return records, False

    def _rescue_stranded(self, pending: dict, guard: threading.Lock, finished: Any,
                         submit: Callable[..., Any], stop: threading.Event) -> None:
        """Resubmit, to any worker, the tasks held to a platform whose every worker left
        (strict placement would leave them waiting for ever)."""
        while not stop.wait(STRANDED_CHECK_S):
            try:
                live = set(self.client.scheduler_info(n_workers=-1)["workers"])
            except Exception:  # noqa: BLE001 -- the client is closing: nothing to rescue
                return
            with guard:
                stranded = [(key, future, i, r) for key, (future, i, r) in pending.items()
                            if self._held_to.get(i) and not live & set(self._held_to[i])]
                for key, future, i, r in stranded:
                    del pending[key]
                    del self._held_to[i]  # its later rounds go anywhere too
                    self.client.cancel([future])
                    finished.add(submit(i, r, None, "-anywhere"))

    def platform_workers(self, backend: str) -> dict[str, list[str]]:
        """The live workers of each platform (fingerprint id -> addresses)."""
        out: dict[str, list[str]] = {}
        for address, fid in self.client.run(platform_id, backend).items():
            out.setdefault(fid, []).append(address)
        return out

    def _place(self, todo: list[runner.Task]) -> None:
        """Hold each timed task (every round of it) to the workers of one platform, where the
        cluster has several (:attr:`_held_to`).

        A time is compared only with times of its own platform, so a timed
        sweep measures all the kernels of one layer on one platform: layers
        are dealt to the platforms in turn, each platform getting a share in
        proportion to its hosts. Should every worker of a platform leave, its
        tasks are sent anywhere (:meth:`_rescue_stranded`). Accuracy sweeps,
        and clusters of one platform, go anywhere.
        """
        self._held_to = {}
        timed = [i for i, t in enumerate(todo) if t.settings.timed]
        if not timed:
            return
        platforms = self.platform_workers(todo[timed[0]].settings.backend)
        if len(platforms) < 2:
            return
        hosts = self.client.run(host_name)
        slots = [fid for fid, addresses in sorted(platforms.items())
                 for _ in sorted({hosts[a] for a in addresses})]
        layers: dict[str, int] = {}
        for i in timed:
            slot = layers.setdefault(todo[i].layer.descriptor, len(layers))
            self._held_to[i] = platforms[slots[slot % len(slots)]]


def _result(future: Any, task: runner.Task, round_index: int) -> Record:
    """The round record a finished future holds, or a ``failed`` one saying what Dask
    reported."""
    try:
        return Record(future.result())
    except Exception as exc:  # noqa: BLE001 -- KilledWorker, a lost scheduler...: a record
        rec = runner.base_record(task)
        rec.update(status="failed", reason=f"{type(exc).__name__}: {exc}", round=round_index)
        return rec


def _priorities(todo: list[runner.Task]) -> dict[tuple[int, int], int]:
    """Dask priority of each (task, round): earlier layers first, a layer's rounds in
    turn, and within a round its kernels in :func:`runner.round_order`'s shuffled order."""
    out = {}
    start = 0
    for layer_index, group in enumerate(runner.layer_groups(todo)):
        index = {id(t): start + k for k, t in enumerate(group)}
        rounds = group[0].settings.planned_rounds
        for r in range(rounds):
            order = runner.round_order(group, group[0].settings.seed, layer_index, r)
            for position, task in enumerate(order):
                rank = (layer_index * rounds + r) * len(group) + position
                out[index[id(task)], r] = -rank
        start += len(group)
    return out


def _combine(task: runner.Task, rounds: list[Record]) -> Record:
    """:func:`runner.combine_rounds`, with where the rounds ran: ``host``, ``worker`` and
    ``fingerprint`` of round 0, ``round_hosts`` and ``measured_at`` of each. Rounds that
    ran on several platforms (a platform's workers left mid-record) make the record's
    time unstable, with that reason."""
    rec = runner.combine_rounds(task, rounds)
    for key in ("host", "worker", "fingerprint"):
        if rounds and key in rounds[0]:
            rec[key] = rounds[0][key]
    rec["round_hosts"] = [r.get("host") for r in rounds]
    rec["measured_at"] = [r["measured_at"] for r in rounds if "measured_at" in r]
    ids = {(r.get("fingerprint") or {}).get("id") for r in rounds if r.get("fingerprint")}
    if len(ids) > 1 and isinstance(rec.get("time"), dict) and "unstable" in rec["time"]:
        rec["time"]["unstable"] = True
        rec["time"]["unstable_reasons"] = [*rec["time"].get("unstable_reasons", []),
                                           f"its rounds ran on {len(ids)} platforms"]
    return rec


@contextlib.contextmanager
def connect(scheduler: str) -> Iterator[Cluster]:
    """A :class:`Cluster` for ``--scheduler`` (started here for ``local:N``), closed after.

    Raises
    ------
    MissingExtra
        dask.distributed is not installed.
    ValueError
        A bad ``--scheduler`` value, or a scheduler that does not answer.
    """
    kind, where = parse_scheduler(scheduler)
    distributed = require_distributed()
    import dask  # noqa: PLC0415 -- installed with distributed

    with contextlib.ExitStack() as stack:
        if kind == "local":
            # Non-daemonic workers may start convbench's worker processes (crash isolation);
            # no single-threaded BLAS or eager heap trim in their environment.
            stack.enter_context(dask.config.set({"distributed.worker.daemon": False,
                                                 "distributed.nanny.pre-spawn-environ": {}}))
            local = stack.enter_context(distributed.LocalCluster(
                n_workers=int(where), threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None))
            client = stack.enter_context(distributed.Client(local))
            yield Cluster(client, f"local:{where} ({local.scheduler_address})")
            return
        try:
            client = stack.enter_context(distributed.Client(where, timeout="30s"))
        except OSError as exc:
            raise ValueError(f"no dask scheduler answers at {where}: {exc}") from None
        yield Cluster(client, str(where))


def _cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
