"""Tuning: measure every kernel on every layer, then choose per layer within the budget.

:func:`tune` runs the layers x kernels through a sweep (by default
:func:`convbench.measure.runner.run_sweep`, which measures each pair in a
worker process, time and error, and writes each record as it is made),
then turns each layer's records into a
:class:`~convbench.plans.choice.Choice`. Where other admissible kernels
came within :data:`RUNOFF_MARGIN` of the choice, :func:`runoff` times them
again, interleaved in this process (as ``benchmarks/plans_vs_onednn.py``
and a network's layers run them), and the fastest there is chosen.
:func:`save_plans` merges the choices into a plan cache under this
platform's fingerprint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from convbench.measure.runner import SweepSettings, plan_tasks, run_sweep
from convbench.plans import cache
from convbench.plans.choice import (
    BudgetNotMet,
    Candidate,
    Choice,
    check_budget,
    choose,
    contenders,
    settle,
)
from convbench.problem.suites import SuiteLayer
from convbench.store.records import Record, as_record, by_platform


@dataclass
class LayerPlan:
    """One layer's outcome: the choice, or why there is none.

    Attributes
    ----------
    suite : str
    layer : SuiteLayer
    choice : Choice or None
    failure : str or None
        The budget no kernel met (the message names the closest), or why the
        layer could not run at all.
    platform : str or None
        The fingerprint id of the platform the records were measured on, where
        they say (a Dask sweep's); None: this one.
    """

    suite: str
    layer: SuiteLayer
    choice: Choice | None = None
    failure: str | None = None
    platform: str | None = None


@dataclass
class TuneOutcome:
    """What :func:`tune` measured and chose (``fingerprints``: each platform id the
    records name, a Dask sweep's, with its fingerprint)."""

    plans: list[LayerPlan]
    records: list[Record] = field(default_factory=list)
    interrupted: bool = False
    threads: dict[str, Any] | None = None
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def chosen(self) -> list[LayerPlan]:
        return [lp for lp in self.plans if lp.choice is not None]

    @property
    def failed(self) -> list[LayerPlan]:
        return [lp for lp in self.plans if lp.choice is None]


def choose_per_layer(layers: Iterable[tuple[str, SuiteLayer]], records: Iterable[dict],
                     *, budget: float, metric: str = "rel_l2",
                     allow_vendor: bool = False) -> list[LayerPlan]:
    """Each layer's choice among its records (the last record per kernel counts).

    A layer with no records (an interrupted sweep) is left out; one whose
    problem convbench cannot model, or whose budget no kernel meets, gets a
    :attr:`LayerPlan.failure`.
    """
    check_budget(budget, metric)
    by_problem: dict[str, dict[str, Record]] = {}
    for rec in map(as_record, records):
        by_problem.setdefault(rec["problem"], {})[rec.kernel] = rec
    out = []
    for suite, layer in layers:
        recs = by_problem.get(layer.descriptor)
        if not recs:
            continue
        if layer.problem is None:
            out.append(LayerPlan(suite, layer, failure=layer.unsupported))
            continue
        candidates = [c for r in recs.values() if (c := Candidate.from_record(r)) is not None]
        try:
            choice = choose(candidates, budget=budget, metric=metric, allow_vendor=allow_vendor,
                            problem=layer.descriptor)
        except BudgetNotMet as exc:
            out.append(LayerPlan(suite, layer, failure=str(exc)))
        else:
            out.append(LayerPlan(suite, layer, choice))
    return out


Sweep = Callable[..., Any]
Compare = Callable[..., Any]

#: Admissible kernels at most this much slower than the choice in the sweep are run off.
RUNOFF_MARGIN = 0.25
#: Interleaved rounds of a runoff (0: none).
RUNOFF_ROUNDS = 5


def runoff(plans: list[LayerPlan], settings: SweepSettings, *, rounds: int = RUNOFF_ROUNDS,
           margin: float = RUNOFF_MARGIN, compare: Compare | None = None,
           cluster: Any = None) -> bool:
    """Settle each close choice by timing its contenders again, interleaved in one process.

    Parameters
    ----------
    plans : list of LayerPlan
        Their ``choice`` is replaced (see :func:`~convbench.plans.choice.settle`).
    settings : SweepSettings
        Backend and threads of the runoff.
    rounds : int
        Interleaved rounds per layer (the median over rounds decides).
    margin : float
        Contenders are the admissible kernels at most ``1 + margin`` times
        the choice's sweep time.
    compare : callable, optional
        :func:`convbench.measure.peers.compare_layer` (the default) or a
        stand-in with its signature.
    cluster : convbench.measure.cluster.Cluster, optional
        Run each layer's runoff as one Dask task on a worker of the layer's
        platform (:attr:`LayerPlan.platform`), under its host's timing lock.

    Returns
    -------
    bool
        Whether it was interrupted (Ctrl-C); the layers not run off keep the
        sweep's choice.
    """
    if cluster is not None:
        for lp in plans:
            names = [c.kernel for c in contenders(lp.choice, margin)] if lp.choice else []
            if len(names) < 2:
                continue
            try:
                medians = cluster.runoff(lp.platform, lp.suite, lp.layer.problem, names,
                                         settings, rounds)
            except KeyboardInterrupt:
                return True
            if medians is not None:
                lp.choice = settle(lp.choice, {k: ms * 1e-3 for k, ms in medians.items()})
        return False
    if compare is None:
        from convbench.measure.peers import compare_layer as compare  # noqa: PLC0415
    from convbench.measure.threads import pinned_threads  # noqa: PLC0415 -- imports numba

    for lp in plans:
        if lp.choice is None:
            continue
        names = [c.kernel for c in contenders(lp.choice, margin)]
        if len(names) < 2:
            continue
        try:
            with pinned_threads(settings.threads):
                result = compare(lp.suite, lp.layer.problem, names, (),
                                 backend=settings.backend, rounds=rounds, per_call=False)
        except KeyboardInterrupt:
            return True
        lp.choice = settle(lp.choice, {k: ms * 1e-3 for k, ms in result.medians_ms.items()})
    return False


def tune(layers: list[tuple[str, SuiteLayer]], kernel_names: list[str],
         settings: SweepSettings, *, budget: float, metric: str = "rel_l2",
         allow_vendor: bool = False, writer: Any = None, sweep: Sweep | None = None,
         runoff_rounds: int = RUNOFF_ROUNDS, compare: Compare | None = None,
         cluster: Any = None) -> TuneOutcome:
    """Measure ``kernel_names`` on ``layers`` (time and error), then choose per layer.

    Parameters
    ----------
    layers : list of (suite, SuiteLayer)
    kernel_names : list of str
        Kernels and baselines to measure; baselines are chosen only with
        ``allow_vendor``.
    settings : SweepSettings
        ``mode`` must be ``"both"``: a choice needs time and error.
    budget, metric, allow_vendor
        See :func:`convbench.plans.choice.choose`.
    writer : ResultWriter, optional
        Receives every record as it is measured.
    sweep : callable, optional
        ``sweep(tasks, settings, writer, done)`` returning a
        :class:`~convbench.measure.runner.SweepOutcome`; default
        :func:`~convbench.measure.runner.run_sweep` (the command passes the
        one with a progress bar).
    runoff_rounds : int
        Rounds of the :func:`runoff` of close choices; 0 for none.
    compare : callable, optional
        The runoff's comparison (see :func:`runoff`).
    cluster : convbench.measure.cluster.Cluster, optional
        Where the sweep ran (``sweep`` sent it there), for the runoff.

    Returns
    -------
    TuneOutcome
        Choices of the layers measured; an interrupted sweep keeps those
        whose every kernel was measured. Records of several platforms (a
        Dask sweep) give each layer one plan per platform.
    """
    check_budget(budget, metric)
    if settings.mode != "both":
        raise ValueError(f"tuning measures time and error: mode must be 'both', "
                         f"got {settings.mode!r}")
    tasks = plan_tasks(layers, kernel_names, settings)
    if sweep is None:
        outcome = run_sweep(tasks, settings, writer)
    else:
        outcome = sweep(tasks, settings, writer, set())
    records = [as_record(r) for r in outcome.records]
    plans: list[LayerPlan] = []
    fingerprints: dict[str, dict[str, Any]] = {}
    for platform, recs in by_platform(records).items():
        measured: dict[str, set[str]] = {}
        for rec in recs:
            measured.setdefault(rec["problem"], set()).add(rec.kernel)
        complete = [(s, layer) for s, layer in layers
                    if len(measured.get(layer.descriptor, ())) >= len(set(kernel_names))]
        for lp in choose_per_layer(complete, recs, budget=budget, metric=metric,
                                   allow_vendor=allow_vendor):
            lp.platform = platform
            plans.append(lp)
        if platform is not None and isinstance(recs[0].get("fingerprint"), dict):
            fingerprints[platform] = recs[0]["fingerprint"]
    interrupted = outcome.interrupted
    if runoff_rounds and not interrupted:
        interrupted = runoff(plans, settings, rounds=runoff_rounds, compare=compare,
                             cluster=cluster)
    return TuneOutcome(plans, records, interrupted, outcome.threads, fingerprints)


def save_plans(path: str | os.PathLike[str], outcome: TuneOutcome, backend: str) -> int:
    """Merge the outcome's choices into the plan cache at ``path``; return how many.

    Each choice goes under the fingerprint of the platform it was measured on
    (this one's, unless a Dask worker's records said otherwise).
    """
    threads = (outcome.threads or {}).get("threads")
    per_platform: dict[str | None, dict[str, Any]] = {}
    for lp in outcome.chosen:
        used = threads
        if lp.platform is not None:  # a Dask worker's: the threads its records say
            used = next((r.get("threads") for r in outcome.records
                         if r["problem"] == lp.layer.descriptor
                         and r.platform == lp.platform), None)
        per_platform.setdefault(lp.platform, {})[cache.entry_key(lp.layer.problem)] = \
            cache.make_entry(lp.choice, lp.layer.problem, backend, used)
    for platform, entries in per_platform.items():
        fingerprint = (outcome.fingerprints.get(platform) if platform is not None else None) \
            or cache.current_fingerprint(backend)
        cache.merge_entries(path, fingerprint, entries)
    return sum(len(e) for e in per_platform.values())
