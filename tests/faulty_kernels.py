"""Kernels that misbehave on purpose, loaded through CONVBENCH_KERNEL_MODULES."""

import os
import signal
import time

import numpy as np

from convbench import KernelBase


class _Base(KernelBase):
    """CPU kernels that run every problem; each subclass misbehaves in ``prepare_call``."""


class Raising(_Base):
    name = "test_raising"

    def prepare_call(self, p, x, w, bias):
        def run():
            raise RuntimeError("planted failure")
        return run


class Crashing(_Base):
    """Kills its own process, as a segfault in compiled code would."""

    name = "test_crashing"

    def prepare_call(self, p, x, w, bias):
        def run():
            os.kill(os.getpid(), signal.SIGSEGV)
        return run


class Sleeping(_Base):
    """Slow enough to be interrupted mid-sweep; returns zeros."""

    name = "test_sleeping"

    def prepare_call(self, p, x, w, bias):
        y = np.zeros(p.output_shape, dtype=p.dtype)

        def run():
            time.sleep(0.05)
            return y
        return run


KERNELS = [Raising(), Crashing(), Sleeping()]
