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

In a worker process that may start processes (``LocalCluster`` here, or
``dask worker`` with ``DASK_DISTRIBUTED__WORKER__DAEMON=False``) each round
runs in a convbench worker process beside it, as without Dask: a kernel that
crashes costs one ``failed`` record, and ``--timeout`` holds. In a daemonic
worker process it runs in the worker itself (the rounds then share it); a
crash then kills that worker and Dask runs the round again elsewhere, until
``distributed.scheduler.allowed-failures`` is spent, and the record is
``failed`` with Dask's ``KilledWorker``; its BLAS also keeps the single thread a
Dask nanny's ``pre-spawn-environ`` gives it (the record's ``worker_environ``
says so), so start such workers with ``--no-nanny``. The convbench worker
processes start without what the nanny set. Either way a round whose worker dies
runs again on another worker and the record is written once. Ctrl-C cancels
what has not finished; every record with a finished round is on disk (those
short of their rounds marked ``incomplete``), and ``--resume`` completes the
rest.
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
from dataclasses import dataclass, field, replace
from typing import Any

from convbench.errors import MissingExtra
from convbench.measure import runner
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


def round_on_worker(task: runner.Task, round_index: int,
                    threads_by_host: dict[str, int]) -> Record:
    """One round of one task in a Dask worker: the round record, tagged with host and platform.

    Runs one round per worker process at a time, under the host's timing lock
    when the sweep times. An accuracy sweep without a thread count takes this
    host's from ``threads_by_host``.
    """
    import distributed  # noqa: PLC0415 -- we run inside a Dask worker

    from convbench.store.environment import platform_fingerprint  # noqa: PLC0415

    host = host_name()
    settings = task.settings
    if "nanny_environ" not in _STATE:
        _STATE["nanny_environ"] = _forget_nanny_environ()
    if settings.threads is None and not settings.timed and host in threads_by_host:
        task = replace(task, settings=replace(settings, threads=threads_by_host[host]))
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


def _measure_round(task: runner.Task, round_index: int) -> Record:
    """:func:`runner.measure_round` in this worker's convbench worker process for the round,
    where it may start one, else here."""
    settings = task.settings
    isolated = settings.isolate and not multiprocessing.current_process().daemon
    if isolated:
        pool = _STATE.get("pool")
        if pool is None or _STATE.get("pool_threads") != settings.threads:
            if pool is not None:
                pool.close()
            pool = _STATE["pool"] = runner.WorkerPool(settings.threads)
            _STATE["pool_threads"] = settings.threads
        rec = pool.run(task, round_index, settings.timeout)
        info = pool.threads_info
    else:
        from convbench.measure.metrics import ReferenceCache  # noqa: PLC0415
        from convbench.measure.threads import pinned_threads  # noqa: PLC0415

        if _STATE.get("pinned_for", -1) != settings.threads:
            if "pinned" in _STATE:
                _STATE.pop("pinned").__exit__(None, None, None)
            context = pinned_threads(settings.threads)
            _STATE["pinned_info"] = context.__enter__()
            _STATE["pinned"], _STATE["pinned_for"] = context, settings.threads
        rec = runner.measure_round(task, round_index,
                                   _STATE.setdefault("references", ReferenceCache()))
        info = _STATE["pinned_info"]
    rec["threads"] = (info or {}).get("threads")
    rec["numba_threading_layer"] = (info or {}).get("numba_threading_layer")
    rec["blas_threads"] = [pool.get("num_threads") for pool in (info or {}).get("blas") or []
                           if pool.get("internal_api") != "openmp"]
    if not isolated and _STATE.get("nanny_environ"):
        # This worker started with them, and its own BLAS keeps what they set.
        rec["worker_environ"] = dict(_STATE["nanny_environ"])
    return rec


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
        if os.environ.get(var) == str(value):
            removed[var] = os.environ.pop(var)
    return removed


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
    """A connected Dask client and how to split a host's cores among its workers.

    Attributes
    ----------
    client : distributed.Client
    address : str
        The scheduler's address (``local:N`` clusters say so too).
    threads_by_host : dict of str to int
        Threads each measurement of an accuracy sweep gets on a host where
        the command line sets none: the host's cores over its workers.
        Timing sweeps use all cores (one measurement per host at a time).
    """

    client: Any
    address: str
    threads_by_host: dict[str, int] = field(default_factory=dict)
    #: Task index -> the workers a timed sweep holds it to (see :meth:`_place`).
    _held_to: dict[int, list[str]] = field(default_factory=dict, repr=False)

    def workers(self, backend: str = "cpu") -> dict[str, Any]:
        """Each worker's host, CPU and platform fingerprint id (for the run's header)."""
        return self.client.run(describe_worker, backend)

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
        self._place(todo)
        pending: dict[str, tuple[Any, int, int]] = {}
        rounds: dict[int, list[Record]] = {i: [] for i in range(len(todo))}
        priority = _priorities(todo)
        guard = threading.Lock()

        def submit(i: int, r: int, workers: list[str] | None, attempt: str = "") -> Any:
            future = self.client.submit(round_on_worker, todo[i], r, self.threads_by_host,
                                        pure=False, key=f"convbench-{sweep_id}-{i}-{r}{attempt}",
                                        priority=priority[i, r], workers=workers)
            pending[future.key] = (future, i, r)
            return future

        records: list[Record] = []

        def finish(i: int) -> None:
            rec = _combine(todo[i], rounds.pop(i))
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
            yield Cluster(client, f"local:{where} ({local.scheduler_address})",
                          {host_name(): max(1, _cores() // int(where))})
            return
        try:
            client = stack.enter_context(distributed.Client(where, timeout="30s"))
        except OSError as exc:
            raise ValueError(f"no dask scheduler answers at {where}: {exc}") from None
        yield Cluster(client, str(where), _threads_by_host(client))


def _cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1


def _host_and_cores() -> tuple[str, int]:
    return host_name(), _cores()


def _threads_by_host(client: Any) -> dict[str, int]:
    """Per host, its cores over its workers (at least 1)."""
    per_host: dict[str, list[int]] = {}
    for host, cores in client.run(_host_and_cores).values():
        per_host.setdefault(host, []).append(cores)
    return {host: max(1, min(cores) // len(cores)) for host, cores in per_host.items()}
