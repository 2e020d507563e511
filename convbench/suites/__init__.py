"""Named layer sets: one benchdnn descriptor a line, ``#`` comments.

A comment of the form ``# repeat=N`` after a descriptor says the network
contains N identical layers of that shape, so whole-network time is
``sum(time * repeat)``. ``load_suite`` also takes a path to a user's file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from convbench.problem import ConvProblem

_REPEAT_RE = re.compile(r"\brepeat=(\d+)\b")


@dataclass(frozen=True)
class SuiteLayer:
    """One line of a suite: the problem and how often the network repeats it."""

    problem: ConvProblem
    repeat: int = 1


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
        try:
            problem = ConvProblem.parse(line)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}:{lineno}: {exc}") from None
        m = _REPEAT_RE.search(comment)
        repeat = int(m.group(1)) if m else 1
        if repeat < 1:
            raise ValueError(f"{source}:{lineno}: repeat must be >= 1, got {repeat}")
        layers.append(SuiteLayer(problem, repeat))
    return layers


def load_suite(name_or_path: str, *, batch: int | None = None, dtype: str | None = None,
               bias: bool | None = None) -> list[SuiteLayer]:
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
    """
    path = suite_path(name_or_path)
    layers = parse_suite(path.read_text(), str(path))
    changes = {}
    if batch is not None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        changes["mb"] = batch
    if dtype is not None:
        changes["dtype"] = dtype
    if bias is not None:
        changes["bias"] = bias
    if changes:
        layers = [SuiteLayer(layer.problem.with_(**changes), layer.repeat) for layer in layers]
    return layers
