"""Tuning: measure every kernel on every layer, then choose per layer within the budget.

:func:`tune` runs the layers x kernels through a sweep (by default
:func:`convbench.measure.runner.run_sweep`, which measures each pair in
rounds, each round in its own worker process with the kernels of a layer in
a shuffled order, time and error, and writes each record as it is made),
then turns each layer's records into a
:class:`~convbench.plans.choice.Choice`: the fastest admissible kernel, and
the ones tied with it by the rule the tables use. :func:`save_plans` merges
the choices into a plan cache under this platform's fingerprint.
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
from convbench.store.records import Record, as_record


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
    """

    suite: str
    layer: SuiteLayer
    choice: Choice | None = None
    failure: str | None = None


@dataclass
class TuneOutcome:
    """What :func:`tune` measured and chose."""

    plans: list[LayerPlan]
    records: list[Record] = field(default_factory=list)
    interrupted: bool = False
    threads: dict[str, Any] | None = None

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
        whose every kernel was measured.
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
    measured: dict[str, int] = {}
    for rec in records:
        measured[rec["problem"]] = measured.get(rec["problem"], 0) + 1
    complete = [(s, layer) for s, layer in layers
                if measured.get(layer.descriptor, 0) >= len(kernel_names)]
    plans = choose_per_layer(complete, records, budget=budget, metric=metric,
                             allow_vendor=allow_vendor)
    return TuneOutcome(plans, records, outcome.interrupted, outcome.threads)


def save_plans(path: str | os.PathLike[str], outcome: TuneOutcome, backend: str) -> int:
    """Merge the outcome's choices into the plan cache at ``path``; return how many."""
    threads = (outcome.threads or {}).get("threads")
    entries = {cache.entry_key(lp.layer.problem):
               cache.make_entry(lp.choice, lp.layer.problem, backend, threads)
               for lp in outcome.chosen}
    if entries:
        cache.merge_entries(path, cache.current_fingerprint(backend), entries)
    return len(entries)
