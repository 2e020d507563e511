"""Convolution layers of a PyTorch model, read from one forward pass.

:func:`layers_from_torch` runs the model once with a hook on every
convolution module and reads, at the moment each one runs, its actual input
shape, its parameters (channels, kernel, stride, padding, including
``"same"``/``"valid"``, dilation, groups), its ``padding_mode`` and whether it
has a bias. The pass runs on PyTorch's meta device where the model allows
(no memory for weights or activations, no arithmetic), and otherwise on the
CPU with zeros.

* ``nn.Conv1d`` becomes a 2-D problem of height 1, as 1-D descriptors are.
* ``nn.Conv3d``, every transposed convolution and a ``padding_mode`` other
  than ``"zeros"`` are reported as unmodellable, with the reason.
* A separate ``nn.ZeroPad2d`` (or any padding op) in front of a convolution
  is **not folded** into its padding: the convolution's descriptor has the
  padded input it really receives and its own padding. That is the
  convolution the model runs, and its shape can be checked against the
  model's; folding would need the graph (the padded tensor may feed other
  layers too) and would describe a fused layer the model does not have.
* Convolutions called as functions (``F.conv2d``) outside a convolution
  module are not seen.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from convbench.errors import MissingExtra
from convbench.problem.conv_problem import ConvProblem, normalize_dtype
from convbench.problem.models.layers import ConvCall, ModelLayers, collect

#: What the suite heading says about padding ops in front of a convolution.
PADDING_NOTE = ("A padding layer (nn.ZeroPad2d) in front of a conv is not folded into it: the "
                "conv's descriptor has the padded input.")
TORCH_HINT = "reading a PyTorch model needs torch: pip install 'convbench[compare]'"


def require_torch() -> Any:
    """The torch module, or an ImportError that says how to install it."""
    try:
        import torch  # noqa: PLC0415 -- optional: the compare extra
    except ImportError as exc:
        raise MissingExtra(f"{TORCH_HINT} ({exc})") from None
    return torch


def load_factory(spec: str) -> tuple[Callable[[], Any], str]:
    """The factory a ``MODULE:FACTORY`` spec names, and a label for it.

    ``MODULE`` is an importable module (``torchvision.models``) or a path to a
    ``.py`` file (whose folder is put on ``sys.path`` while it is imported, so
    that it can import its neighbours); ``FACTORY`` is an attribute of it
    that is called with no arguments (a function or an ``nn.Module`` class).

    Raises
    ------
    ValueError
        A spec without a colon, a module that does not import, or a missing or
        uncallable attribute.
    """
    if not isinstance(spec, str) or spec.count(":") < 1:
        raise ValueError(f"a model is given as MODULE:FACTORY (e.g. "
                         f"'torchvision.models:resnet50' or 'mymodel.py:build'), got {spec!r}")
    where, _, attr = spec.rpartition(":")
    if not where or not attr.isidentifier():
        raise ValueError(f"a model is given as MODULE:FACTORY, with FACTORY a name, got {spec!r}")
    path = Path(where)
    try:
        if where.endswith(".py") or path.is_file():
            if not path.is_file():
                raise ValueError(f"no model file {where!r}")
            module = _import_file(path)
        else:
            module = importlib.import_module(where)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a user's module may raise anything at import
        raise ValueError(f"cannot import {where!r} for model {spec!r}: "
                         f"{type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ValueError(f"{where!r} has no callable {attr!r} (model {spec!r})")
    return factory, spec


def _import_file(path: Path) -> Any:
    """Import a ``.py`` file as a module of its own, its folder on ``sys.path`` meanwhile."""
    name = f"convbench_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def _shapes(input_shape: Any) -> list[tuple[int, ...]]:
    """One shape ``(1, 3, 224, 224)`` or a list of them (one per positional input)."""
    def shape(value: Any) -> tuple[int, ...]:
        if (isinstance(value, Sequence) and not isinstance(value, str) and value
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                        for v in value)):
            return tuple(int(v) for v in value)
        raise ValueError(f"an input shape is a sequence of positive ints, e.g. (1, 3, 224, "
                         f"224), got {value!r}")

    if (isinstance(input_shape, Sequence) and input_shape
            and all(isinstance(v, Sequence) and not isinstance(v, str) for v in input_shape)):
        return [shape(v) for v in input_shape]
    return [shape(input_shape)]


def shape_text(shapes: Sequence[Sequence[int]]) -> str:
    """``1x3x224x224``, several joined by ``", "``."""
    return ", ".join("x".join(str(d) for d in s) for s in shapes)


def layers_from_torch(model: Any, input_shape: Any, *, source: str | None = None,
                      dtype: str | None = None) -> ModelLayers:
    """The distinct convolution layers of a PyTorch model's forward pass.

    Parameters
    ----------
    model : torch.nn.Module or callable
        A module, or a factory called with no arguments that returns one.
        A factory is built on the meta device (no weights are allocated);
        a module keeps its weights, and its forward pass runs with meta
        copies of them. Either falls back to the CPU with zeros where the
        model does not run on meta (data-dependent control flow). The
        module's train/eval flags are restored afterwards; the pass runs in
        eval mode.
    input_shape : sequence of int, or a sequence of them
        The input's shape, e.g. ``(1, 3, 224, 224)``; several shapes are the
        forward's positional inputs.
    source : str, optional
        What the suite's heading calls the model (default: its class name).
    dtype : str, optional
        The inputs' dtype; default: that of the model's first floating-point
        parameter (float32 for a model without one).

    Returns
    -------
    ModelLayers
        ``layers`` as a suite would hold them (see
        :func:`~convbench.problem.models.layers.collect`).

    Raises
    ------
    MissingExtra
        torch is not installed (the message says what to install).
    ValueError
        A bad input shape, or a model whose forward pass fails on it.
    TypeError
        ``model`` is neither a module nor a factory of one.
    """
    torch = require_torch()
    shapes = _shapes(input_shape)
    dtype = None if dtype is None else normalize_dtype(dtype)
    factory = None
    if not isinstance(model, torch.nn.Module):
        if not callable(model):
            raise TypeError(f"model must be a torch.nn.Module or a factory of one, got "
                            f"{type(model).__name__}")
        factory, model = model, None
    errors = []
    for device in ("meta", None):
        try:
            if factory is not None:
                with torch.device(device or "cpu"):
                    model = factory()
                if not isinstance(model, torch.nn.Module):
                    raise _NotAModule(f"the factory returned a {type(model).__name__}, "
                                      "not a torch.nn.Module")
            calls, where = _forward_calls(torch, model, shapes, _input_dtype(torch, model, dtype),
                                          device)
        except _NotAModule as exc:
            raise TypeError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 -- meta is tried first; the CPU says what fails
            errors.append(f"on {device or 'its own device'}: {type(exc).__name__}: {exc}")
            continue
        label = source or type(model).__name__
        return collect(calls, label, shape_text(shapes), f"PyTorch forward pass on {where}",
                       notes=[PADDING_NOTE])
    raise ValueError(f"the forward pass of {source or type(model).__name__} on input "
                     f"{shape_text(shapes)} failed: {'; '.join(errors)}")


def _input_dtype(torch: Any, model: Any, dtype: str | None) -> Any:
    """``dtype`` as torch's, else the model's first floating-point parameter's."""
    if dtype is not None:
        return getattr(torch, dtype)
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


class _NotAModule(Exception):
    """A factory returned something else than a module."""


def _forward_calls(torch: Any, model: Any, shapes: list[tuple[int, ...]], dtype: Any,
                   device: str | None) -> tuple[list[ConvCall], str]:
    """Run ``model`` once and return what each convolution module saw, and where it ran.

    ``device="meta"`` runs on meta tensors (a module with real weights runs
    with meta copies of them); ``None`` runs on the device of the model's
    first parameter (the CPU if it has none), with zeros.
    """
    nn = torch.nn
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d)
    paths = {id(m): path for path, m in model.named_modules()}
    calls: list[ConvCall] = []
    pending: dict[int, list[int]] = {}
    handles = []

    def before(module: Any, args: tuple) -> None:
        path = paths.get(id(module)) or type(module).__name__
        pending.setdefault(id(module), []).append(len(calls))
        calls.append(conv_call(module, path, tuple(args[0].shape), args[0].dtype))

    def after(module: Any, args: tuple, output: Any) -> None:
        i = pending[id(module)].pop()
        call = calls[i]
        calls[i] = ConvCall(call.path, call.op, call.problem, call.reason,
                            nchw(module, tuple(output.shape)))

    tensors = [*model.named_parameters(), *model.named_buffers()]
    if device is None:
        device = str(tensors[0][1].device) if tensors else "cpu"
    for module in model.modules():
        if isinstance(module, kinds):
            handles += [module.register_forward_pre_hook(before),
                        module.register_forward_hook(after)]
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        inputs = tuple(torch.zeros(s, dtype=dtype, device=device) for s in shapes)
        with torch.no_grad(), warnings.catch_warnings():
            # The model's own warnings (PyTorch's about 'same' padding) are not the suite's.
            warnings.simplefilter("ignore", UserWarning)
            if device == "meta" and any(t.device.type != "meta" for _, t in tensors):
                torch.func.functional_call(model, {k: v.to("meta") for k, v in tensors},
                                           inputs)
            else:
                model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        for m, flag in training.items():
            m.train(flag)
    return calls, f"the {device} device"


def nchw(module: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A convolution module's input or output shape as the 2-D problem's NCHW.

    An unbatched shape gets batch 1; a 1-D one (``nn.Conv1d``) height 1.
    """
    import torch.nn as nn  # noqa: PLC0415 -- torch is here: the module is one of its

    spatial = {nn.Conv1d: 1, nn.ConvTranspose1d: 1, nn.Conv3d: 3, nn.ConvTranspose3d: 3}
    dims = next((d for kind, d in spatial.items() if isinstance(module, kind)), 2)
    if len(shape) == dims + 1:
        shape = (1, *shape)
    if dims == 1:
        shape = (shape[0], shape[1], 1, shape[2])
    return shape


def conv_call(module: Any, path: str, shape: tuple[int, ...], dtype: Any) -> ConvCall:
    """What a convolution module computes on an input of ``shape``, or why it cannot be modelled.

    ``shape`` is NC(D)HW or, for an unbatched input, C(D)HW (batch 1).
    """
    import torch.nn as nn  # noqa: PLC0415 -- torch is here: the module is one of its

    op = type(module).__name__
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return ConvCall(path, op, reason="transposed convolution is not modelled")
    if isinstance(module, nn.Conv3d):
        return ConvCall(path, op, reason="3-D convolution is not supported")
    if module.padding_mode != "zeros":
        return ConvCall(path, op, reason=f"padding_mode={module.padding_mode!r}: convbench "
                                         "pads with zeros only")
    try:
        dtype_name = normalize_dtype(str(dtype).removeprefix("torch."))
    except TypeError:
        return ConvCall(path, op, reason=f"dtype {str(dtype).removeprefix('torch.')} is not "
                                         "float16, float32 or float64")
    n, c, height, width = nchw(module, shape)
    if isinstance(module, nn.Conv1d):
        # A 1-D convolution is a 2-D one of height 1, as 1-D descriptors are.
        kernel, stride, dilation = ((1, *module.kernel_size), (1, *module.stride),
                                    (1, *module.dilation))
        padding = module.padding if isinstance(module.padding, str) else (0, *module.padding)
    else:
        kernel, stride, dilation = module.kernel_size, module.stride, module.dilation
        padding = module.padding
    problem = ConvProblem.make(
        n, c, height, width, module.out_channels, kernel[0], kernel[1],
        stride=tuple(stride), padding=padding if isinstance(padding, str) else tuple(padding),
        dilation=tuple(dilation), groups=module.groups, bias=module.bias is not None,
        dtype=dtype_name, name=path)
    return ConvCall(path, op, problem)
