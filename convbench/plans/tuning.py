"""Tuning: measure every kernel on every layer, then choose per layer within the budget.

:func:`tune` runs the layers x kernels through a sweep (by default
:func:`convbench.measure.runner.run_sweep`, which measures each pair in
rounds, each round in its own worker process with the kernels of a layer in
a shuffled order, time and error, and writes each record as it is made),
then turns each layer's records into a
:class:`~convbench.plans.choice.Choice`: the fastest admissible kernel, and
the ones tied with it by the rule the tables use. :func:`save_plans` merges
the choices into a plan cache under the fingerprint of the platform that
measured them (a Dask sweep's records say which; otherwise this one).
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


def tune(layers: list[tuple[str, SuiteLayer]], kernel_names: list[str],
         settings: SweepSettings, *, budget: float, metric: str = "rel_l2",
         allow_vendor: bool = False, writer: Any = None,
         sweep: Sweep | None = None) -> TuneOutcome:
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

    Returns
    -------
    TuneOutcome
        Choices of the layers measured; an interrupted sweep keeps those
        whose every kernel was measured. Records of several platforms (a
        Dask sweep) give a layer a plan on each platform that measured all
        its kernels.
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
    return TuneOutcome(plans, records, outcome.interrupted, outcome.threads, fingerprints)


def save_plans(path: str | os.PathLike[str], outcome: TuneOutcome, backend: str,
               provenance: dict[str, Any] | None = None, source: str | None = None) -> int:
    """Merge the outcome's choices into the plan cache at ``path``; return how many.

    Each choice goes under the fingerprint of the platform it was measured on
    (this one's, unless a Dask worker's records said otherwise), with the
    thread count its records were measured with. ``provenance`` (the tune's
    :mod:`~convbench.store.provenance` record) joins the cache's, as the run
    ``source`` (its records file).
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
        cache.merge_entries(path, fingerprint, entries, provenance=provenance, source=source)
    return sum(len(e) for e in per_platform.values())
