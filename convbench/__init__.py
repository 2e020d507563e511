"""convbench: benchmark convolution algorithms for every layer you care about.

Public API::

    convbench.conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1,
                     algo="direct", backend="cpu")
    convbench.algorithms("cpu")
    convbench.ConvProblem.parse('mb8ic64ih56oc64kh3ph1n"res2a_branch2b"')
    convbench.reference(x, w, bias, stride=..., padding=..., dilation=..., groups=...)
"""

from convbench.api import auto_kernel, conv2d
from convbench.errors import UnsupportedProblem
from convbench.problem import ConvProblem
from convbench.reference import reference
from convbench.registry import Kernel, algorithms, get_kernel, kernels, register

__all__ = [
    "ConvProblem",
    "Kernel",
    "UnsupportedProblem",
    "algorithms",
    "auto_kernel",
    "conv2d",
    "get_kernel",
    "kernels",
    "reference",
    "register",
]
__version__ = "0.1.0"
