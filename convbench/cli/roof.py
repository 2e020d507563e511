"""``convbench roof``: this machine's GEMM and bandwidth limits."""

from __future__ import annotations

import argparse
from pathlib import Path
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
    from convbench.store.environment import environment  # noqa: PLC0415
    from convbench.store.jsonl import ResultWriter, header_record  # noqa: PLC0415

    result = roof.measure_and_cache(args.threads, args.backend)
    print(roof.roof_table(result))
    print(f"\ncached in {roof.cache_path(result.get('host'))}; 'convbench run' attaches it "
          "to each run's environment")
    if args.into:
        into = Path(args.into)
        new_file = not into.exists() or into.stat().st_size == 0
        with ResultWriter(into) as writer:
            if new_file:  # a file of its own says where the roof was measured
                env = environment(args.backend)
                writer.write(header_record(command, {"roof": {"threads": args.threads,
                                                              "backend": args.backend}},
                                           env, roof_provenance(command, args.backend, env)))
            writer.write(result)
        print(f"appended to {args.into}")
    return EXIT_OK


def roof_provenance(command: list[str], backend: str, env: dict[str, Any]) -> dict[str, Any]:
    """A roof's provenance: each figure the best of five runs, no calibration taken."""
    from convbench.store.provenance import noise_verdict, provenance  # noqa: PLC0415

    return provenance(repetitions={"runs_per_figure": 5, "kept": "the fastest"},
                      noise=noise_verdict(None, "a roof is the best of its runs; no "
                                                "calibration is taken"),
                      command=command, backend=backend, env=env)
