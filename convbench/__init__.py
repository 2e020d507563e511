"""convbench: benchmark convolution algorithms for every layer you care about.

Public API::

    convbench.conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1,
                     algo="direct", backend="cpu")
    f = convbench.plan(x.shape, w, bias, stride=1, padding=0, backend="cpu")  # f(x) -> y
    convbench.algorithms("cpu")
    convbench.ConvProblem.parse('mb8ic64ih56oc64kh3ph1n"res2a_branch2b"')
    convbench.reference(x, w, bias, stride=..., padding=..., dilation=..., groups=...)
    dx = convbench.conv2d_backward_data(dy, w, x.shape, stride=1, ..., algo="direct")
    dw = convbench.conv2d_backward_weights(x, dy, w.shape, ...)   # (dw, db) with bias_grad=True
    f = convbench.plan(x.shape, w, dir="bwd_d")                   # f(dy) -> dx
    layers = convbench.layers_from_torch(model, (1, 3, 224, 224))  # .suite_text()
    layers = convbench.layers_from_onnx("model.onnx", {"input": (1, 3, 224, 224)})

The package is laid out by job: ``problem`` (what a convolution is),
``measure`` (how numbers are taken), ``store`` (what is kept), ``present``
(how it is shown), ``cli`` (the command); ``contract`` and ``registry`` are
what kernels and the harness share. The kernels themselves are the
subpackage ``convbench.kernels``; :func:`convbench.registry.kernels` lists the
registered ones.
"""

from convbench.api import auto_kernel, conv2d, conv2d_backward_data, conv2d_backward_weights
from convbench.contract import ErrorModel, Kernel, KernelBase, Prepared
from convbench.errors import UnsupportedProblem
from convbench.plans.bound import BackwardPlan, Plan, plan
from convbench.problem import ConvProblem
from convbench.problem.models import layers_from_onnx, layers_from_torch
from convbench.problem.reference import (
    reference,
    reference_backward_data,
    reference_backward_weights,
)
from convbench.registry import algorithms, get_kernel, register

__all__ = [
    "BackwardPlan",
    "ConvProblem",
    "ErrorModel",
    "Kernel",
    "KernelBase",
    "Plan",
    "Prepared",
    "UnsupportedProblem",
    "algorithms",
    "auto_kernel",
    "conv2d",
    "conv2d_backward_data",
    "conv2d_backward_weights",
    "get_kernel",
    "layers_from_onnx",
    "layers_from_torch",
    "plan",
    "reference",
    "reference_backward_data",
    "reference_backward_weights",
    "register",
]
__version__ = "0.1.0"
