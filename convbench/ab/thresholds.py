"""Thresholds of ``convbench ab`` from an A/A run, and where they are kept.

``convbench ab --calibrate BASE`` runs BASE against itself. Nothing differs
between the sides, so every ratio it measures is noise. For each kernel,
:func:`calibrate_kernel` takes the threshold ``t`` that the median ratio of a
layer exceeds by chance with probability ``alpha / L`` at most, ``L`` being
the number of the kernel's layers in the A/A run (a Bonferroni correction:
then the chance that *any* of the ``L`` layers crosses ``1 + t`` by noise
alone is at most ``alpha``, 5% by default):

1. the A/A run's process pairs of the kernel, over all its layers, are pooled,
   each pair as its list of block log-ratios; each is added negated too, since
   in A/A which side is "HEAD" is arbitrary (the null distribution is symmetric);
2. the statistic ``ab`` judges -- the median of the block ratios of ``P``
   process pairs, ``P`` as in the run -- is simulated by drawing ``P`` pairs
   from that pool with replacement, :data:`SIMULATIONS` times;
3. ``t = exp(q) - 1``, where ``q`` is the ``1 - alpha / L`` quantile of the
   simulated ``|log median|``, and never below :data:`MIN_THRESHOLD`.

A slower verdict needs the interval's lower end above 1 as well, so the
chance of a false ``slower`` is smaller still. The thresholds are kept in
``$XDG_CACHE_HOME/convbench/ab/`` (``~/.cache/convbench/ab/`` without it), one
file per machine fingerprint (:func:`convbench.store.environment.
platform_fingerprint`), under the thread count they were measured with: a CI
job caches that directory, keyed by the runner.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convbench.ab.verdict import resampled_medians

#: Family-wise chance, per kernel, that one of its layers crosses the threshold in A/A.
ALPHA = 0.05
#: Simulated medians behind each quantile.
SIMULATIONS = 20000
#: The smallest threshold: below 1%, a timed ratio says nothing on a shared machine.
MIN_THRESHOLD = 0.01
#: The threshold without a calibration for this machine (and the instruction count's).
DEFAULT_THRESHOLD = 0.10
INSTRUCTIONS_THRESHOLD = 0.01
CACHE_ENV = "XDG_CACHE_HOME"


@dataclass(frozen=True)
class KernelThreshold:
    """One kernel's calibrated threshold and what it came from."""

    t: float
    layers: int
    pairs: int
    quantile: float
    alpha: float


def calibrate_kernel(clusters_by_layer: Sequence[Sequence[Sequence[float]]], *,
                     alpha: float = ALPHA, seed: int = 0,
                     simulations: int = SIMULATIONS) -> KernelThreshold:
    """The threshold of one kernel from its A/A block ratios (see the module docstring).

    Parameters
    ----------
    clusters_by_layer : sequence
        Per layer, per process pair, the block ratios (HEAD/BASE) of the A/A run.
    alpha : float
        Family-wise false-alarm chance over the kernel's layers.
    seed : int
        Seed of the simulation.
    """
    layers = [[list(c) for c in layer if len(c)] for layer in clusters_by_layer]
    layers = [layer for layer in layers if layer]
    if not layers:
        raise ValueError("no A/A ratios to calibrate from")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    pool = [np.log(np.asarray(c, dtype=float)) for layer in layers for c in layer]
    pool += [-c for c in pool]
    pairs = round(float(np.median([len(layer) for layer in layers])))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(pool), size=(simulations, pairs))
    medians = np.abs(resampled_medians(pool, picks))
    quantile = 1.0 - alpha / len(layers)
    q = float(np.quantile(medians, quantile))
    return KernelThreshold(t=max(MIN_THRESHOLD, math.expm1(q)), layers=len(layers),
                           pairs=pairs, quantile=quantile, alpha=alpha)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/convbench/ab`` (``~/.cache/convbench/ab`` where it is unset)."""
    root = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache")
    return Path(root) / "convbench" / "ab"


def store_path(fingerprint_id: str) -> Path:
    """The thresholds file of the machine with this fingerprint."""
    return cache_dir() / f"thresholds-{fingerprint_id}.json"


def settings_key(threads: int) -> str:
    return f"threads={threads}"


def save(fingerprint: Mapping[str, Any], threads: int,
         kernels: Mapping[str, KernelThreshold], about: Mapping[str, Any]) -> Path:
    """Store ``kernels``' thresholds for this machine and thread count; the file's path.

    Kernels calibrated before under the same key and not in ``kernels`` are kept.
    """
    path = store_path(fingerprint["id"])
    data = load_file(path) or {"fingerprint": dict(fingerprint), "settings": {}}
    entry = data["settings"].setdefault(settings_key(threads), {"kernels": {}})
    entry["kernels"].update({name: asdict(k) for name, k in kernels.items()})
    entry.update({**about, "date": _dt.datetime.now(_dt.timezone.utc)
                  .isoformat(timespec="seconds")})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)
    return path


def load_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("settings"), dict) else None


@dataclass(frozen=True)
class Thresholds:
    """The threshold of each kernel for a run, and where each came from."""

    by_kernel: dict[str, float]
    source: dict[str, str]

    def of(self, kernel: str) -> float:
        return self.by_kernel[kernel]

    def lines(self) -> list[str]:
        """One line per kernel: ``im2col: t = 0.071 (calibrated ...)``."""
        return [f"{k}: t = {t:.3f} ({self.source[k]})" for k, t in self.by_kernel.items()]


def thresholds_for(kernels: Sequence[str], fingerprint_id: str, threads: int,
                   override: float | None = None, instructions: bool = False) -> Thresholds:
    """Each kernel's threshold: ``--threshold``, else the calibration stored for this
    machine and thread count, else :data:`DEFAULT_THRESHOLD` (saying so).

    Counting instructions, without ``--threshold``, it is :data:`INSTRUCTIONS_THRESHOLD`:
    an instruction count has no noise to calibrate against.
    """
    if override is not None:
        if not override > 0:
            raise ValueError(f"--threshold must be positive, got {override}")
        return Thresholds({k: override for k in kernels},
                          {k: "--threshold" for k in kernels})
    if instructions:
        return Thresholds({k: INSTRUCTIONS_THRESHOLD for k in kernels},
                          {k: "instruction counts: fixed, nothing to calibrate" for k in kernels})
    path = store_path(fingerprint_id)
    data = load_file(path) or {"settings": {}}
    entry = data["settings"].get(settings_key(threads)) or {}
    stored = entry.get("kernels") or {}
    by_kernel, source = {}, {}
    for k in kernels:
        if k in stored:
            by_kernel[k] = float(stored[k]["t"])
            source[k] = (f"calibrated {entry.get('date', '?')} over {stored[k]['layers']} "
                         f"layers x {stored[k]['pairs']} pairs, {path}")
        else:
            by_kernel[k] = DEFAULT_THRESHOLD
            source[k] = (f"default: no calibration of {k} with {threads} threads for machine "
                         f"{fingerprint_id} in {path.parent}; run convbench ab --calibrate BASE")
    return Thresholds(by_kernel, source)
