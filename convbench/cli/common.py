"""What the subcommands share: exit codes, argument types, the progress bar, the GPU probe."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def gpu_missing_reason() -> str | None:
    """Why ``--backend gpu`` cannot run here, or None."""
    from convbench.store.environment import gpu_environment  # noqa: PLC0415

    info = gpu_environment()
    return None if info.get("available") else info.get("reason", "no GPU")


def sweep_with_progress(tasks: list, settings: Any, writer: Any, done: set,
                        show: bool | None = None) -> Any:
    """:func:`~convbench.measure.runner.run_sweep` with a progress bar on a terminal."""
    from convbench.measure.runner import run_sweep  # noqa: PLC0415

    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return run_sweep(tasks, settings, writer, done=done)
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    todo = sum(t.key not in done for t in tasks)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=True) as progress:
        bar = progress.add_task("measuring", total=todo)

        def advance(rec: dict[str, Any]) -> None:
            progress.update(bar, advance=1,
                            description=f"{rec.get('name') or rec['problem']} {rec['kernel']}")

        return run_sweep(tasks, settings, writer, done=done, on_record=advance)
