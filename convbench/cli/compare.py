"""``convbench compare OLD NEW``: verdicts on the times and errors of two runs; exit 1 on
regressions (a significant slowdown beyond the tolerance, an error regression, a new failure).

Two runs made apart in time differ by the machine's drift as well as by the
code; the printout says how much, and points to ``convbench ab``, which times
two revisions paired."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from convbench.cli.common import EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, non_negative_float


def add_parser(sub: Any, name: str) -> None:
    cmp_ = sub.add_parser(name, help="compare two runs; exit 1 on regressions")
    cmp_.add_argument("old")
    cmp_.add_argument("new")
    cmp_.add_argument("--time-tol", type=non_negative_float, default=0.10,
                      help="effect threshold: a time ratio within 1 +- TOL is 'same'; a "
                           "significant one beyond it is 'slower' or 'faster' (default 0.10)")
    cmp_.add_argument("--err-tol", type=non_negative_float, default=2.0,
                      help="flag new/old rel_l2 above TOL (default 2.0)")


def main(args: argparse.Namespace, command: list[str]) -> int:
    from convbench.measure.compare import compare_runs, runs_noise  # noqa: PLC0415
    from convbench.measure.stats import VERDICTS  # noqa: PLC0415
    from convbench.present.tables import comparison_table  # noqa: PLC0415
    from convbench.store.jsonl import load_run  # noqa: PLC0415

    old, new = load_run(args.old), load_run(args.new)
    rows = compare_runs(old, new, time_tol=args.time_tol, err_tol=args.err_tol)
    if not rows:
        print("the two runs share no (problem, kernel) measurement", file=sys.stderr)
        return EXIT_USAGE
    print(comparison_table(rows))
    flagged = [r for r in rows if r.regressions]
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    timed = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    apart = sum(not r.same_platform for r in rows)
    print(f"\n{len(rows)} compared ({timed or 'none timed'}), {len(flagged)} regression(s) "
          f"(time tolerance {args.time_tol:.0%}, 95% intervals from the rounds; error "
          f"tolerance x{args.err_tol})"
          + (f"; {apart} measured on different platforms in the two runs: their times "
             "are not compared" if apart else ""))
    inside = [r.new.median_s is not None and r.old.pi95_s[0] <= r.new.median_s <= r.old.pi95_s[1]
              for r in rows if r.same_platform and r.old.pi95_s is not None]
    if inside:
        print(f"{sum(inside)} of {len(inside)} new medians ({sum(inside) / len(inside):.0%}) lie "
              "in the old run's 95% prediction interval for a rerun (pi95_s); for unchanged "
              "code about 95% would.")
    noise = runs_noise(old, new)
    if noise.records:
        print(f"Run-to-run noise of unchanged records, pooled over {noise.records}: "
              f"+-{noise.spread:.0%} (one standard deviation); no interval is narrower.")
    print(separate_runs_note(noise.spread if noise.records else None))
    return EXIT_REGRESSION if flagged else EXIT_OK


def separate_runs_note(spread: float | None) -> str:
    """What two separate runs cannot tell, and what can: ``convbench ab``."""
    below = (f"below the noise printed above (+-{spread:.0%})" if spread is not None
             else "below their run-to-run noise")
    return (f"Separate runs on a shared machine cannot resolve changes {below}: a slower "
            "kernel within it reads as 'same', and noise beyond it can read as a change. "
            "To test a change, time both revisions paired on one machine: "
            "convbench ab BASE HEAD (see 'convbench ab --help').")
