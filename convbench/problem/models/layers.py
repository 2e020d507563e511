"""The convolutions a model's forward pass runs, reduced to a suite.

A reader of a model (PyTorch, ONNX) reports every convolution it sees as a
:class:`ConvCall`: where in the model it is, the :class:`ConvProblem` it
computes, or why convbench cannot model it. :func:`collect` groups the calls
into a :class:`ModelLayers`: one suite layer per distinct problem, named by
the first module that runs it, with the number of calls as its repeat count,
and the unmodellable calls apart, with their reasons. Its
:meth:`~ModelLayers.suite_text` is an ordinary suite file, the interchange
between a model and every command that takes ``--suite``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from convbench.problem.conv_problem import ConvProblem
from convbench.problem.suites import SuiteLayer, parse_suite


@dataclass(frozen=True)
class ConvCall:
    """One convolution that a model ran.

    Attributes
    ----------
    path : str
        Where it is: the module path (``layer1.0.conv2``) or the graph node's name.
    op : str
        What it is: the module class (``Conv2d``) or the ONNX operator (``Conv``).
    problem : ConvProblem or None
        The problem it computes (named by ``path``); None when ``reason`` is set.
    reason : str or None
        Why convbench cannot model it (``"transposed convolution is not modelled"``).
    output_shape : tuple of int or None
        The output shape (NCHW, as the problem's) the model itself produced,
        where the reader saw it: a check on the problem's geometry.
    """

    path: str
    op: str
    problem: ConvProblem | None = None
    reason: str | None = None
    output_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if (self.problem is None) == (self.reason is None):
            raise ValueError(f"a ConvCall has a problem or a reason, not both or neither "
                             f"(at {self.path!r})")


@dataclass
class ModelLayers:
    """A model's distinct convolution layers and the ones convbench cannot model.

    Attributes
    ----------
    source : str
        What was read, for the suite's heading (``"torchvision.models:resnet50"``).
    inputs : str
        The input shapes it ran with (``"1x3x224x224"``).
    layers : list of SuiteLayer
        One per distinct problem, in the order the forward pass first ran it;
        ``repeat`` counts the calls with that problem.
    paths : list of list of str
        Per layer, every module path (or node) that runs it, first one first.
    unmodelled : list of ConvCall
        The calls with a ``reason`` instead of a problem.
    reader : str
        Which reader produced it (``"torch"`` or ``"onnx"``).
    notes : list of str
        Sentences the suite's heading carries (how the reader treats padding).
    """

    source: str
    inputs: str
    layers: list[SuiteLayer] = field(default_factory=list)
    paths: list[list[str]] = field(default_factory=list)
    unmodelled: list[ConvCall] = field(default_factory=list)
    reader: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def conv_count(self) -> int:
        """Convolutions the model runs that convbench models (sum of repeats)."""
        return sum(layer.repeat for layer in self.layers)

    def suite_text(self) -> str:
        """The layers as a suite file: a heading, one descriptor a line, comments.

        A layer that several modules run carries ``# repeat=N`` and the other
        paths; each unmodellable call is a comment line naming its module,
        its operator and the reason. :func:`~convbench.problem.suites.parse_suite`
        reads it back to :attr:`layers`.
        """
        lines = [f"# Convolution layers of {self.source} ({self.reader}), input {self.inputs}.",
                 f"# {len(self.layers)} distinct layers, {self.conv_count} convolutions in the "
                 "forward pass; '# repeat=N' counts identical ones.",
                 *(f"# {note}" for note in self.notes)]
        if self.unmodelled:
            lines.append(f"# {len(self.unmodelled)} convolution(s) convbench cannot model, "
                         "as comments:")
        for layer, paths in zip(self.layers, self.paths, strict=True):
            line = str(layer.problem)
            if layer.repeat > 1:
                line += f"  # repeat={layer.repeat}  also {', '.join(paths[1:])}"
            lines.append(line)
        lines += [f"# not modelled: {call.path} ({call.op}): {call.reason}"
                  for call in self.unmodelled]
        return "\n".join(lines) + "\n"

    def unmodelled_report(self) -> str:
        """One line per unmodellable call: what a command prints when it writes the suite."""
        return "\n".join(f"not modelled: {call.path} ({call.op}): {call.reason}"
                         for call in self.unmodelled)


def collect(calls: Iterable[ConvCall], source: str, inputs: str, reader: str,
            notes: Iterable[str] = ()) -> ModelLayers:
    """Group a forward pass's convolutions into distinct suite layers.

    Two calls are the same layer when their problems are equal but for the
    name. A call whose problem's output shape differs from the one the model
    produced (``output_shape``) is not trusted: it is unmodelled, with both
    shapes as the reason. A layer is named by the path of its first call; if that name is
    already taken (a module called again on another shape), ``@2``, ``@3``...
    is appended.

    Raises
    ------
    ValueError
        If the suite text would not read back to the same layers (a name
        convbench's descriptors cannot carry).
    """
    out = ModelLayers(source, inputs, reader=reader, notes=list(notes))
    index: dict[str, int] = {}
    taken: set[str] = set()
    for call in calls:
        if (call.problem is not None and call.output_shape is not None
                and tuple(call.output_shape) != call.problem.output_shape):
            call = ConvCall(call.path, call.op, reason=(
                f"its problem {call.problem} gives output {call.problem.output_shape}, "
                f"the model produced {tuple(call.output_shape)}"),
                output_shape=call.output_shape)
        if call.problem is None:
            out.unmodelled.append(call)
            continue
        key = str(call.problem.with_(name=""))
        if key in index:
            i = index[key]
            out.layers[i] = SuiteLayer(out.layers[i].problem, out.layers[i].repeat + 1)
            out.paths[i].append(call.path)
            continue
        name = call.path
        suffix = 2
        while name in taken:
            name, suffix = f"{call.path}@{suffix}", suffix + 1
        taken.add(name)
        problem = call.problem.with_(name=name)
        index[key] = len(out.layers)
        out.layers.append(SuiteLayer(problem, 1, str(problem)))
        out.paths.append([call.path])
    out.layers = [SuiteLayer(x.problem, x.repeat, str(x.problem)) for x in out.layers]
    back = parse_suite(out.suite_text(), f"<{source}>")
    if [(x.problem, x.repeat) for x in back] != [(x.problem, x.repeat) for x in out.layers]:
        raise ValueError(f"the layers of {source} do not survive their suite text; a module "
                         "name may hold a character descriptors cannot carry")
    return out
