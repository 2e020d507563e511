"""``convbench layers``: a suite file from a PyTorch or ONNX model's convolution layers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from convbench.cli.common import EXIT_OK


def add_parser(sub: Any, name: str) -> None:
    lay = sub.add_parser(name, help="write a suite of a PyTorch or ONNX model's distinct conv "
                                    "layers (with repeat counts)")
    source = lay.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-torch", metavar="MODULE:FACTORY",
                        help="a PyTorch model: an importable module or a .py file, and a "
                             "factory called with no arguments (torchvision.models:resnet50)")
    source.add_argument("--from-onnx", metavar="MODEL.onnx", help="an ONNX model file")
    add_input_option(lay)
    lay.add_argument("-o", "--out", help="suite file to write (default: print it)")


def add_input_option(parser: argparse.ArgumentParser) -> None:
    """``--input SHAPE`` or ``--input NAME=SHAPE``, repeatable (``layers``, ``run --model``)."""
    parser.add_argument("--input", action="append", default=[], metavar="[NAME=]SHAPE",
                        help="input shape, e.g. 1,3,224,224 (PyTorch: needed, one per "
                             "positional input; ONNX: NAME=SHAPE for each input with a "
                             "dynamic dimension)")


def main(args: argparse.Namespace, command: list[str]) -> int:
    from convbench.problem.models import layers_from_spec  # noqa: PLC0415

    spec = args.from_torch or args.from_onnx
    if args.from_onnx and not args.from_onnx.lower().endswith(".onnx"):
        raise ValueError(f"--from-onnx takes a .onnx file, got {args.from_onnx!r}")
    found = layers_from_spec(spec, args.input)
    text = found.suite_text()
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {len(found.layers)} distinct layers ({found.conv_count} convolutions) "
              f"of {found.source} to {args.out}")
    else:
        sys.stdout.write(text)
    report_unmodelled(found)
    return EXIT_OK


def report_unmodelled(found: Any) -> None:
    """Say on stderr which convolutions the suite leaves out, and why."""
    if found.unmodelled:
        print(f"{len(found.unmodelled)} convolution(s) of {found.source} cannot be modelled "
              "and are comments in the suite:", file=sys.stderr)
        print(found.unmodelled_report(), file=sys.stderr)
