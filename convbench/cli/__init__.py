"""The ``convbench`` command: it parses the command line and calls the library.

Each subcommand lives in its own module of this package (``list``, ``layers``, ``run``,
``check``, ``compare``, ``ab``, ``roof``, ``report``, ``tune``) with an ``add_parser`` and a
``main``; exit status 0 on success, 1 on regressions or findings, 2 on usage
errors, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from convbench.cli import ab, check, compare, layers, listing, report, roof, sweep, tune
from convbench.cli.common import EXIT_USAGE, ArgumentParser
from convbench.contract import WORKSPACE_CAP_ENV
from convbench.errors import MissingExtra

COMMANDS = {"list": listing, "layers": layers, "run": sweep, "roof": roof, "report": report,
            "check": check, "compare": compare, "ab": ab, "tune": tune}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="convbench",
        description="Benchmark convolution algorithms (direct, im2col, FFT, Winograd) "
                    "against the libraries you would otherwise use.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    if argv is None and hasattr(signal, "SIGPIPE"):
        # `convbench list suites | head`: stop quietly when the reader goes away.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    if getattr(args, "workspace_cap", None) is not None:
        # Through the environment: the kernels read it at each use, and the worker
        # processes of a sweep inherit it.
        os.environ[WORKSPACE_CAP_ENV] = str(args.workspace_cap)
    command = sys.argv if argv is None else ["convbench", *argv]
    try:
        return COMMANDS[args.command].main(args, command)
    except (ValueError, TypeError, FileNotFoundError, MissingExtra) as exc:
        print(f"convbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
