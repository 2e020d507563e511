"""Gradients by torch float64 autograd, and what the backward tests hold a kernel to.

Two checks per gradient: against torch's float64 autograd within a normwise
bound ``16 u (sqrt(n) + 8) max(S)`` (``S`` the same gradient of the operands'
absolute values, ``n`` the direction's reduction length), and against
convbench's own float64 reference within the kernel's error envelope of the
direction (:func:`convbench.measure.compare.output_errors`).
"""

import dataclasses

import numpy as np
import torch

from convbench.measure.compare import output_errors
from convbench.measure.metrics import reference_and_scales
from convbench.problem import to_host

DIRECTIONS = ("bwd_d", "bwd_w", "bwd_wb")


def torch_gradients(p, x, w, dy):
    """(dx, dw, db) in float64 by autograd through an explicit (asymmetric) zero padding."""
    (pt, pb), (pl, pr) = p.padding
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    padded = torch.nn.functional.pad(xt, (pl, max(pr, 0), pt, max(pb, 0)))
    padded = padded[:, :, :p.padded_height, :p.padded_width]  # negative trailing padding
    y = torch.nn.functional.conv2d(padded, wt, stride=p.stride, dilation=p.dilation, groups=p.g)
    assert tuple(y.shape) == p.output_shape
    y.backward(torch.tensor(dy, dtype=torch.float64))
    return xt.grad.numpy(), wt.grad.numpy(), np.asarray(dy, np.float64).sum(axis=(0, 2, 3))


def reduction_terms(p):
    if p.dir == "bwd_d":
        return (p.oc // p.g) * -(-p.kh // p.sh) * -(-p.kw // p.sw)
    return p.mb * p.oh * p.ow


def assert_within_bound(got, ref, scale, p, what):
    u = np.finfo(p.dtype).eps / 2
    limit = 16 * u * (np.sqrt(reduction_terms(p)) + 8) * max(float(np.abs(scale).max()), 1e-300)
    err = float(np.abs(np.asarray(got, np.float64) - ref).max())
    assert err <= limit, f"{what} {p}: error {err:.3g} > {limit:.3g} ({err / limit:.2f}x)"


def run_direction(kernel, p, x, w, dy):
    """The kernel's gradient of ``p.dir`` from (x, w, dy), by the protocol's operand order."""
    if p.dir == "bwd_d":
        return kernel.prepare(p, dy, w, None)()
    return kernel.prepare(p, x, dy, None)()


def check_problem(kernel, base, seed=0, envelope=True, directions=DIRECTIONS):
    """The backward ``directions`` of ``base`` (all three unless told) by ``kernel``, checked
    both ways (see above)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, base.input_shape).astype(base.dtype)
    w = rng.uniform(-1, 1, base.weight_shape).astype(base.dtype)
    dy = rng.uniform(-1, 1, base.output_shape).astype(base.dtype)
    dx_ref, dw_ref, db_ref = torch_gradients(base, x, w, dy)
    sx, sw, _ = torch_gradients(base, abs(x), abs(w), abs(dy))
    for direction in directions:
        p = dataclasses.replace(base, dir=direction, bias=direction == "bwd_wb")
        got = run_direction(kernel, p, x, w, dy)
        got = tuple(to_host(g) for g in got) if isinstance(got, tuple) else to_host(got)
        if envelope:
            a, b = (dy, w) if direction == "bwd_d" else (x, dy)
            errors = output_errors(p, got, reference_and_scales(p, a, b, None),
                                   kernel.error_model(p))
            assert errors["envelope_ratio"] <= 1, \
                f"{kernel.name} {p}: {errors['envelope_ratio']:.3g} of its envelope"
        if direction == "bwd_d":
            assert got.shape == p.input_shape and got.dtype == np.dtype(p.dtype)
            assert_within_bound(got, dx_ref, sx, p, f"{kernel.name} dx")
            continue
        dw, db = got if direction == "bwd_wb" else (got, None)
        assert dw.shape == p.weight_shape and dw.dtype == np.dtype(p.dtype)
        assert_within_bound(dw, dw_ref, sw, p, f"{kernel.name} dw")
        if db is not None:
            assert db.shape == (p.oc,) and db.dtype == np.dtype(p.dtype)
            assert_within_bound(db, db_ref, abs(dy).sum(axis=(0, 2, 3)), p, "db")
