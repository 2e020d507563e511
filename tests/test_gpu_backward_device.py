"""On a CUDA device: every GPU kernel's and cuDNN baseline's backward passes against torch float64.

Marked ``gpu``: skipped, with the reason, where no device is usable (CI).
"""

import dataclasses

import pytest
from backward_reference import DIRECTIONS, check_problem
from conftest import documented_refusal

from convbench import ConvProblem
from convbench.registry import get_kernel

pytestmark = pytest.mark.gpu

PROBLEMS = [
    ConvProblem.make(2, 16, 14, 13, 32, 3, 3, padding=1),
    ConvProblem.make(3, 6, 10, 7, 4, 3, 2, stride=(2, 3), padding=((1, 0), (2, 1)),
                     dilation=(1, 2), groups=2),
    ConvProblem.make(1, 8, 9, 9, 8, 3, 3, padding=2, groups=8),
    ConvProblem.make(2, 32, 7, 7, 64, 1, 1),
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("name", ["direct", "im2col", "fft", "winograd", "cudnn", "cudnn_best",
                                  "torch_cudnn"])
def test_gpu_backward_matches_torch(name, dtype):
    kernel = get_kernel(name, "gpu")
    for i, base in enumerate(PROBLEMS):
        base = base.with_(dtype=dtype)
        reasons = [documented_refusal(kernel, dataclasses.replace(base, dir=d, bias=d == "bwd_wb"))
                   for d in DIRECTIONS]
        if any(reasons):
            assert name == "winograd" and all(reasons), reasons
            continue
        check_problem(kernel, base, seed=i)
