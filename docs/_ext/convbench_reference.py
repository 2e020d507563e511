"""Reference pages generated from the code: the command line from its argument parser, the
kernel list from the registry, so that neither can drift from what convbench does.

Directives
----------
``convbench-cli``
    A section per ``convbench`` subcommand, with its usage and its options.
``convbench-kernels BACKEND``
    The kernels and baselines registered for a backend, with the directions each computes.
"""

from __future__ import annotations

import argparse
from typing import Any

from convbench_results import table_node
from docutils import nodes
from docutils.parsers.rst import Directive


def _expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    try:
        return parser._get_formatter()._expand_help(action)  # noqa: SLF001 -- argparse's own
    except (KeyError, TypeError, ValueError):
        return action.help


def cli_commands() -> list[tuple[str, argparse.ArgumentParser]]:
    """``(name, parser)`` of every ``convbench`` subcommand, from :func:`build_parser`."""
    from convbench.cli import build_parser  # noqa: PLC0415

    parser = build_parser()
    sub = next(a for a in parser._actions  # noqa: SLF001
               if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return list(sub.choices.items())


def cli_options(parser: argparse.ArgumentParser) -> list[list[str]]:
    """``[option, help]`` rows of a parser's arguments (positional ones first)."""
    rows = []
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._HelpAction):  # noqa: SLF001
            continue
        name = ", ".join(action.option_strings) or action.metavar or action.dest
        if action.option_strings and action.nargs != 0:
            metavar = action.metavar or (action.dest.upper() if not action.choices else
                                         "{" + ",".join(map(str, action.choices)) + "}")
            name += f" {metavar if isinstance(metavar, str) else ' '.join(metavar)}"
        rows.append([name, _expanded_help(parser, action)])
    return rows


class ConvbenchCli(Directive):
    """``convbench-cli``: a section per subcommand, with its usage and its options."""

    def run(self) -> list[nodes.Node]:
        out: list[nodes.Node] = []
        for name, parser in cli_commands():
            section = nodes.section(ids=[f"convbench-{name}"], names=[f"convbench {name}"])
            section += nodes.title(text=f"convbench {name}")
            if parser.description:
                section += nodes.paragraph(text=parser.description)
            usage = parser.format_usage().strip()
            section += nodes.literal_block(usage, usage, language="text")
            section += table_node(["argument", "meaning"], cli_options(parser))
            self.state.document.note_implicit_target(section)
            out.append(section)
        return out


def kernel_rows(backend: str) -> list[list[str]]:
    """``[name, kind, directions, status]`` of every kernel registered for ``backend``."""
    from convbench import registry  # noqa: PLC0415

    rows = []
    for k in registry.kernels(backend):
        directions = ", ".join(getattr(k, "directions", ("fwd",)))
        rows.append([k.name, k.kind, directions])
    return rows


class ConvbenchKernels(Directive):
    """``convbench-kernels BACKEND``: the kernels registered for a backend."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        return [table_node(["name", "kind", "directions"], kernel_rows(self.arguments[0]))]


def setup(app: Any) -> dict[str, Any]:
    """Register the directives."""
    app.add_directive("convbench-cli", ConvbenchCli)
    app.add_directive("convbench-kernels", ConvbenchKernels)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
