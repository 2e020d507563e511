"""Named layer sets: one benchdnn descriptor a line, ``#`` comments.

A comment of the form ``# repeat=N`` after a descriptor says the network
contains N identical layers of that shape, so whole-network time is
``sum(time * repeat)``. :func:`load_suite` also takes a path to a user's file,
and :func:`select_layers` turns a command line's suites, descriptors and
overrides into the layers to run.

A line that parses but describes a problem convbench does not model (a 3-D
convolution) is kept as a layer with ``unsupported`` set, so that a sweep can
record it as skipped with the reason; any other bad line stops the loading,
naming the file and the line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from convbench.problem.conv_problem import ConvProblem, UnsupportedDescriptor

_REPEAT_RE = re.compile(r"\brepeat=(\d+)\b")
_NAME_RE = re.compile(r'n(?:"([^"]*)"|(\S+))\s*$')


@dataclass(frozen=True)
class SuiteLayer:
    """One line of a suite: the problem and how often the network repeats it.

    Attributes
    ----------
    problem : ConvProblem or None
        ``None`` when the line describes a problem convbench cannot model.
    repeat : int
    text : str
        The descriptor as written (the record's key when ``problem`` is None).
    unsupported : str or None
        Why the line cannot run (e.g. ``"3-D convolution is not supported"``).
    """

    problem: ConvProblem | None
    repeat: int = 1
    text: str = ""
    unsupported: str | None = None

    @property
    def descriptor(self) -> str:
        """Canonical descriptor of the problem, or the line's own text."""
        return str(self.problem) if self.problem is not None else self.text

    @property
    def name(self) -> str:
        if self.problem is not None:
            return self.problem.name
        m = _NAME_RE.search(self.text)
        return (m.group(1) if m.group(1) is not None else m.group(2)) if m else ""

    def with_(self, **changes: Any) -> SuiteLayer:
        """The layer with its problem's fields replaced (unsupported lines stay as they are)."""
        if self.problem is None or not changes:
            return self
        return replace(self, problem=self.problem.with_(**changes))


def list_suites() -> list[str]:
    """Names of the suites that ship with convbench."""
    folder = resources.files(__name__)
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))


def suite_path(name_or_path: str) -> Path:
    """The file behind a suite name, or the path itself if it is a file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = Path(str(resources.files(__name__).joinpath(f"{name_or_path}.txt")))
    if shipped.is_file():
        return shipped
    raise ValueError(f"no suite {name_or_path!r}: not a file, and not one of "
                     f"{', '.join(list_suites())}")


def parse_suite(text: str, source: str = "<suite>") -> list[SuiteLayer]:
    """Parse suite text; errors name the file and line."""
    layers = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line, _, comment = raw.partition("#")
        # A '#' inside a quoted name is part of the name, not a comment.
        if line.count('"') % 2:
            line, _, comment = raw.rpartition("#") if raw.count("#") > 1 else (raw, "", "")
        line = line.strip()
        if not line:
            continue
        m = _REPEAT_RE.search(comment)
        repeat = int(m.group(1)) if m else 1
        if repeat < 1:
            raise ValueError(f"{source}:{lineno}: repeat must be >= 1, got {repeat}")
        try:
            layers.append(SuiteLayer(ConvProblem.parse(line), repeat, line))
        except UnsupportedDescriptor as exc:
            layers.append(SuiteLayer(None, repeat, line, unsupported=str(exc)))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}:{lineno}: {exc}") from None
    return layers


def load_suite(name_or_path: str, *, batch: int | None = None, dtype: str | None = None,
               bias: bool | None = None, fpmath: str | None = None) -> list[SuiteLayer]:
    """Load a shipped suite by name or a user's file by path.

    Parameters
    ----------
    name_or_path : str
    batch : int, optional
        Overrides every layer's ``mb`` (like benchdnn's ``--mb``).
    dtype : str, optional
        Overrides the dtype.
    bias : bool, optional
        Overrides whether layers have a bias.
    fpmath : str, optional
        Overrides the math mode (``"strict"`` or ``"tf32"``).
    """
    path = suite_path(name_or_path)
    layers = parse_suite(path.read_text(), str(path))
    return [layer.with_(**overrides(batch=batch, dtype=dtype, bias=bias, fpmath=fpmath))
            for layer in layers]


def overrides(*, batch: int | None = None, dtype: str | None = None, bias: bool | None = None,
              fpmath: str | None = None) -> dict[str, Any]:
    """ConvProblem field changes for the given overrides (``None``: keep the layer's)."""
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    changes = {"mb": batch, "dtype": dtype, "bias": bias, "fpmath": fpmath}
    return {k: v for k, v in changes.items() if v is not None}


def select_layers(suites: Iterable[str] = (), descriptors: Iterable[str] = (), *,
                  match: str | None = None,
                  extra: Iterable[tuple[str, SuiteLayer]] = (),
                  **override: Any) -> list[tuple[str, SuiteLayer]]:
    """The (suite label, layer) pairs a command line names.

    Parameters
    ----------
    suites : iterable of str
        Suite names or files; each layer is labelled with the file's stem.
    descriptors : iterable of str
        Descriptors given on the command line, labelled ``"custom"``.
    match : str, optional
        Regex on layer names or descriptors.
    extra : iterable of (str, SuiteLayer)
        Layers labelled already (a model's), after the suites and descriptors.
    **override
        ``batch``, ``dtype``, ``bias``, ``fpmath`` (see :func:`overrides`).

    Raises
    ------
    ValueError
        Nothing selected, a bad descriptor, or a regex that selects no layer.
    """
    changes = overrides(**override)
    chosen: list[tuple[str, SuiteLayer]] = []
    for suite in suites:
        chosen += [(Path(suite).stem, layer.with_(**changes)) for layer in load_suite(suite)]
    for text in descriptors:
        chosen.append(("custom", SuiteLayer(ConvProblem.parse(text), 1, text).with_(**changes)))
    chosen += [(label, layer.with_(**changes)) for label, layer in extra]
    if not chosen:
        raise ValueError("nothing to run: give --suite NAME, --model SPEC or descriptors")
    if match:
        pattern = re.compile(match)
        chosen = [(s, x) for s, x in chosen
                  if pattern.search(x.name) or pattern.search(x.descriptor)]
        if not chosen:
            raise ValueError(f"--match {match!r} selects no layer")
    return chosen
