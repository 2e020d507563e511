"""``convbench report``: index.html, README.md and PNG plots of one or more runs."""

from __future__ import annotations

import argparse
from typing import Any

from convbench.cli.common import EXIT_OK, non_negative_float


def add_parser(sub: Any, name: str) -> None:
    rep = sub.add_parser(name, help="write index.html, README.md and PNG plots of runs")
    rep.add_argument("runs", nargs="+", metavar="RUN.jsonl")
    rep.add_argument("-o", "--out", required=True, help="output directory")
    rep.add_argument("--error-budget", type=non_negative_float, default=1e-5,
                     help="rel_l2 budget of the 'fastest within budget' winner (1e-5)")
    rep.add_argument("--title", default="convbench report")


def main(args: argparse.Namespace, command: list[str]) -> int:
    from convbench.present.report import write_report  # noqa: PLC0415

    files = write_report(args.runs, args.out, budget=args.error_budget, title=args.title)
    print(f"wrote {len(files)} files to {args.out}: " + ", ".join(f.name for f in files))
    return EXIT_OK
