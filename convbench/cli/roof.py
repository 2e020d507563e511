"""``convbench roof``: this machine's GEMM and bandwidth limits."""

from __future__ import annotations

import argparse
from typing import Any

from convbench.cli.common import EXIT_OK, positive_int
from convbench.contract import BACKENDS


def add_parser(sub: Any, name: str) -> None:
    roof = sub.add_parser(name, help="measure this machine's GEMM and bandwidth limits")
    roof.add_argument("--threads", type=positive_int, help="threads (default: all cores)")
    roof.add_argument("--backend", choices=BACKENDS, default="cpu")
    roof.add_argument("--into", help="also append the roof as a record to this results file")


def main(args: argparse.Namespace, command: list[str]) -> int:
    from convbench.measure import roof  # noqa: PLC0415
    from convbench.store.jsonl import ResultWriter  # noqa: PLC0415

    result = roof.measure_and_cache(args.threads, args.backend)
    print(roof.roof_table(result))
    print(f"\ncached in {roof.cache_path(result.get('host'))}; 'convbench run' attaches it "
          "to each run's environment")
    if args.into:
        with ResultWriter(args.into) as writer:
            writer.write(result)
        print(f"appended to {args.into}")
    return EXIT_OK
