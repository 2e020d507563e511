"""What a convolution is: the problem model, its arguments, the reference, the suites.

:class:`ConvProblem` is the one description of a 2-D convolution (in one direction) that
correctness checks, timing, suites and results share (benchdnn's ``prb_t``);
:func:`reference` computes it in float64, apart from every kernel under test.
"""

from convbench.problem.arguments import problem_from_arrays, to_host
from convbench.problem.conv_problem import (
    BENCHDNN_DIRECTIONS,
    DIRECTIONS,
    DT_TO_DTYPE,
    DTYPE_TO_DT,
    FPMATH_MODES,
    MATH_MODES,
    ConvProblem,
    UnsupportedDescriptor,
    effective_extent,
    normalize_direction,
    normalize_dtype,
    output_extent,
)

__all__ = [
    "BENCHDNN_DIRECTIONS",
    "DIRECTIONS",
    "DTYPE_TO_DT",
    "DT_TO_DTYPE",
    "FPMATH_MODES",
    "MATH_MODES",
    "ConvProblem",
    "UnsupportedDescriptor",
    "effective_extent",
    "normalize_direction",
    "normalize_dtype",
    "output_extent",
    "problem_from_arrays",
    "to_host",
]
