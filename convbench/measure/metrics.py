"""Error metrics of a kernel's output against the float64 reference.

* ``rel_l2 = ||y - ref|| / ||ref||``, ``max_abs``;
* ``max_rel``: relative to ``max(|ref_i|, MAX_REL_FLOOR * max|ref|)``;
* ``bound_ratio = max_i |y_i - ref_i| / (u * s_i)``: the worst error in units of
  the classical dot-product error scale ``s = |W| * |X| + |b|`` (``u`` = unit
  roundoff of the dtype), so numbers compare across layers, dtypes and
  algorithms;
* ``envelope_ratio = max_i |y_i - ref_i| / env_i``: the worst error in units of
  the algorithm's error envelope (:func:`convbench.measure.compare.envelope`);
  at most 1 for a correct kernel. What ``convbench check`` holds kernels to.

Metrics are computed where the output lives: a CuPy output is compared with
the reference on the device (:class:`ReferenceCache` keeps the reference
there), so that a large output never crosses to the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convbench.problem.arguments import array_module, to_host
from convbench.problem.conv_problem import ConvProblem
from convbench.problem.reference import reference_for

#: Unit roundoff ``u = 2^-t`` (half an ulp of 1) per dtype.
UNIT_ROUNDOFF = {"float16": 2.0**-11, "float32": 2.0**-24, "float64": 2.0**-53}

#: ``max_rel`` divides by ``max(|ref_i|, MAX_REL_FLOOR * max|ref|)`` so that
#: outputs that happen to be near zero do not dominate it.
MAX_REL_FLOOR = 1e-3


@dataclass
class Reference:
    """The float64 reference of one problem's inputs and the scales of its error model.

    Attributes
    ----------
    ref : array
        ``W * X + b`` in float64.
    abs_scale : array
        ``s = |W| * |X| + |b|``: the classical worst-case dot-product scale.
    rss_scale : array
        ``r = sqrt(W^2 * X^2 + b^2)``: root-sum-square of each output's terms.
    image_scale : array, shape (N, K, 1, 1)
        Per image and output channel, ``r`` as if every filter tap read the
        image's mean square: ``sqrt(sum_c |w_kc|^2 mean(x_nc^2) + b_k^2)``. The
        scale of errors that spread over a whole image (FFT), also where an
        output's own window holds no data.
    """

    ref: Any
    abs_scale: Any
    rss_scale: Any
    image_scale: Any

    def to(self, xp: Any) -> Reference:
        """The same arrays in module ``xp``'s memory (NumPy: host, CuPy: device)."""
        if array_module(self.ref) is xp:
            return self
        return Reference(*(xp.asarray(a) for a in (self.ref, self.abs_scale, self.rss_scale,
                                                    self.image_scale)))


def reference_and_scales(p: ConvProblem, x: Any, w: Any, b: Any) -> Any:
    """The float64 reference and the error scales of ``p`` on these inputs (host).

    The operands are those of ``p``'s direction, in ``prepare``'s order
    (:func:`~convbench.problem.reference.reference_for`). For ``bwd_wb`` the
    result is a pair: the :class:`Reference` of ``dw`` and that of ``db``.
    """
    ref = reference_for(p, x, w, b)
    absolute = reference_for(p, x, w, b, operands="absolute")
    squared = reference_for(p, x, w, b, operands="squared")
    if p.dir == "bwd_wb":
        rss_db = np.sqrt(squared[1])
        return (Reference(ref[0], absolute[0], np.sqrt(squared[0]), image_scale(p, x, w, b)),
                Reference(ref[1], absolute[1], rss_db, rss_db))
    return Reference(ref, absolute, np.sqrt(squared), image_scale(p, x, w, b))


def image_scale(p: ConvProblem, x: Any, w: Any, b: Any) -> np.ndarray:
    """``sqrt(sum_c |w_kc|^2 mean_hw(x_nc^2) + b_k^2)`` as (N, K, 1, 1) (see :class:`Reference`).

    The backward directions read it with their own roles: for ``bwd_d``
    (operands ``dy, w``), ``sqrt(sum_k |w_kc|^2 mean_pq(dy_nk^2))`` as
    (N, C, 1, 1); for ``bwd_w`` (operands ``x, dy``),
    ``sqrt(sum_n |dy_nk|^2 mean_hw(x_nc^2))`` as (K, C/g, 1, 1): each output's
    scale as if the other operand held its mean square everywhere.
    """
    cg, kg = p.ic // p.g, p.oc // p.g
    if p.dir == "bwd_d":
        dy2 = np.mean(np.square(np.asarray(to_host(x), dtype=np.float64)), axis=(2, 3))
        w2 = np.sum(np.square(np.asarray(to_host(w), dtype=np.float64)), axis=(2, 3))
        energy = np.einsum("ngk,gkc->ngc", dy2.reshape(p.mb, p.g, kg),
                           w2.reshape(p.g, kg, cg)).reshape(p.mb, p.ic)
        return np.sqrt(energy)[:, :, None, None]
    if p.dir in ("bwd_w", "bwd_wb"):
        x2 = np.mean(np.square(np.asarray(to_host(x), dtype=np.float64)), axis=(2, 3))
        dy2 = np.sum(np.square(np.asarray(to_host(w), dtype=np.float64)), axis=(2, 3))
        energy = np.einsum("ngc,ngk->gkc", x2.reshape(p.mb, p.g, cg),
                           dy2.reshape(p.mb, p.g, kg)).reshape(p.oc, cg)
        return np.sqrt(energy)[:, :, None, None]
    x2 = np.mean(np.square(np.asarray(to_host(x), dtype=np.float64)), axis=(2, 3))
    w2 = np.sum(np.square(np.asarray(to_host(w), dtype=np.float64)), axis=(2, 3))
    cg, kg = p.ic // p.g, p.oc // p.g
    energy = np.einsum("ngc,gkc->ngk", x2.reshape(p.mb, p.g, cg),
                       w2.reshape(p.g, kg, cg)).reshape(p.mb, p.oc)
    if b is not None:
        energy = energy + np.square(np.asarray(to_host(b), dtype=np.float64))[None, :]
    return np.sqrt(energy)[:, :, None, None]


def error_metrics(y: Any, reference: Reference, dtype: str,
                  envelope: Any = None) -> dict[str, float]:
    """``rel_l2``, ``max_abs``, ``max_rel``, ``bound_ratio``, ``envelope_ratio``, ``nonfinite``.

    Parameters
    ----------
    y : array
        Kernel output (any float dtype, NumPy or CuPy).
    reference : Reference
        The float64 reference and scales (moved to where ``y`` is if needed).
    dtype : str
        Dtype of the computation, for the unit roundoff of ``bound_ratio``.
    envelope : array, optional
        The per-element error envelope; without it ``envelope_ratio`` is left out.
    """
    xp = array_module(y)
    refs = reference.to(xp)
    ref = refs.ref
    y64 = xp.asarray(y, dtype=xp.float64)
    if y64.shape != ref.shape:
        raise ValueError(f"output shape {tuple(y64.shape)} != reference shape {tuple(ref.shape)}")
    nonfinite = int(y64.size - int(xp.count_nonzero(xp.isfinite(y64))))
    if nonfinite:
        inf = float("inf")
        out = {"rel_l2": inf, "max_abs": inf, "max_rel": inf, "bound_ratio": inf,
               "nonfinite": nonfinite}
        if envelope is not None:
            out["envelope_ratio"] = inf
        return out
    if not y64.size:
        return {"rel_l2": 0.0, "max_abs": 0.0, "max_rel": 0.0, "bound_ratio": 0.0,
                "nonfinite": 0, **({} if envelope is None else {"envelope_ratio": 0.0})}
    diff = xp.abs(y64 - ref)
    ref_norm = float(xp.linalg.norm(ref))
    floor = max(MAX_REL_FLOOR * float(xp.max(xp.abs(ref))), np.finfo(np.float64).tiny)
    out = {
        "rel_l2": float(xp.linalg.norm(diff)) / ref_norm if ref_norm else float(xp.max(diff)),
        "max_abs": float(xp.max(diff)),
        "max_rel": float(xp.max(diff / xp.maximum(xp.abs(ref), floor))),
        "bound_ratio": _ratio(xp, diff, UNIT_ROUNDOFF[dtype] * refs.abs_scale),
        "nonfinite": 0,
    }
    if envelope is not None:
        out["envelope_ratio"] = _ratio(xp, diff, xp.asarray(envelope))
    return out


def _ratio(xp: Any, diff: Any, scale: Any) -> float:
    """``max_i diff_i / scale_i`` with ``0/0 = 0`` and ``x/0 = inf``."""
    safe = xp.where(scale > 0, scale, 1.0)
    ratio = xp.where(scale > 0, diff / safe, xp.where(diff > 0, xp.inf, 0.0))
    return float(xp.max(ratio))


class ReferenceCache:
    """The reference and scales of the current problem's inputs, computed once.

    Several kernels are checked against the same inputs, and the reference of
    a large layer costs more than any kernel. Problems that differ only in
    math mode (``fpmath``) or name share inputs, so they share the entry; a
    GPU sweep keeps a device copy beside the host one.
    """

    def __init__(self) -> None:
        self._key: tuple[ConvProblem, int, str] | None = None
        self._host: Any = None  # a Reference, or a pair of them for bwd_wb
        self._device: Any = None

    def get(self, p: ConvProblem, seed: int, x: Any, w: Any, b: Any, fill: str = "random",
            xp: Any = np) -> Any:
        """The entry for ``p``'s inputs, in module ``xp``'s memory (a pair for ``bwd_wb``)."""
        key = (p.with_(fpmath="strict", name=""), seed, fill)
        if self._key != key:
            self._host = reference_and_scales(p, x, w, b)
            self._device = None
            self._key = key
        assert self._host is not None
        if xp is np:
            return self._host
        if self._device is None:
            self._device = (tuple(r.to(xp) for r in self._host) if isinstance(self._host, tuple)
                            else self._host.to(xp))
        return self._device
