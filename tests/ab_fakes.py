"""Fake sides for ``convbench ab``'s pairing: a fake clock and a machine model, no processes.

A :class:`FakeMachine` is the shared 2-core VM as the issue measured it: the
same call runs at one speed or another that is about 1.9x slower, switching
every 10-30 s; a slow drift of +-15% on top; each fresh process its own speed
(a few percent); each call +-3%. A :class:`FakeSide` times a window on the
fake clock by that model; its kernels' outputs are the float64 reference
(plus an error where a side is told to be wrong).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from convbench.ab.schedule import AbTask, PairingSettings
from convbench.problem import ConvProblem
from convbench.problem.reference import reference_for

#: Each fake kernel's time per call, seconds.
CALL_S = {"im2col": 2e-3, "winograd": 1.5e-3, "direct": 4e-3}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeMachine:
    """The machine's speed over (fake) time, and the randomness of processes and calls."""

    def __init__(self, clock: FakeClock, seed: int = 1, process_sigma: float = 0.02,
                 call_sigma: float = 0.03) -> None:
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        self.process_sigma = process_sigma
        self.call_sigma = call_sigma
        # Moments at which the machine flips between its two states.
        self.flips = np.cumsum(self.rng.uniform(10.0, 30.0, size=10000))

    def slowness(self, t: float) -> float:
        state = int(np.searchsorted(self.flips, t)) % 2
        return (1.9 if state else 1.0) * (1.0 + 0.15 * math.sin(2 * math.pi * t / 47.0))

    def process_factor(self) -> float:
        return float(math.exp(self.rng.normal(0.0, self.process_sigma)))

    def call_factor(self) -> float:
        return float(math.exp(self.rng.normal(0.0, self.call_sigma)))


class FakeSide:
    """One side's fake worker: its kernels' speeds times the machine's."""

    def __init__(self, machine: FakeMachine, slowdown: dict[str, float] | None = None,
                 wrong: set[str] | None = None, refuses: set[str] | None = None) -> None:
        self.machine = machine
        self.clock = machine.clock
        self.slowdown = slowdown or {}
        self.wrong = wrong or set()
        self.refuses = refuses or set()
        self.factor = machine.process_factor()
        self.closed = False

    def prepare(self, task: AbTask, inputs: Path, output: Path | None) -> dict[str, Any]:
        self.clock.now += 0.05
        if task.kernel in self.refuses:
            return {"status": "skipped", "reason": "cpu im2col runs float64, got float32"}
        if output is not None:
            p = ConvProblem.parse(task.descriptor)
            with np.load(inputs) as data:
                bias = data["bias"] if "bias" in data else None
                y = np.asarray(reference_for(p, data["a"], data["b"], bias), dtype=np.float32)
            if task.kernel in self.wrong:
                y = y + np.float32(1e-2)
            np.savez(output, y)
        return {"status": "ok", "kind": "kernel",
                "error_model": {"family": "winograd" if task.kernel == "winograd" else "direct"}}

    def time(self, task: AbTask, settings: PairingSettings) -> list[float]:
        self.clock.now += 0.02 + settings.warm_s  # cool-down and warm calls
        per_call = CALL_S[task.kernel] * self.slowdown.get(task.kernel, 1.0) * self.factor
        samples: list[float] = []
        end = self.clock.now + settings.window_s
        while not samples or self.clock.now < end:
            t = per_call * self.machine.slowness(self.clock.now) * self.machine.call_factor()
            samples.append(t)
            self.clock.now += t
        return samples

    def release(self, task: AbTask) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def settle(self, limit: float) -> None:
        self.clock.now += 0.005
