"""``convbench list suites|kernels``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from convbench.cli.common import EXIT_OK, directions_list
from convbench.contract import BACKENDS, kernel_directions, refusal
from convbench.problem.suites import list_suites, load_suite, suite_path
from convbench.registry import kernels, load_errors

#: Suites whose support counts ``list kernels`` shows.
PROBE_SUITES = ("resnet50", "mobilenet_v1", "alexnet")


def add_parser(sub: Any, name: str) -> None:
    lst = sub.add_parser(name, help="list suites or kernels")
    lst.add_argument("what", choices=["suites", "kernels"])
    lst.add_argument("--backend", choices=BACKENDS, default=None)
    lst.add_argument("--direction", type=directions_list, default=["fwd"], metavar="DIRS",
                     help="kernels: count the probe layers supported in these directions "
                          "(comma list; default fwd)")


def main(args: argparse.Namespace, command: list[str]) -> int:
    if args.what == "suites":
        print("| suite | layers | conv layers in network | file |")
        print("|---|---:|---:|---|")
        for name in list_suites():
            layers = load_suite(name)
            print(f"| {name} | {len(layers)} | {sum(x.repeat for x in layers)} | "
                  f"{suite_path(name)} |")
        return EXIT_OK
    probes = {name: load_suite(name) for name in PROBE_SUITES}
    directions = args.direction
    several = len(directions) > 1
    heads = [f"{name} {d}" if several else name for name in PROBE_SUITES for d in directions]
    print(f"| kernel | backend | kind | {' | '.join(heads)} | status | directions |")
    print("|---|---|---|" + "---:|" * len(heads) + "---|---|")
    for kernel in kernels(args.backend):
        counts = []
        notes = set()
        for layers in probes.values():
            for d in directions:
                problems = [x.problem if d == "fwd" else
                            replace(x.problem, dir=d, bias=d == "bwd_wb") for x in layers]
                reasons = [refusal(kernel, p) for p in problems]
                counts.append(f"{sum(r is None for r in reasons)}/{len(layers)}")
                notes.update(r for r in reasons if r and ("install" in r or "GPU" in r))
        print(f"| {kernel.name} | {kernel.backend} | {kernel.kind} | {' | '.join(counts)} | "
              f"{'; '.join(sorted(notes)) or 'ready'} | "
              f"{', '.join(kernel_directions(kernel))} |")
    for name, error in load_errors().items():
        print(f"plug-in {name} failed to load: {error}", file=sys.stderr)
    return EXIT_OK
