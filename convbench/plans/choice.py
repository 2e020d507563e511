"""The choice within an error budget: the fastest kernel whose measured error meets it.

A :class:`Candidate` is one kernel measured on one problem: its median time
and its errors against the float64 reference. :func:`choose` keeps the
candidates that may be chosen (convbench's kernels; the baselines too with
``allow_vendor``), keeps those whose error on ``metric`` is at most the
budget, and picks the fastest; the next fastest is the runner-up. A budget
that no candidate meets raises :class:`BudgetNotMet`, which names the
closest candidate and its error. :func:`pareto_front` gives the candidates
that no other beats on both time and error.

The times come from a sweep, which measures every kernel in rounds (each
in its own worker process, the kernels of a layer in a shuffled order), so
each candidate carries the interval of its median. The choice is the fastest
admissible candidate by median; the admissible candidates that are not
slower than it with confidence (the rule the tables use to mark a winner,
:func:`convbench.measure.stats.ranking`) are recorded as ``tied``: on this
machine they cannot be told apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from convbench.measure.stats import Summary, ranking, summary_of
from convbench.store.records import Record, as_record

#: Error metrics a budget may be set on (see ``convbench.measure.metrics``).
METRICS = ("rel_l2", "max_rel")


@dataclass(frozen=True)
class Candidate:
    """One kernel measured on one problem.

    Attributes
    ----------
    kernel : str
    kind : {"kernel", "baseline"}
    time_s : float
        Median time of the prepared call.
    errors : dict
        ``rel_l2`` and ``max_rel`` against the float64 reference (NaN where a
        metric is missing, so that it never meets a budget).
    summary : Summary or None
        The median's interval and rounds (None where the record had no samples).
    """

    kernel: str
    kind: str
    time_s: float
    errors: Mapping[str, float] = field(default_factory=dict)
    summary: Summary | None = field(default=None, compare=False)

    def error(self, metric: str) -> float:
        """The error on ``metric``; NaN where it was not measured."""
        return float(self.errors.get(metric, math.nan))

    def meets(self, budget: float, metric: str) -> bool:
        """Whether the error on ``metric`` is at most ``budget`` (NaN never is)."""
        return self.error(metric) <= budget

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kernel": self.kernel, "kind": self.kind, "time_s": self.time_s,
            "error": {m: _finite_or_str(v) for m, v in self.errors.items()}}
        if self.summary is not None:
            s = self.summary
            out["time"] = {"ci95_s": list(s.ci95_s), "round_medians_s": list(s.round_medians_s),
                           "log_se": s.log_se, "df": _finite_or_str(s.df),
                           "within_log_se": s.within_log_se, "unstable": s.unstable}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        t = data.get("time")
        summary = None
        if t:
            summary = Summary(float(data["time_s"]), tuple(t["round_medians_s"]),
                              float(t["log_se"]), float(t["df"]), tuple(t["ci95_s"]),
                              float(t.get("within_log_se", 0.0)), bool(t.get("unstable")))
        return cls(data["kernel"], data.get("kind", "kernel"), float(data["time_s"]),
                   {m: float(v) for m, v in (data.get("error") or {}).items()}, summary)

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Candidate | None:
        """The candidate a result record describes, or None (not ``ok``, no time)."""
        rec = as_record(dict(rec)) if not isinstance(rec, Record) else rec
        time_s = rec.median_s
        if time_s is None:
            return None
        errors = {m: v if (v := rec.error(m)) is not None else math.nan for m in METRICS}
        return cls(rec.kernel, rec.get("kind") or "kernel", time_s, errors, summary_of(rec))


def _finite_or_str(value: float) -> float | str:
    """JSON has no NaN or infinity: store them as strings, as result records do."""
    return value if math.isfinite(value) else str(value)


@dataclass(frozen=True)
class Choice:
    """The fastest candidate within a budget on one problem, and what it was chosen among.

    Attributes
    ----------
    problem : str
        Descriptor of the problem.
    metric : str
    budget : float
    allow_vendor : bool
        Whether baselines could be chosen.
    chosen : Candidate
    runner_up : Candidate or None
        The next fastest candidate within the budget.
    candidates : tuple of Candidate
        Every candidate measured, the ones that could not be chosen included.
    tied : tuple of str
        Admissible kernels not slower than ``chosen`` with confidence
        (``chosen`` first; one name: a clear choice). Candidates without
        intervals are never tied.
    """

    problem: str
    metric: str
    budget: float
    allow_vendor: bool
    chosen: Candidate
    runner_up: Candidate | None
    candidates: tuple[Candidate, ...]
    tied: tuple[str, ...] = ()

    def admissible(self) -> list[Candidate]:
        """The candidates that may be chosen and meet the budget, fastest in the sweep first."""
        return admissible(self.candidates, self.budget, self.metric, self.allow_vendor)


class BudgetNotMet(ValueError):
    """No candidate that may be chosen meets the budget; ``closest`` has the least error."""

    def __init__(self, message: str, closest: Candidate | None) -> None:
        super().__init__(message)
        self.closest = closest


def check_budget(budget: float, metric: str) -> None:
    """Reject a budget that is not a positive finite number or a metric that is unknown.

    Raises
    ------
    ValueError
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) \
            or not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a positive finite number, got {budget!r}")


def choose(candidates: Iterable[Candidate], *, budget: float, metric: str = "rel_l2",
           allow_vendor: bool = False, problem: str = "") -> Choice:
    """The fastest candidate whose ``metric`` error is at most ``budget``.

    Parameters
    ----------
    candidates : iterable of Candidate
        Every kernel and baseline measured on ``problem``.
    budget : float
        Largest error allowed.
    metric : {"rel_l2", "max_rel"}
    allow_vendor : bool
        Also choose among baselines (``kind == "baseline"``); by default they
        are measured for comparison only.
    problem : str
        Descriptor, for the messages.

    Returns
    -------
    Choice

    Raises
    ------
    BudgetNotMet
        No candidate that may be chosen meets the budget; the message names
        the one with the least error, and a baseline that would meet it.
    ValueError
        A bad budget or metric.
    """
    check_budget(budget, metric)
    candidates = tuple(candidates)
    eligible = [c for c in candidates if allow_vendor or c.kind != "baseline"]
    within = admissible(candidates, budget, metric, allow_vendor)
    what = "kernel or baseline" if allow_vendor else "convbench kernel"
    where = f" on {problem}" if problem else ""
    if not within:
        measured = [c for c in eligible if not math.isnan(c.error(metric))]
        closest = min(measured, key=lambda c: c.error(metric), default=None)
        if closest is None:
            raise BudgetNotMet(f"no {what} was measured{where} (each failed or was "
                               "skipped; see the records' reasons)", None)
        message = (f"no {what} meets {metric} <= {budget:.3g}{where}: the closest is "
                   f"{closest.kernel} with {metric} {closest.error(metric):.3g}; raise the "
                   f"budget to at least that")
        vendors = sorted((c for c in candidates if c.kind == "baseline"
                          and c.meets(budget, metric)), key=lambda c: c.time_s)
        if vendors and not allow_vendor:
            message += (f", or allow baselines (--allow-vendor): {vendors[0].kernel} has "
                        f"{metric} {vendors[0].error(metric):.3g}")
        raise BudgetNotMet(message, closest)
    return Choice(problem, metric, float(budget), allow_vendor, within[0],
                  within[1] if len(within) > 1 else None, candidates, tied_with(within))


def tied_with(within: list[Candidate]) -> tuple[str, ...]:
    """Names of the candidates (fastest first) tied with the first one, by the tables' rule.

    Only candidates with intervals take part; without them the first stands alone.
    """
    if not within:
        return ()
    summaries = {c.kernel: c.summary for c in within if c.summary is not None}
    if within[0].kernel not in summaries:
        return (within[0].kernel,)
    rank = ranking(summaries)
    return rank.tied if rank is not None else (within[0].kernel,)


def admissible(candidates: Iterable[Candidate], budget: float, metric: str,
               allow_vendor: bool) -> list[Candidate]:
    """Candidates that may be chosen (baselines only with ``allow_vendor``) and whose
    ``metric`` error is at most ``budget``, fastest first."""
    return sorted((c for c in candidates if (allow_vendor or c.kind != "baseline")
                   and c.meets(budget, metric)), key=lambda c: c.time_s)


def pareto_front(candidates: Iterable[Candidate], metric: str) -> list[Candidate]:
    """Candidates that no other is both at least as fast and at least as accurate as
    (and strictly better in one), fastest first. Candidates without an error are left out.
    """
    points = sorted((c for c in candidates if not math.isnan(c.error(metric))),
                    key=lambda c: (c.time_s, c.error(metric)))
    front: list[Candidate] = []
    for c in points:
        if not front or c.error(metric) < front[-1].error(metric):
            front.append(c)
    return front
