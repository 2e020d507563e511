"""Every registered kernel x direction x rank x backend, one case against the float64 reference.

This is the floor of the fast tier (``make test`` deselects ``slow``; nothing here is
slow): however the exhaustive grids are split between the tiers, each kernel still
computes each direction and rank it declares on one small layer, held to its error
envelope. The matrix is read from the registry at collection, so a kernel, a direction
or a rank added later gets its case without an edit here.

GPU kernels get two cases: on the device (marked ``gpu``, skipped without one, still
collected) and on the host emulator, which runs their CUDA C on the CPU.
"""

from __future__ import annotations

import pytest

from convbench import ConvProblem, registry
from convbench.contract import BACKENDS, kernel_directions
from convbench.kernels.gpu.runtime import HostRuntime
from convbench.measure.compare import output_errors
from convbench.measure.inputs import random_inputs
from convbench.measure.metrics import reference_and_scales
from convbench.problem.arguments import to_host
from convbench.problem.conv_problem import UnsupportedDescriptor

#: Small layers per rank, tried in order: the first one a kernel accepts is its case.
#: Every one is 3x3 at stride 1, which every algorithm computes; groups come first since
#: they exercise more of each kernel. A rank whose descriptor the problem model cannot
#: read (or reads as another rank) is not modelled, and has no cases.
SMALL_LAYERS = {
    1: ["g2mb2ic4iw17oc6kw3pw1", "mb2ic4iw17oc6kw3pw1"],
    2: ["g2mb2ic4ih9iw7oc6kh3ph1", "mb2ic4ih9iw7oc6kh3ph1"],
    3: ["g2mb2ic4id5ih6iw7oc6kd3kh3kw3pd1ph1pw1", "mb2ic4id5ih6iw7oc6kd3kh3kw3pd1ph1pw1"],
}
#: The dtype of every case: the one every backend computes and users run.
DTYPE = "float32"
#: Where a GPU kernel runs in a case: the device, or its CUDA C on the host.
GPU_PLACES = ("device", "emulator")

EMULATOR = HostRuntime()


def rank_of(p: ConvProblem) -> int:
    """How many spatial dimensions ``p`` has (its input is N, C, then those)."""
    return len(p.input_shape) - 2


def modelled_layers() -> dict[int, list[ConvProblem]]:
    """:data:`SMALL_LAYERS` that the problem model reads as the rank they are listed under."""
    out = {}
    for rank, texts in SMALL_LAYERS.items():
        try:
            layers = [ConvProblem.parse(t).with_(dtype=DTYPE) for t in texts]
        except UnsupportedDescriptor:
            continue
        if all(rank_of(p) == rank for p in layers):
            out[rank] = layers
    return out


LAYERS = modelled_layers()


def in_direction(p: ConvProblem, direction: str) -> ConvProblem:
    """``p`` in ``direction``, with the bias the direction involves."""
    return p.with_(dir=direction, bias=direction in ("fwd", "bwd_wb"))


def matrix() -> list:
    """One pytest param per (backend, kernel, direction, rank[, place]) of the registry."""
    cases = []
    for kernel in registry.kernels(kind="kernel"):
        for direction in kernel_directions(kernel):
            for rank in sorted(LAYERS):
                places = GPU_PLACES if kernel.backend == "gpu" else ("host",)
                for place in places:
                    marks = [pytest.mark.gpu] if place == "device" else []
                    cases.append(pytest.param(
                        kernel.backend, kernel.name, direction, rank, place, marks=marks,
                        id=f"{kernel.backend}-{kernel.name}-{direction}-{rank}d-{place}"))
    return cases


MATRIX = matrix()


def runnable(backend: str, name: str, place: str):
    """The kernel as the case runs it, and how its operands go in."""
    kernel = registry.get_kernel(name, backend)
    if place == "emulator":
        reason = EMULATOR.unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        return type(kernel)(EMULATOR), lambda a: a
    if place == "device":
        import cupy  # the gpu marker skips this case where CuPy or a device is missing

        return kernel, cupy.asarray
    return kernel, lambda a: a


def smallest_accepted(kernel, direction: str, rank: int) -> tuple[ConvProblem | None, list]:
    """The first small layer of ``rank`` the kernel computes in ``direction``, and the
    reasons it gave for those it refused."""
    from convbench.contract import is_documented_refusal, refusal

    reasons = []
    for layer in LAYERS[rank]:
        p = in_direction(layer, direction)
        reason = refusal(kernel, p)
        if reason is None:
            return p, reasons
        assert is_documented_refusal(kernel, reason), (
            f"{kernel.backend} {kernel.name} refuses {p} with a reason it does not document: "
            f"{reason!r}")
        reasons.append(reason)
    return None, reasons


@pytest.mark.parametrize("backend, name, direction, rank, place", MATRIX)
def test_every_kernel_direction_and_rank_matches_the_reference(backend, name, direction, rank,
                                                                place):
    kernel, to_device = runnable(backend, name, place)
    p, reasons = smallest_accepted(kernel, direction, rank)
    if p is None:
        # A kernel may leave a rank to others, saying so; a direction it declares it must
        # compute on some small layer (2-D is the rank every kernel computes).
        assert rank != 2, f"{backend} {name} computes {direction} on none of {reasons}"
        pytest.skip(f"{backend} {name} {direction} {rank}-D: {reasons[0]}")
    operands = random_inputs(p, seed=rank)
    got = kernel.prepare(p, *(None if a is None else to_device(a) for a in operands))()
    got = tuple(to_host(g) for g in got) if isinstance(got, tuple) else to_host(got)
    errors = output_errors(p, got, reference_and_scales(p, *operands), kernel.error_model(p))
    assert errors["envelope_ratio"] <= 1, (
        f"{backend} {name} ({place}) {p}: {errors['envelope_ratio']:.3g} of its envelope")


def test_the_matrix_holds_every_registered_kernel_direction_and_backend():
    expected = {(k.backend, k.name, d) for k in registry.kernels(kind="kernel")
                for d in kernel_directions(k)}
    covered = {tuple(case.values[:3]) for case in MATRIX}
    assert covered == expected
    assert {k.backend for k in registry.kernels(kind="kernel")} <= set(BACKENDS)
    assert 2 in LAYERS, "the 2-D small layers no longer parse"
    gpu = [case.values for case in MATRIX if case.values[0] == "gpu"]
    assert {v[4] for v in gpu} == set(GPU_PLACES)  # device cases are collected, not left out


def test_no_case_of_the_matrix_is_left_to_the_slow_tier(request):
    here = [item for item in request.session.items if item.module is request.module]
    assert here, "collected through this module"
    slow = [item.nodeid for item in here if item.get_closest_marker("slow") is not None]
    assert slow == []
