"""Inputs for both sides, and their outputs held to the invoking convbench's envelopes.

Both workers read the same seeded inputs from one ``.npz`` file per problem
(:func:`write_inputs`, made with :func:`convbench.measure.inputs.make_inputs`),
and each saves its kernel's first output. :func:`side_outcome` compares that
output with the float64 reference under the envelope of the error model the
side's kernel declared (:func:`convbench.measure.compare.output_errors`), so a
HEAD whose output leaves its envelope fails although it ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convbench.contract import ErrorModel
from convbench.measure.compare import output_errors
from convbench.measure.inputs import make_inputs
from convbench.measure.metrics import ReferenceCache
from convbench.problem import ConvProblem

_MODEL_FIELDS = ("family", "operand_roundoff", "transform_size", "transforms")


def write_inputs(p: ConvProblem, path: Path, seed: int = 0) -> Path:
    """``p``'s inputs (``a``, ``b`` and, with a bias, ``bias``) in an ``.npz`` file."""
    a, b, bias = make_inputs(p, seed)
    arrays = {"a": a, "b": b, **({} if bias is None else {"bias": bias})}
    np.savez(path, **arrays)
    return path


def error_model(reply_model: Any) -> ErrorModel:
    """The side's declared error model, or the loosest (``any``) where it declared none."""
    if isinstance(reply_model, dict) and reply_model.get("family"):
        return ErrorModel(**{k: reply_model[k] for k in _MODEL_FIELDS if k in reply_model})
    return ErrorModel("any")


def output_of(path: Path, p: ConvProblem) -> Any:
    """The output a worker saved: an array, or ``(dw, db)`` for ``bwd_wb``."""
    with np.load(path) as data:
        parts = [data[f"arr_{i}"] for i in range(len(data.files))]
    return tuple(parts) if p.dir == "bwd_wb" else parts[0]


def side_outcome(p: ConvProblem, reply: dict[str, Any], output: Path, seed: int,
                 references: ReferenceCache) -> dict[str, Any]:
    """What one side did with ``p``: ``ok``, ``skipped`` (refused), ``failed`` (raised)
    or ``wrong`` (its output outside its envelope, or not finite), with the errors."""
    status = reply.get("status")
    if status != "ok":
        return {"status": status, "reason": reply.get("reason")}
    a, b, bias = make_inputs(p, seed)
    model = error_model(reply.get("error_model"))
    y = output_of(output, p)
    reference = references.get(p, seed, a, b, bias)
    try:
        errors = output_errors(p, y, reference, model)
    except ValueError as exc:  # a wrong shape
        return {"status": "wrong", "reason": str(exc)}
    out = {"status": "ok", "error": {k: v for k, v in errors.items() if k != "parts"},
           "error_model": model.family}
    ratio = errors.get("envelope_ratio")
    if errors.get("nonfinite"):
        out.update(status="wrong", reason=f"{errors['nonfinite']} non-finite outputs")
    elif ratio is not None and ratio > 1.0:
        out.update(status="wrong", reason=f"error outside its envelope: envelope_ratio "
                                          f"{ratio:.3g} > 1 ({model.family} family)")
    return out
