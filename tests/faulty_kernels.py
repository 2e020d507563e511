"""Kernels that misbehave on purpose, loaded through CONVBENCH_KERNEL_MODULES."""

import fcntl
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


def _spin(seconds):
    """Busy for ``seconds``, as a kernel is (a sleep would hand the core away)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Steady(_Base):
    """Takes 2 ms per call, every call, in every process."""

    name = "test_steady"

    def prepare_call(self, p, x, w, bias):
        y = np.zeros(p.output_shape, dtype=p.dtype)

        def run():
            _spin(2e-3)
            return y
        return run


class AlternatingCalls(_Base):
    """1.2 ms and 3 ms on alternate calls: two states within one process (each call is
    longer than the sweep's shortest timed run, so every call is a sample of its own)."""

    name = "test_alternating"

    def prepare_call(self, p, x, w, bias):
        y = np.zeros(p.output_shape, dtype=p.dtype)
        calls = [0]

        def run():
            calls[0] += 1
            _spin(3e-3 if calls[0] % 2 else 1.2e-3)
            return y
        return run


_process_parity = None


def process_parity():
    """0 or 1, alternating over the processes that ask, in the order they first ask.

    The count lives in the file named by CONVBENCH_TEST_COUNTER (locked while
    it is read and written), so worker processes of one sweep alternate.
    """
    global _process_parity
    if _process_parity is None:
        with open(os.environ["CONVBENCH_TEST_COUNTER"], "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            count = int(f.read() or 0)
            f.seek(0)
            f.truncate()
            f.write(str(count + 1))
        _process_parity = count % 2
    return _process_parity


class AlternatingProcesses(_Base):
    """1.5 ms in one process, 4 ms in the next: two states between processes."""

    name = "test_alternating_processes"

    def prepare_call(self, p, x, w, bias):
        y = np.zeros(p.output_shape, dtype=p.dtype)
        seconds = 4e-3 if process_parity() else 1.5e-3

        def run():
            _spin(seconds)
            return y
        return run


KERNELS = [Raising(), Crashing(), Sleeping(), Steady(), AlternatingCalls(),
           AlternatingProcesses()]
