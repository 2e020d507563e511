"""Exceptions shared by the harness and the kernels."""

from __future__ import annotations


class UnsupportedProblem(ValueError):
    """A kernel cannot run this convolution problem.

    Raised by ``prepare`` or :func:`convbench.conv2d` when a kernel's
    ``supports(problem)`` returned a reason; the message names that reason,
    e.g. ``"winograd F(2x2,3x3) needs a 3x3 filter, got 5x5"``.
    """


class MissingExtra(ImportError):
    """An optional package that a feature needs is not installed.

    The message names the feature and the command that installs it, e.g.
    ``"reading an ONNX model needs the onnx package: pip install 'convbench[models]'"``.
    """
