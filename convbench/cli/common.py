"""What the subcommands share: exit codes, argument types, the progress bar, the GPU probe."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _at_least(convert: Any, low: float, text: str) -> Any:
    """``convert(text)``, refused by argparse unless it is at least ``low``."""
    value = convert(text)
    if not value >= low:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _at_least(int, 1, text)


def non_negative_int(text: str) -> int:
    return _at_least(int, 0, text)


def non_negative_float(text: str) -> float:
    return _at_least(float, 0, text)


def positive_float(text: str) -> float:
    """A positive finite number (an error budget)."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, except that ``--dir`` never abbreviates ``--direction``.

    A quoted descriptor may begin with its own ``--dir=BWD_D`` knob (benchdnn's
    text); argparse would take ``--dir`` as an abbreviation of ``--direction``
    and the descriptor would never reach the descriptor parser. Every other
    abbreviation still works.
    """

    def _get_option_tuples(self, option_string: str) -> list[Any]:
        found = super()._get_option_tuples(option_string)
        typed = option_string.split("=", 1)[0]
        if typed.startswith("--") and "--direction".startswith(typed) and len(typed) <= 5:
            found = [t for t in found if getattr(t[0], "dest", None) != "direction"]
        return found


def directions_list(text: str) -> list[str]:
    """``--direction fwd,bwd_d,bwd_w``: convbench's or benchdnn's names, deduplicated in order."""
    from convbench.problem import normalize_direction  # noqa: PLC0415

    try:
        names = [normalize_direction(d.strip()) for d in text.split(",") if d.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not names:
        raise argparse.ArgumentTypeError(f"no direction in {text!r}")
    return list(dict.fromkeys(names))


def add_direction_option(parser: argparse.ArgumentParser) -> None:
    """``--direction`` (run, check, tune)."""
    parser.add_argument("--direction", type=directions_list, metavar="DIRS",
                        help="comma list of directions to run for every layer: fwd, bwd_d, "
                             "bwd_w, bwd_wb (benchdnn's FWD_D, BWD_D, BWD_W, BWD_WB too); "
                             "default fwd (a descriptor's own --dir= otherwise)")


def with_directions(layers: list[tuple[str, Any]],
                    directions: list[str] | None) -> list[tuple[str, Any]]:
    """Each (suite, layer) once per direction, the directions of a layer together.

    ``bwd_wb`` gives the layer a bias (its gradient is what that direction adds);
    a line convbench cannot model stays once, as it is. Without directions the
    layers are as they were given.
    """
    if not directions:
        return layers
    out = []
    for suite, layer in layers:
        if layer.problem is None:
            out.append((suite, layer))
            continue
        for d in directions:
            out.append((suite, layer.with_(dir=d, bias=True) if d == "bwd_wb"
                        else layer.with_(dir=d)))
    return out


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    """How each measurement of a sweep is taken (``run``, ``tune``)."""
    parser.add_argument("--threads", type=positive_int,
                        help="Numba/BLAS/torch threads (default: all cores)")
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="rounds per timed record, each in its own worker process, the "
                             "kernels of a layer in a new shuffled order each round; the "
                             "95%% interval comes from them (default 3)")
    parser.add_argument("--cooldown", type=non_negative_float, default=0.15,
                        help="longest pause before each round's warm calls; it ends once "
                             "the worker's other threads are idle, so that the last "
                             "library's threads stop spinning (default 0.15)")
    parser.add_argument("--round-block", type=non_negative_int, default=24,
                        help="layers whose rounds are interleaved: round r of each of them "
                             "before round r+1 of any, so that a record's rounds lie far "
                             "apart in time; 0: the whole sweep (default 24)")
    parser.add_argument("--retries", type=non_negative_int, default=3,
                        help="times a round is timed again when other processes or the "
                             "hypervisor took CPU time while it ran (default 3)")
    parser.add_argument("--min-time", type=non_negative_float, default=0.1,
                        help="timed seconds per round, at least (default 0.1)")
    parser.add_argument("--min-reps", type=positive_int, default=5,
                        help="timed runs per round, at least (default 5)")
    parser.add_argument("--max-time", type=non_negative_float, default=30.0,
                        help="stop repeating after this many seconds once min-reps ran")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--timeout", type=non_negative_float, default=600.0,
                        help="seconds one measurement may take before it is failed "
                             "(default 600)")
    add_process_options(parser)


def byte_count(text: str) -> int:
    """``--workspace-cap 512MiB``: bytes, or a number with a KiB/MiB/GiB (KB/MB/GB) unit."""
    from convbench.contract import parse_bytes  # noqa: PLC0415

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_process_options(parser: argparse.ArgumentParser) -> None:
    """``--no-isolate``, ``--no-progress``, ``--scheduler`` and ``--workspace-cap`` (every
    command that sweeps)."""
    parser.add_argument("--workspace-cap", type=byte_count, metavar="BYTES",
                        help="most memory a CPU kernel may hold beyond its operands (prepared "
                             "state and per-call scratch), e.g. 1GiB; a kernel that cannot "
                             "tile under it refuses the layer, saying how much it needs "
                             "(default 256MiB, or CONVBENCH_WORKSPACE_CAP); worker processes "
                             "on this machine inherit it")
    parser.add_argument("--no-isolate", action="store_true",
                        help="measure in this process instead of a worker (debugging)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT|local:N",
                        help="measure on a Dask cluster: a running scheduler's address, or "
                             "local:N worker processes here (needs convbench[cluster])")


@contextlib.contextmanager
def cluster_for(args: argparse.Namespace, env: dict[str, Any]) -> Iterator[Any]:
    """The Dask cluster ``--scheduler`` names (None without it), its workers in ``env``."""
    if not getattr(args, "scheduler", None):
        yield None
        return
    from convbench.measure.cluster import connect  # noqa: PLC0415

    with connect(args.scheduler) as cluster:
        # Before the results file gets its header: a refused sweep leaves nothing behind.
        cluster.refuse_unfit_workers(getattr(args, "threads", None))
        env["cluster"] = {"scheduler": cluster.address,
                          "workers": cluster.workers(args.backend)}
        yield cluster


def sweep_settings(args: argparse.Namespace, **fixed: Any) -> Any:
    """:class:`~convbench.measure.runner.SweepSettings` from ``add_sweep_options``'s options."""
    from convbench.measure.runner import SweepSettings  # noqa: PLC0415

    return SweepSettings(backend=args.backend, seed=args.seed, min_reps=args.min_reps,
                         min_time=args.min_time, max_time=args.max_time, threads=args.threads,
                         isolate=not args.no_isolate, timeout=args.timeout or None,
                         rounds=args.rounds, cooldown=args.cooldown,
                         retries=args.retries, round_block=args.round_block, **fixed)


def selected_work(args: argparse.Namespace, overrides: dict[str, Any]) -> tuple[list, str,
                                                                            list[str]]:
    """The (suite, layer) pairs, the suite's label and the kernel names ``run``/``tune`` name.

    ``--suite`` is a comma list of suites or files; ``--model`` (``run``) adds
    the layers of a PyTorch or ONNX model, read as the suite that ``convbench
    layers`` would write for it (its unmodellable convolutions are reported
    on stderr), labelled with the model's name. The label joins the suites'
    and the model's names with ``+``.

    Raises
    ------
    ValueError
        Nothing selected, a bad descriptor or kernel name, or ``--backend gpu``
        where there is no GPU (the message says what is missing).
    """
    from convbench.problem.suites import select_layers  # noqa: PLC0415
    from convbench.registry import select_kernels  # noqa: PLC0415

    suites = suite_list(args.suite)
    model = getattr(args, "model", None)
    extra: list[tuple[str, Any]] = []
    if model:
        extra = model_layers(model, args.input)
    elif getattr(args, "input", None):
        raise ValueError("--input gives a model's input shape: it needs --model")
    layers = with_directions(select_layers(suites, args.descriptors, match=args.match,
                                           extra=extra, **overrides),
                             getattr(args, "direction", None))
    if args.backend == "gpu" and (reason := gpu_missing_reason()) is not None:
        raise ValueError(f"no GPU present ({reason}); --backend gpu needs a CUDA device and "
                         "CuPy (pip install 'convbench[gpu]')")
    labels = [Path(s).stem for s in suites] + ([model_label(model)] if model else [])
    suite = "+".join(labels) if labels else "custom"
    return layers, suite, select_kernels(args.algo, args.backend)


def suite_list(text: str | None) -> list[str]:
    """``--suite a,b``: the suite names or files, in order."""
    return [s for s in (text or "").split(",") if s]


def model_label(spec: str) -> str:
    """What a model's layers are labelled with: the factory's name, or the ONNX file's stem."""
    from convbench.problem.models.spec import is_onnx  # noqa: PLC0415

    return Path(spec).stem if is_onnx(spec) else spec.rpartition(":")[2]


def model_layers(spec: str, inputs: list[str]) -> list[tuple[str, Any]]:
    """``--model SPEC --input SHAPE``: the model's suite layers, labelled with its name."""
    from convbench.problem.models import layers_from_spec  # noqa: PLC0415
    from convbench.problem.suites import parse_suite  # noqa: PLC0415

    found = layers_from_spec(spec, inputs)
    if found.unmodelled:
        print(f"{len(found.unmodelled)} convolution(s) of {found.source} cannot be modelled "
              "and are left out:", file=sys.stderr)
        print(found.unmodelled_report(), file=sys.stderr)
    label = model_label(spec)
    return [(label, layer) for layer in parse_suite(found.suite_text(), spec)]


def gpu_missing_reason() -> str | None:
    """Why ``--backend gpu`` cannot run here, or None."""
    from convbench.store.environment import gpu_environment  # noqa: PLC0415

    info = gpu_environment()
    return None if info.get("available") else info.get("reason", "no GPU")


def sweep_with_progress(tasks: list, settings: Any, writer: Any, done: set,
                        show: bool | None = None, cluster: Any = None) -> Any:
    """:func:`~convbench.measure.runner.run_sweep` with a progress bar on a terminal
    (on ``cluster``, a :class:`~convbench.measure.cluster.Cluster`, where given)."""
    from convbench.measure.runner import run_sweep  # noqa: PLC0415

    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return run_sweep(tasks, settings, writer, done=done, cluster=cluster)
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

        return run_sweep(tasks, settings, writer, done=done, on_record=advance, cluster=cluster)
