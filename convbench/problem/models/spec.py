"""A model as a command line names it: ``MODULE:FACTORY`` or a ``.onnx`` path, with shapes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from convbench.problem.models.layers import ModelLayers


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` (or ``1x3x224x224``) -> ``(1, 3, 224, 224)``."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ValueError(f"a shape is positive integers separated by commas, e.g. "
                         f"1,3,224,224, got {text!r}")
    return shape


def parse_inputs(texts: Sequence[str]) -> list[tuple[str, tuple[int, ...]]]:
    """``--input`` values: ``SHAPE`` or ``NAME=SHAPE`` -> ``[(name or "", shape)]``."""
    out = []
    for text in texts:
        name, _, shape = text.rpartition("=")
        out.append((name.strip(), parse_shape(shape.strip())))
    return out


def is_onnx(spec: str) -> bool:
    """Whether a model spec names an ONNX file (by its ``.onnx`` suffix)."""
    return Path(spec).suffix.lower() == ".onnx"


def layers_from_spec(spec: str, inputs: Sequence[str]) -> ModelLayers:
    """The layers of the model ``spec`` names, with the ``--input`` values ``inputs``.

    Parameters
    ----------
    spec : str
        A path ending in ``.onnx``, or ``MODULE:FACTORY`` for PyTorch (a module
        or a ``.py`` file, and a factory called with no arguments).
    inputs : sequence of str
        ``SHAPE`` (``1,3,224,224``) or, for ONNX, ``NAME=SHAPE``. PyTorch needs at
        least one (several are the forward's positional inputs); ONNX needs
        one for each input with a dynamic dimension.

    Raises
    ------
    ValueError
        A bad spec or shape, a PyTorch model without ``--input``, a named input
        for a PyTorch model, or what the reader raises.
    MissingExtra
        The reader's package (torch, onnx) is missing; the message says what
        to install.
    """
    given = parse_inputs(inputs)
    if is_onnx(spec):
        from convbench.problem.models.onnx_model import layers_from_onnx  # noqa: PLC0415

        shapes: dict[str, tuple[int, ...]] = {}
        for name, shape in given:
            if name in shapes:
                raise ValueError(f"--input {name or 'SHAPE'} is given twice")
            shapes[name] = shape
        return layers_from_onnx(spec, shapes)
    from convbench.problem.models.torch_model import (  # noqa: PLC0415
        layers_from_torch,
        load_factory,
        require_torch,
    )

    if not given:
        raise ValueError(f"a PyTorch model needs its input shape: --input 1,3,224,224 "
                         f"(model {spec!r})")
    named = [name for name, _ in given if name]
    if named:
        raise ValueError(f"a PyTorch model's inputs are positional: give --input SHAPE, "
                         f"not NAME=SHAPE ({', '.join(named)})")
    require_torch()  # before the user's module imports it, so the message says what to do
    factory, label = load_factory(spec)
    return layers_from_torch(factory, [shape for _, shape in given], source=label)
