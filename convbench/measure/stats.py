"""Statistics of times measured in rounds: medians, intervals, ratios, stability.

A record's timed samples come in rounds (see :mod:`convbench.measure.runner`):
each round runs in its own worker process, after a cool-down and warm calls,
and the kernels of a layer take their turns in a shuffled order. What moves a
kernel's time between two runs of the same sweep -- the state a process
starts in, the threads of the library that ran before -- moves it between
rounds too, so the rounds, not the samples of one round, are the units the
intervals are built from (Kalibera & Jones, "Rigorous benchmarking in
reasonable time", 2013: repeat most at the level that varies most).

* :func:`summarize` -- the median over all samples (each round weighted
  equally), its standard error on the log scale, the 95% interval and the
  stability verdict of one record;
* :func:`ratio` -- the ratio of two such medians with its interval, paired by
  round when both were measured in the same rounds of one sweep (a layer's
  kernels, whose round ``r`` ran in the same worker process), unpaired
  otherwise (the same record in two runs);
* :func:`verdict` -- ``faster``, ``slower``, ``same`` or ``unclear`` for a
  ratio, as ``convbench compare`` reports it;
* :func:`ranking` -- which of a layer's kernels are faster than the rest
  with confidence, and which are tied;
* :func:`prediction_interval` -- where the median of a *rerun* of the same
  sweep on the same machine will fall (``pi95_s``), which is wider than the
  interval of this run's median (``ci95_s``).

Intervals are Student-t intervals on the log scale with ``rounds - 1``
degrees of freedom, the between-round standard deviation as the scale, and
the rounds' own within-round uncertainty as a floor (so that three rounds
that agree by chance do not claim a precision no single round has). A
single round has only its within-round interval, which says nothing about
the next process; records say how many rounds they have.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Confidence of every interval convbench reports.
CONFIDENCE = 0.95
#: A record is unstable when its slowest round's median exceeds its fastest's by more.
UNSTABLE_ROUND_SPREAD = 0.25
#: ... or when, within one round, the 90th percentile exceeds the 10th by this factor
#: (a call that is sometimes fast and sometimes slow: two states, not noise).
UNSTABLE_WITHIN_SPREAD = 1.5
#: ... or when two rounds' own intervals are disjoint and their medians differ by more.
UNSTABLE_MIN_GAP = 0.05
#: A kernel wins a layer only when the interval of runner-up / winner lies above 1 and
#: the ratio itself is at least 1 + this: a 1% win on a shared machine is a tie.
WIN_MARGIN = 0.03
#: ``compare``'s default effect threshold: a change smaller than this is ``same``.
TIME_TOLERANCE = 0.10


# --------------------------------------------------------------------- quantiles
@functools.lru_cache(maxsize=256)
def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t quantile for ``df`` degrees of freedom (normal for ``inf``)."""
    from scipy import stats  # noqa: PLC0415 -- scipy.stats is slow to import

    q = 0.5 + confidence / 2
    return float(stats.norm.ppf(q) if math.isinf(df) else stats.t.ppf(q, df))


@functools.lru_cache(maxsize=1024)
def median_rank_interval(n: int, confidence: float = CONFIDENCE) -> tuple[int, int]:
    """0-based ranks ``(j, k)`` of sorted samples that bound the median with ``confidence``.

    Distribution-free: the number of samples below the true median is
    Binomial(n, 1/2). For tiny ``n`` the ranks are the extremes.
    """
    from scipy import stats  # noqa: PLC0415

    if n < 1:
        raise ValueError(f"need at least one sample, got {n}")
    lo = int(stats.binom.ppf((1 - confidence) / 2, n, 0.5))
    hi = n - 1 - lo
    return max(0, min(lo, n - 1)), max(0, min(hi, n - 1))


# ------------------------------------------------------------------ one record
def weighted_median(groups: Sequence[Sequence[float]]) -> float:
    """Median of the union of ``groups`` where each group weighs the same in total.

    A round that is slow collects fewer samples in the same time; weighting
    each round equally keeps the fast rounds from outvoting it.
    """
    points = sorted((v, 1.0 / len(g)) for g in groups if g for v in g)
    if not points:
        raise ValueError("no samples")
    total = sum(w for _, w in points)
    acc = 0.0
    for i, (v, w) in enumerate(points):
        acc += w
        if acc > total / 2 + 1e-12:
            return v
        if abs(acc - total / 2) <= 1e-12:
            return (v + points[i + 1][0]) / 2 if i + 1 < len(points) else v
    return points[-1][0]


def round_interval(samples: Sequence[float],
                   confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free interval of one round's median (order statistics)."""
    data = sorted(samples)
    j, k = median_rank_interval(len(data), confidence)
    return data[j], data[k]


def _within_log_se(samples: Sequence[float]) -> float:
    """Standard error of log(median) of one round, from its order-statistic interval."""
    lo, hi = round_interval(samples)
    if lo <= 0 or len(samples) < 2:
        return 0.0
    return (math.log(hi) - math.log(lo)) / (2 * t_quantile(math.inf))


@dataclass(frozen=True)
class Summary:
    """One record's times, reduced.

    Attributes
    ----------
    median_s : float
        Median over all samples, each round weighted equally.
    round_medians_s : tuple of float
        Each round's median, in round order.
    log_se : float
        Standard error of ``log(median_s)``.
    df : float
        Degrees of freedom of ``log_se`` (``rounds - 1``; ``inf`` for one round,
        whose error is the within-round one).
    ci95_s : tuple of float
        The 95% interval of the median.
    within_log_se : float
        The part of ``log_se`` that the rounds' own samples account for.
    unstable : bool
    why_unstable : tuple of str
        What made it unstable (empty when stable).
    """

    median_s: float
    round_medians_s: tuple[float, ...]
    log_se: float
    df: float
    ci95_s: tuple[float, float]
    within_log_se: float = 0.0
    unstable: bool = False
    why_unstable: tuple[str, ...] = field(default_factory=tuple)

    @property
    def rounds(self) -> int:
        return len(self.round_medians_s)


def _log_scale(round_medians: Sequence[float],
               rounds: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """(standard error of the log median, its degrees of freedom, its within-round part)."""
    within = math.sqrt(sum(_within_log_se(r) ** 2 for r in rounds)) / len(rounds)
    if len(round_medians) < 2:
        return within, math.inf, within
    logs = [math.log(m) for m in round_medians]
    between = statistics.stdev(logs) / math.sqrt(len(logs))
    return max(between, within), float(len(logs) - 1), within


def summarize(samples_by_round: Sequence[Sequence[float]]) -> Summary:
    """Median, interval and stability of a record's samples.

    Parameters
    ----------
    samples_by_round : sequence of sequences of float
        Seconds per call, one list per round (empty rounds are ignored).

    Returns
    -------
    Summary

    Raises
    ------
    ValueError
        If there are no positive samples.
    """
    rounds = [list(r) for r in samples_by_round if len(r)]
    if not rounds or any(v <= 0 or not math.isfinite(v) for r in rounds for v in r):
        raise ValueError("times must be positive and finite, in at least one round")
    medians = tuple(statistics.median(r) for r in rounds)
    median = weighted_median(rounds)
    log_se, df, within = _log_scale(medians, rounds)
    half = t_quantile(df) * log_se
    reasons = _instability(rounds, medians)
    return Summary(median, medians, log_se, df,
                   (median * math.exp(-half), median * math.exp(half)), within,
                   bool(reasons), tuple(reasons))


def _instability(rounds: list[list[float]], medians: Sequence[float]) -> list[str]:
    """Why a record's rounds do not describe one steady state (empty: they do)."""
    reasons = []
    spread = max(medians) / min(medians) - 1
    if spread > UNSTABLE_ROUND_SPREAD:
        reasons.append(f"round medians differ by {spread:.0%} "
                       f"(limit {UNSTABLE_ROUND_SPREAD:.0%})")
    for i, r in enumerate(rounds):
        if len(r) >= 5:
            q = statistics.quantiles(r, n=10)
            if q[0] > 0 and q[-1] / q[0] > UNSTABLE_WITHIN_SPREAD:
                reasons.append(f"round {i}: p90/p10 = {q[-1] / q[0]:.2f} "
                               f"(limit {UNSTABLE_WITHIN_SPREAD})")
                break
    intervals = [round_interval(r) for r in rounds]
    for i in range(len(rounds)):
        for j in range(i + 1, len(rounds)):
            (lo_i, hi_i), (lo_j, hi_j) = intervals[i], intervals[j]
            gap = max(medians[i], medians[j]) / min(medians[i], medians[j]) - 1
            if (hi_i < lo_j or hi_j < lo_i) and gap > UNSTABLE_MIN_GAP:
                reasons.append(f"rounds {i} and {j} disagree beyond their intervals "
                               f"({gap:.0%} apart)")
                return reasons
    return reasons


def summary_of(record: Any) -> Summary | None:
    """The :class:`Summary` of a result record's samples (None: not ``ok`` or untimed).

    ``record`` is a :class:`~convbench.store.records.Record`; a file written
    before rounds existed reads as one round of all its samples.
    """
    rounds = record.samples_by_round_s
    if not rounds:
        return None
    try:
        return summarize(rounds)
    except ValueError:
        return None


def total(parts: Sequence[tuple[Summary, int]]) -> Summary | None:
    """The sum of ``repeat x median`` over ``parts`` (a whole network), with its interval.

    When every part has the same rounds (one sweep), round ``r``'s total is the
    sum of round ``r``'s medians: the rounds of a whole network, from which the
    interval comes as for one record. Otherwise the parts' errors add.
    """
    if not parts:
        return None
    median = sum(rep * s.median_s for s, rep in parts)
    within = math.sqrt(sum((rep * s.median_s * s.within_log_se) ** 2
                           for s, rep in parts)) / median
    counts = {s.rounds for s, _ in parts}
    if len(counts) == 1 and (r := counts.pop()) >= 2:
        totals = tuple(sum(rep * s.round_medians_s[i] for s, rep in parts) for i in range(r))
        logs = [math.log(t) for t in totals]
        log_se, df = max(statistics.stdev(logs) / math.sqrt(r), within), float(r - 1)
    else:
        totals = (median,)
        log_se = math.sqrt(sum((rep * s.median_s * s.log_se) ** 2 for s, rep in parts)) / median
        df = min(s.df for s, _ in parts)
    half = t_quantile(df) * log_se
    return Summary(median, totals, log_se, df,
                   (median * math.exp(-half), median * math.exp(half)), within)


# ---------------------------------------------------------- prediction intervals
#: Weight, in degrees of freedom, that a record's prediction interval gives the sweep's
#: pooled between-round variance of the same kernel (a record has only ``rounds - 1``).
PREDICTION_PRIOR_DF = 4


@dataclass
class RoundVariancePool:
    """Between-round variances of a sweep's records, pooled per kernel.

    A record of three rounds estimates its between-round variance with two
    degrees of freedom: by chance often far too small or too large. The
    records of one kernel in one sweep share the machine, the library and
    the kind of work, so their pooled variance is a far steadier estimate
    of the same thing (a hierarchical model's prior, with
    :data:`PREDICTION_PRIOR_DF` degrees of freedom of weight).
    """

    sums: dict[str, float] = field(default_factory=dict)
    dfs: dict[str, float] = field(default_factory=dict)

    def add(self, kernel: str, summary: Summary) -> None:
        """Count ``summary``'s between-round variance towards ``kernel``'s pool."""
        if summary.rounds < 2:
            return
        logs = [math.log(m) for m in summary.round_medians_s]
        df = summary.rounds - 1
        self.sums[kernel] = self.sums.get(kernel, 0.0) + statistics.variance(logs) * df
        self.dfs[kernel] = self.dfs.get(kernel, 0.0) + df

    def get(self, kernel: str) -> tuple[float, float]:
        """``(pooled variance of log round medians, its degrees of freedom)``; ``(0, 0)``
        for a kernel with no record of two rounds yet."""
        df = self.dfs.get(kernel, 0.0)
        return (self.sums[kernel] / df, df) if df else (0.0, 0.0)


@dataclass(frozen=True)
class Prediction:
    """Where a rerun's median will fall, with 95% probability.

    Attributes
    ----------
    pi95_s : tuple of float
    round_log_var : float
        The variance of one round's log median it assumed.
    df : float
        Its degrees of freedom.
    basis : str
        Where that variance came from, in words.
    """

    pi95_s: tuple[float, float]
    round_log_var: float
    df: float
    basis: str


def prediction_interval(s: Summary, pooled: tuple[float, float] = (0.0, 0.0), *,
                        rerun_rounds: int | None = None,
                        prior_df: float = PREDICTION_PRIOR_DF) -> Prediction:
    """The 95% prediction interval of a rerun's median of the same record.

    A rerun's median differs from this one by both runs' between-round
    noise: rounds run in separate processes spread over the whole sweep, so
    they see what moves a record between processes and over the minutes of
    a sweep. On the log scale, with ``v`` the variance of one round's log
    median and ``R``, ``R'`` the rounds of this run and of the rerun,
    ``log m' - log m`` has variance ``v (1/R + 1/R')``; the interval is
    ``m exp(+-t_df sqrt(v (1/R + 1/R')))``.

    ``v`` is the record's own between-round variance shrunk towards the
    sweep's pooled variance of the same kernel (``pooled``, from
    :class:`RoundVariancePool`): ``((R-1) v_own + k v_pool) / (R-1+k)``
    with ``k = min(prior_df, pool df)``, and ``df = R-1+k``. It is never
    below what the rounds' own samples say (``R within_log_se^2``). What
    it leaves out is a shift of the whole machine between two runs that no
    round of this run saw; the committed reproducibility study measures how
    often reruns fall outside.

    Parameters
    ----------
    s : Summary
    pooled : tuple of float
        ``(variance, df)`` of the kernel's pool; ``(0, 0)``: none.
    rerun_rounds : int, optional
        Rounds of the rerun (default: as many as this run).
    prior_df : float
    """
    r = s.rounds
    r_new = rerun_rounds or r
    pool_var, pool_df = pooled
    k = min(prior_df, pool_df)
    if r >= 2:
        own = statistics.variance([math.log(m) for m in s.round_medians_s])
        var = ((r - 1) * own + k * pool_var) / (r - 1 + k)
        df = float(r - 1 + k)
        basis = (f"this record's {r} rounds" + (f", shrunk towards {pool_df:.0f} df of this "
                                                 "kernel's rounds in the sweep" if k else ""))
    elif k:
        var, df = pool_var, float(pool_df)
        basis = f"one round: this kernel's pooled rounds in the sweep ({pool_df:.0f} df)"
    else:
        var, df = 0.0, math.inf
        basis = "one round and no pool: its own samples only (a rerun will move further)"
    var = max(var, r * s.within_log_se ** 2)
    half = t_quantile(df) * math.sqrt(var * (1 / r + 1 / r_new))
    m = s.median_s
    return Prediction((m * math.exp(-half), m * math.exp(half)), var, df, basis)


# ----------------------------------------------------------------- cross-fitting
def crossfit_fastest(rounds_by_key: dict[str, Sequence[Sequence[float]]]
                     ) -> tuple[list[list[float]], list[str]] | None:
    """The fastest key's samples, round by round, each round's key chosen on the others.

    "Best of several" picked by the same samples it then reports is biased
    fast: among keys of equal speed the one whose samples were luckiest wins.
    Here round ``r`` reports the samples of the key whose median over the
    *other* rounds is the smallest, so that no sample both chooses and is
    reported. With one round, the round's samples are split: the even
    samples report the key chosen on the odd ones and the odd the key chosen
    on the even ones. Keys whose round count differs from the most common
    one are left out.

    Returns
    -------
    (samples_by_round, choices) or None
        None for no key with samples.
    """
    keys = {k: [list(r) for r in v if len(r)] for k, v in rounds_by_key.items()}
    keys = {k: v for k, v in keys.items() if v}
    if not keys:
        return None
    counts = [len(v) for v in keys.values()]
    n = max(set(counts), key=counts.count)
    keys = {k: v for k, v in keys.items() if len(v) == n}
    if n >= 2:
        out, choices = [], []
        for r in range(n):
            pick = min(keys, key=lambda k: weighted_median(
                [keys[k][i] for i in range(n) if i != r]))
            out.append(keys[pick][r])
            choices.append(pick)
        return out, choices
    halves = {k: (v[0][0::2], v[0][1::2]) for k, v in keys.items()}
    usable = {k: h for k, h in halves.items() if h[0] and h[1]}
    if not usable:
        k = min(keys, key=lambda k: statistics.median(keys[k][0]))
        return [keys[k][0]], [k]
    on_odd = min(usable, key=lambda k: statistics.median(usable[k][1]))
    on_even = min(usable, key=lambda k: statistics.median(usable[k][0]))
    return [usable[on_odd][0] + usable[on_even][1]], [f"{on_odd}/{on_even}"]


# ---------------------------------------------------------------------- ratios
@dataclass(frozen=True)
class Ratio:
    """``a / b`` of two medians with its interval.

    Attributes
    ----------
    value : float
    lo, hi : float
        The 95% interval.
    paired : bool
        Whether it was paired by round.
    """

    value: float
    lo: float
    hi: float
    paired: bool

    @property
    def above_one(self) -> bool:
        """``a`` is larger than ``b`` with confidence."""
        return self.lo > 1

    @property
    def below_one(self) -> bool:
        return self.hi < 1

    def text(self, spec: str = ".2f") -> str:
        return f"{self.value:{spec}} [{self.lo:{spec}}, {self.hi:{spec}}]"


def ratio(a: Summary, b: Summary, *, paired: bool = False, run_log_var: float = 0.0,
          run_df: float = math.inf) -> Ratio:
    """``a.median / b.median`` with its 95% interval.

    Parameters
    ----------
    a, b : Summary
    paired : bool
        Round ``r`` of ``a`` and of ``b`` ran in the same process, close in
        time (one sweep's kernels on one layer): the interval comes from the
        rounds' own ratios, which cancels what the two share. Otherwise (or
        when the round counts differ) the two errors add.
    run_log_var, run_df : float
        Unpaired only: the variance of ``log(a / b)`` that records of
        unchanged code show between the two runs (:func:`run_noise`), and its
        degrees of freedom; the interval is never narrower than it.
    """
    value = a.median_s / b.median_s
    if paired and a.rounds == b.rounds and a.rounds >= 2:
        logs = [math.log(x / y) for x, y in zip(a.round_medians_s, b.round_medians_s,
                                                strict=True)]
        between = statistics.stdev(logs) / math.sqrt(len(logs))
        floor = math.sqrt(a.within_log_se ** 2 + b.within_log_se ** 2)
        se, df = max(between, floor), float(a.rounds - 1)
    else:
        parts = [(a.log_se ** 2, a.df), (b.log_se ** 2, b.df)]
        own = sum(v for v, _ in parts)
        if run_log_var > own:
            se, df = math.sqrt(run_log_var), run_df
        else:
            se, df = math.sqrt(own), _welch_df(parts)
        paired = False
    half = t_quantile(df) * se
    return Ratio(value, value * math.exp(-half), value * math.exp(half), paired)


def _welch_df(parts: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variances ``(v, df)``."""
    total = sum(v for v, _ in parts)
    denom = sum(v ** 2 / df for v, df in parts if v > 0 and not math.isinf(df))
    if denom == 0:
        finite = [df for v, df in parts if v > 0]
        return min(finite) if finite else math.inf
    return max(1.0, total ** 2 / denom)


@dataclass(frozen=True)
class RunNoise:
    """How much records of unchanged code move between two runs of the same sweep.

    Attributes
    ----------
    log_var : float
        Variance of a record's ``log(new / old)`` between the two runs.
    df : float
        Its degrees of freedom (records pooled, less one).
    records : int
        The record pairs it was pooled over.
    """

    log_var: float
    df: float
    records: int

    @property
    def spread(self) -> float:
        """One standard deviation of it as a factor minus one (0.2: +-20%)."""
        return math.exp(math.sqrt(self.log_var)) - 1


#: Fewest record pairs from which :func:`run_noise` estimates anything.
RUN_NOISE_MIN_RECORDS = 8


def run_noise(pairs: Sequence[tuple[Summary, Summary]]) -> RunNoise:
    """The run-to-run noise of two runs, pooled over their (old, new) record pairs.

    Rounds inside a run lie seconds apart; two runs lie minutes apart, and a
    machine whose speed drifts over minutes moves every record between runs
    more than its rounds say. Pooled over many records, the spread of
    ``log(new / old)`` around its median (1.4826 x MAD, robust to the few
    records that did change) estimates what a record of unchanged code moves
    between these two runs: a record's change is significant only beyond
    both its own interval and that spread. A change that moves most records
    alike (a slower machine, or code every kernel shares) shifts the median,
    not the spread, and still shows. Fewer than
    :data:`RUN_NOISE_MIN_RECORDS` pairs estimate nothing.
    """
    if len(pairs) < RUN_NOISE_MIN_RECORDS:
        return RunNoise(0.0, math.inf, len(pairs))
    logs = [math.log(b.median_s / a.median_s) for a, b in pairs]
    centre = statistics.median(logs)
    mad = statistics.median(abs(v - centre) for v in logs)
    return RunNoise((1.4826 * mad) ** 2, float(len(pairs) - 1), len(pairs))


VERDICTS = ("faster", "slower", "same", "unclear")


def verdict(r: Ratio, tolerance: float = TIME_TOLERANCE) -> str:
    """How ``new / old`` reads, given the effect ``tolerance`` (a fraction).

    * ``slower`` -- the interval lies above 1 and the ratio exceeds ``1 + tolerance``;
    * ``faster`` -- the interval lies below 1 and the ratio is under ``1 / (1 + tolerance)``;
    * ``unclear`` -- the ratio is beyond the tolerance but the interval reaches 1:
      a change this noisy cannot be told from noise;
    * ``same`` -- otherwise: within the tolerance (significant or not).
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    beyond_up = r.value > 1 + tolerance
    beyond_down = r.value < 1 / (1 + tolerance)
    if beyond_up and r.above_one:
        return "slower"
    if beyond_down and r.below_one:
        return "faster"
    if beyond_up or beyond_down:
        return "unclear"
    return "same"


# -------------------------------------------------------------------- rankings
@dataclass(frozen=True)
class Ranking:
    """Who is fastest among some records of one layer.

    Attributes
    ----------
    fastest : str
        The key with the smallest median.
    tied : tuple of str
        The keys that are not slower than ``fastest`` with confidence (by
        :data:`WIN_MARGIN`), ``fastest`` first; one key means a clean win.
    clean : bool
        A single winner whose own record is stable.
    """

    fastest: str
    tied: tuple[str, ...]
    clean: bool


def ranking(summaries: dict[str, Summary], *, paired: bool = True,
            margin: float = WIN_MARGIN) -> Ranking | None:
    """The fastest of ``summaries`` and the ones tied with it (None for no summaries).

    A key is slower than the fastest with confidence when the interval of
    its median over the fastest's lies above 1 and the ratio is at least
    ``1 + margin``. A win by an unstable record is never clean.
    """
    if not summaries:
        return None
    fastest = min(summaries, key=lambda k: summaries[k].median_s)
    best = summaries[fastest]
    tied = [fastest]
    for key, s in sorted(summaries.items(), key=lambda kv: kv[1].median_s):
        if key == fastest:
            continue
        r = ratio(s, best, paired=paired)
        if not (r.above_one and r.value >= 1 + margin):
            tied.append(key)
    clean = len(tied) == 1 and not best.unstable
    return Ranking(fastest, tuple(tied), clean)
