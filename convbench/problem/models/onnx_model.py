"""Convolution layers of an ONNX model, read from its graph.

:func:`layers_from_onnx` fixes the graph's input shapes (those given, and
the static ones it declares), runs ``onnx.shape_inference`` and reads every
``Conv`` node of the main graph: its input and weight shapes, and its
attributes ``kernel_shape``, ``strides``, ``dilations``, ``group``, ``pads``
(which may be asymmetric: ``[top, left, bottom, right]``) and ``auto_pad``
(``SAME_UPPER``, ``SAME_LOWER``, ``VALID``), and whether it has a bias (a
third input).

* A 1-D ``Conv`` (rank-3 input) becomes a 2-D problem of height 1.
* 3-D convolutions, ``ConvTranspose``, the integer convolutions
  (``ConvInteger``, ``QLinearConv``), a ``Conv`` whose input shape shape
  inference cannot give, and one inside a subgraph (the body of an ``If``
  or ``Loop``) are reported as unmodellable, with the reason.
* A ``Pad`` node in front of a ``Conv`` is not folded into it (as with
  PyTorch's ``nn.ZeroPad2d``): the descriptor has the padded input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from convbench.errors import MissingExtra
from convbench.problem.conv_problem import ConvProblem, normalize_dtype
from convbench.problem.models.layers import ConvCall, ModelLayers, collect

ONNX_HINT = "reading an ONNX model needs the onnx package: pip install 'convbench[models]'"
PADDING_NOTE = ("A Pad node in front of a Conv is not folded into it: the conv's descriptor "
                "has the padded input.")
#: Operators that are convolutions convbench does not model, and why.
UNMODELLED_OPS = {"ConvTranspose": "transposed convolution is not modelled",
                  "ConvInteger": "integer convolution is not modelled",
                  "QLinearConv": "quantized (integer) convolution is not modelled"}


def _onnx() -> Any:
    try:
        import onnx  # noqa: PLC0415 -- optional: the models extra
    except ImportError as exc:
        raise MissingExtra(f"{ONNX_HINT} ({exc})") from None
    return onnx


def layers_from_onnx(model: Any, inputs: Mapping[str, Sequence[int]] | None = None, *,
                     source: str | None = None) -> ModelLayers:
    """The distinct convolution layers of an ONNX model.

    Parameters
    ----------
    model : str, path or onnx.ModelProto
        The ``.onnx`` file or a loaded model (left unchanged).
    inputs : mapping of str to shape, optional
        Shapes of graph inputs, e.g. ``{"images": (1, 3, 224, 224)}``; needed for
        every input with a dynamic dimension (a named ``dim_param`` or none). A
        model with a single input also takes ``{"": shape}``.
    source : str, optional
        What the suite's heading calls the model (default: the file's name).

    Returns
    -------
    ModelLayers

    Raises
    ------
    MissingExtra
        onnx is not installed (the message says what to install).
    ValueError
        A dynamic input without a shape (the message names the input), a
        shape for an input the graph does not have or that contradicts its
        static dimensions, or a file that is not an ONNX model.
    """
    onnx = _onnx()
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX model at {str(path)!r}")
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001 -- protobuf's DecodeError and friends
            raise ValueError(f"{path} is not an ONNX model: {type(exc).__name__}: {exc}") \
                from None
        source = source or path.name
    elif isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        source = source or (proto.graph.name or "ONNX model")
    else:
        raise TypeError(f"model must be a path to an .onnx file or an onnx.ModelProto, got "
                        f"{type(model).__name__}")
    fixed = _fix_inputs(onnx, proto, dict(inputs or {}), source)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001 -- inference errors name the node; pass them on
        raise ValueError(f"shape inference failed on {source}: {type(exc).__name__}: {exc}") \
            from None
    calls = _conv_calls(onnx, inferred.graph)
    text = ", ".join(f"{name}={'x'.join(map(str, shape))}" for name, shape in fixed.items())
    return collect(calls, source, text or "(no inputs)", "ONNX graph, onnx.shape_inference",
                   notes=[PADDING_NOTE])


def _dims(onnx: Any, value_info: Any) -> list[int | str | None] | None:
    """A value's shape: ints, the names of symbolic dimensions, None where unknown."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            out.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            out.append(dim.dim_param)
        else:
            out.append(None)
    return out


def _fix_inputs(onnx: Any, proto: Any, given: dict[str, Sequence[int]],
                source: str) -> dict[str, tuple[int, ...]]:
    """Write the given shapes into ``proto``'s inputs; return every input's static shape."""
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    real = [v for v in graph.input if v.name not in initializers]
    names = [v.name for v in real]
    if "" in given:
        if len(real) != 1:
            raise ValueError(f"{source} has {len(real)} inputs ({', '.join(names)}): name "
                             f"the one a shape is for, as NAME=SHAPE")
        given[names[0]] = given.pop("")
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"{source} has no input {', '.join(map(repr, unknown))}; its inputs "
                         f"are {', '.join(map(repr, names)) or 'none'}")
    fixed: dict[str, tuple[int, ...]] = {}
    for value in real:
        dims = _dims(onnx, value)
        shape = given.get(value.name)
        if shape is not None:
            shape = tuple(int(d) for d in shape)
            if dims is not None and (len(dims) != len(shape) or any(
                    isinstance(d, int) and d != s for d, s in zip(dims, shape, strict=False))):
                raise ValueError(f"input {value.name!r} of {source} has shape "
                                 f"{_show(dims)}; the given {list(shape)} contradicts it")
            tensor = value.type.tensor_type
            tensor.shape.Clear()
            for size in shape:
                tensor.shape.dim.add().dim_value = size
            fixed[value.name] = shape
            continue
        if dims is None or any(not isinstance(d, int) for d in dims):
            dynamic = ", ".join("?" if d is None else repr(d) for d in dims or []
                                if not isinstance(d, int))
            which = ("no shape" if dims is None else
                     f"dynamic dimension(s) {dynamic} in shape {_show(dims)}")
            example = ",".join(str(d) if isinstance(d, int) else "N" for d in dims or [])
            raise ValueError(f"input {value.name!r} of {source} has {which}; give its shape, "
                             f"e.g. --input {value.name}={example or '1,3,224,224'}")
        fixed[value.name] = tuple(dims)
    return fixed


def _show(dims: list | None) -> str:
    return "unknown" if dims is None else "[" + ", ".join(
        "?" if d is None else str(d) for d in dims) + "]"


def _conv_calls(onnx: Any, graph: Any) -> list[ConvCall]:
    """A :class:`ConvCall` for every convolution node, in graph order."""
    shapes: dict[str, list[int | str | None] | None] = {}
    types: dict[str, int] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        shapes[value.name] = _dims(onnx, value)
        types[value.name] = value.type.tensor_type.elem_type
    for tensor in graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
        types[tensor.name] = tensor.data_type
    calls = []
    for i, node in enumerate(graph.node):
        path = (node.name or f"{node.op_type}_{i}").replace('"', "'")
        if node.op_type == "Conv":
            calls.append(_conv(onnx, node, path, shapes, types))
        elif node.op_type in UNMODELLED_OPS:
            calls.append(ConvCall(path, node.op_type, reason=UNMODELLED_OPS[node.op_type]))
        calls += _in_subgraphs(onnx, node, path)
    return calls


def _in_subgraphs(onnx: Any, node: Any, path: str) -> list[ConvCall]:
    """The convolutions in a node's subgraphs (If, Loop, Scan bodies): not modelled."""
    out = []
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else \
            list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else []
        for sub in graphs:
            for j, inner in enumerate(sub.node):
                inner_path = f"{path}/{attr.name}/{inner.name or f'{inner.op_type}_{j}'}"
                if inner.op_type == "Conv" or inner.op_type in UNMODELLED_OPS:
                    out.append(ConvCall(inner_path.replace('"', "'"), inner.op_type,
                                        reason=f"inside the {node.op_type} node's subgraph "
                                               f"{attr.name!r}, whose shapes are not read"))
                out += _in_subgraphs(onnx, inner, inner_path)
    return out


def _conv(onnx: Any, node: Any, path: str, shapes: dict, types: dict) -> ConvCall:
    """The problem of one ``Conv`` node, or why there is none."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
    for what, dims, name in (("input", x, node.input[0]), ("weight", w, node.input[1])):
        if dims is None or any(not isinstance(d, int) for d in dims):
            return ConvCall(path, "Conv", reason=f"shape inference gives its {what} "
                                                 f"{name!r} the shape {_show(dims)}")
    if len(x) == 5:
        return ConvCall(path, "Conv", reason="3-D convolution is not supported")
    if len(x) not in (3, 4) or len(w) != len(x):
        return ConvCall(path, "Conv", reason=f"input {_show(x)} and weight {_show(w)} are "
                                             "not a 1-D or 2-D convolution's")
    try:
        dtype = normalize_dtype(onnx.helper.tensor_dtype_to_np_dtype(types[node.input[0]]).name)
    except (TypeError, KeyError, ValueError):
        return ConvCall(path, "Conv", reason=f"its input's ONNX type "
                                             f"{types.get(node.input[0])} is not float16, "
                                             "float32 or float64")
    spatial = len(x) - 2
    kernel = list(attrs.get("kernel_shape") or w[2:])
    strides = list(attrs.get("strides") or [1] * spatial)
    dilations = list(attrs.get("dilations") or [1] * spatial)
    pads = list(attrs.get("pads") or [0] * (2 * spatial))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    extent = list(x[2:])
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(extent, kernel, strides, dilations, upper=auto_pad == "SAME_UPPER")
    elif auto_pad == "VALID":
        pads = [0] * (2 * spatial)
    elif auto_pad != "NOTSET":
        return ConvCall(path, "Conv", reason=f"unknown auto_pad {auto_pad!r}")
    begin, end = pads[:spatial], pads[spatial:]
    if spatial == 1:  # a 1-D convolution is a 2-D one of height 1
        extent, kernel, strides, dilations = [1, *extent], [1, *kernel], [1, *strides], \
            [1, *dilations]
        begin, end = [0, *begin], [0, *end]
    bias = len(node.input) > 2 and node.input[2] != ""
    try:
        problem = ConvProblem.make(
            x[0], x[1], extent[0], extent[1], w[0], kernel[0], kernel[1],
            stride=tuple(strides), dilation=tuple(dilations),
            padding=((begin[0], end[0]), (begin[1], end[1])), groups=int(attrs.get("group", 1)),
            bias=bias, dtype=dtype, name=path)
    except (ValueError, TypeError) as exc:
        return ConvCall(path, "Conv", reason=str(exc))
    if problem.weight_shape[1] != w[1] or list(kernel[-spatial:]) != list(w[2:]):
        return ConvCall(path, "Conv", reason=f"weight shape {_show(w)} does not fit input "
                                             f"channels {x[1]}, group {problem.g} and "
                                             f"kernel_shape {kernel[-spatial:]}")
    out = shapes.get(node.output[0])
    if out is not None and all(isinstance(d, int) for d in out):
        out = tuple(out) if spatial == 2 else (out[0], out[1], 1, out[2])
    else:
        out = None
    return ConvCall(path, "Conv", problem, output_shape=out)


def _same_pads(extent: list[int], kernel: list[int], strides: list[int],
               dilations: list[int], *, upper: bool) -> list[int]:
    """``auto_pad`` SAME_UPPER/SAME_LOWER: output ``ceil(in / stride)``, the odd pixel of
    padding at the end (UPPER) or the beginning (LOWER); ``[begins..., ends...]``."""
    begins, ends = [], []
    for size, k, s, d in zip(extent, kernel, strides, dilations, strict=True):
        total = max(0, (math.ceil(size / s) - 1) * s + d * (k - 1) + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends
