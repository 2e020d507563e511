"""Suites from models: the distinct convolution layers of a PyTorch or ONNX model.

:func:`layers_from_torch` runs a PyTorch model's forward pass with hooks on
its convolution modules; :func:`layers_from_onnx` reads an ONNX graph's
``Conv`` nodes with the shapes of ``onnx.shape_inference``;
:func:`layers_from_spec` takes what a command line gives (``MODULE:FACTORY``
or a ``.onnx`` path). Each returns a :class:`ModelLayers`, whose
``suite_text()`` is a suite file.
"""

from convbench.problem.models.layers import ConvCall, ModelLayers, collect
from convbench.problem.models.onnx_model import layers_from_onnx
from convbench.problem.models.spec import layers_from_spec, parse_inputs
from convbench.problem.models.torch_model import layers_from_torch, load_factory

__all__ = [
    "ConvCall",
    "ModelLayers",
    "collect",
    "layers_from_onnx",
    "layers_from_spec",
    "layers_from_torch",
    "load_factory",
    "parse_inputs",
]
