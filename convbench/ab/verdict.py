"""Verdicts of ``convbench ab``: paired HEAD/BASE ratios, their bootstrap interval, the rule.

Each ABBA block gives one paired ratio (:func:`block_ratio`); the blocks of one
process pair form a cluster. A kernel x layer's figure is the median of all
its blocks' ratios, and its 95% interval comes from a bootstrap over the
process pairs (:func:`bootstrap_interval`): the pairs are drawn with
replacement, so the interval holds what differs between fresh processes as
well as within them. With a threshold ``t`` (:func:`verdict`):

* ``slower``: the median ratio is >= 1 + t and the interval's lower end is > 1;
* ``faster``: the median ratio is <= 1/(1 + t) and the interval's upper end is < 1;
* ``unclear``: neither, and the interval reaches beyond 1 - 2t or 1 + 2t;
* ``same``: otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

VERDICTS = ("slower", "faster", "unclear", "same")
#: Bootstrap resamples behind each interval.
BOOTSTRAP_RESAMPLES = 4000
CONFIDENCE = 0.95


def block_ratio(order: str, medians: Sequence[float]) -> float:
    """HEAD/BASE of one ABBA (or BAAB) block from its four windows' median times.

    ``order`` names the side of each window (``"ABBA"``: BASE, HEAD, HEAD,
    BASE). Each side's two windows sit symmetrically in the block, so a drift
    that is linear over the block adds the same to both sums and cancels in
    the ratio.
    """
    if sorted(order) != ["A", "A", "B", "B"] or len(medians) != 4:
        raise ValueError(f"a block is four windows, two of each side (ABBA or BAAB), got "
                         f"{order!r} with {len(medians)} medians")
    base = sum(m for side, m in zip(order, medians, strict=True) if side == "A")
    head = sum(m for side, m in zip(order, medians, strict=True) if side == "B")
    if base <= 0:
        raise ValueError(f"BASE's window medians must be positive, got {list(medians)}")
    return head / base


def pooled_median(clusters: Sequence[Sequence[float]]) -> float:
    """The median of every block ratio of every cluster (process pair)."""
    values = [v for c in clusters for v in c]
    if not values:
        raise ValueError("no block ratio to take the median of")
    return float(np.median(values))


def bootstrap_interval(clusters: Sequence[Sequence[float]], seed: int = 0,
                       resamples: int = BOOTSTRAP_RESAMPLES,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`pooled_median` over the clusters.

    Each resample draws as many process pairs as there are, with
    replacement, and takes the median of their pooled block ratios. Seeded:
    the same ratios give the same interval.
    """
    clusters = [list(c) for c in clusters if len(c)]
    if not clusters:
        raise ValueError("no process pair has a block ratio")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(clusters), size=(resamples, len(clusters)))
    medians = resampled_medians(clusters, picks)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(medians, [tail, 1.0 - tail])
    return float(lo), float(hi)


def resampled_medians(clusters: Sequence[Sequence[float]], picks: np.ndarray) -> np.ndarray:
    """For each row of ``picks`` (cluster indices), the median of those clusters' pooled values."""
    if len({len(c) for c in clusters}) == 1:  # the usual case: one array operation
        values = np.asarray(clusters, dtype=float)[picks]
        return np.median(values.reshape(len(picks), -1), axis=1)
    arrays = [np.asarray(c, dtype=float) for c in clusters]
    return np.array([np.median(np.concatenate([arrays[i] for i in row])) for row in picks])


def verdict(ratio: float, ci95: tuple[float, float], threshold: float) -> str:
    """``slower``, ``faster``, ``unclear`` or ``same`` (see the module docstring)."""
    if not threshold > 0:
        raise ValueError(f"the threshold must be positive, got {threshold}")
    lo, hi = ci95
    if ratio >= 1.0 + threshold and lo > 1.0:
        return "slower"
    if ratio <= 1.0 / (1.0 + threshold) and hi < 1.0:
        return "faster"
    if lo < 1.0 - 2.0 * threshold or hi > 1.0 + 2.0 * threshold:
        return "unclear"
    return "same"


@dataclass(frozen=True)
class PairedResult:
    """A kernel x layer's paired figure: the median ratio, its interval and the verdict."""

    ratio: float
    ci95: tuple[float, float]
    threshold: float
    verdict: str
    pairs: int
    blocks: int


def judge(clusters: Sequence[Sequence[float]], threshold: float, seed: int = 0
          ) -> PairedResult:
    """:func:`pooled_median`, :func:`bootstrap_interval` and :func:`verdict` of the clusters."""
    ratio = pooled_median(clusters)
    ci = bootstrap_interval(clusters, seed)
    return PairedResult(ratio, ci, threshold, verdict(ratio, ci, threshold),
                        sum(1 for c in clusters if len(c)), sum(len(c) for c in clusters))
