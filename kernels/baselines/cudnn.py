"""cuDNN, engine by engine, through the cuDNN frontend's Python API (``import cudnn``).

For each problem ``prepare`` builds the graph of its direction (NCHW, strides
given explicitly): ``conv_fprop`` (fwd), ``conv_dgrad`` (bwd_d: ``dx`` from
``dy`` and ``w``) or ``conv_wgrad`` (bwd_w, bwd_wb: ``dw`` from ``x`` and
``dy``), asks cuDNN's heuristics (mode A, then the fallback list)
for execution plans, builds *every* plan, and classifies each by its
numerical notes (tensor core, down-converted inputs, reduced-precision
reduction, FFT, Winograd) through the frontend's note filters. Two baselines
use that list:

* ``cudnn``: the heuristic choice, i.e. the first plan in heuristic order
  that respects the problem's math mode;
* ``cudnn_best``: every admissible plan timed with CUDA events, the fastest
  kept. Its record carries the whole table (engine tag, workspace, notes,
  time) under ``details.plans``.

Math modes: float32 is strict, so plans noted TENSOR_CORE or
DOWN_CONVERT_INPUTS (TF32) are timed and listed but not admissible; float16
must accumulate in float32, so REDUCED_PRECISION_REDUCTION plans are not.
Bias, when the problem has one, is a separate CuPy add after the plan (a
fused conv+bias graph would leave only fusion engines to compare); likewise
bwd_wb's bias gradient is a CuPy sum of ``dy`` over (N, P, Q), in float64.
Tensors are CuPy device pointers, on CuPy's current stream. Skipped with the
install hint when the frontend, CuPy or a GPU is missing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from convbench.contract import TF32_UNIT_ROUNDOFF, KernelBase, Prepared
from convbench.errors import UnsupportedProblem
from convbench.measure.clocks import CudaEventClock
from convbench.measure.timing import bench
from convbench.problem import ConvProblem

from ..gpu.base import GPU_DTYPES
from ..gpu.runtime import CUDNN_INSTALL_HINT as INSTALL_HINT
from ..gpu.runtime import UNAVAILABLE_REFUSALS, default_runtime

#: Numerical notes recorded per plan (names of ``cudnn.numerical_note``).
NOTES = ("TENSOR_CORE", "DOWN_CONVERT_INPUTS", "REDUCED_PRECISION_REDUCTION", "FFT",
         "WINOGRAD", "WINOGRAD_TILE_4x4", "WINOGRAD_TILE_6x6", "WINOGRAD_TILE_13x13",
         "NONDETERMINISTIC")

#: Timed runs per plan when ``cudnn_best`` autotunes (after the first and 3 warm-up runs).
TUNE_REPS = 10


#: The frontend's graph operation per direction.
OPERATIONS = {"fwd": "conv_fprop", "bwd_d": "conv_dgrad", "bwd_w": "conv_wgrad",
              "bwd_wb": "conv_wgrad"}


@dataclass
class CudnnPlan:
    """One execution plan of a convolution graph (fprop, dgrad or wgrad)."""

    index: int
    name: str  # engine tag with knobs, e.g. "eng28_k2=2_k3=0"
    workspace_bytes: int
    notes: list[str] = field(default_factory=list)
    median_s: float | None = None
    failure: str | None = None

    @property
    def algorithm(self) -> str:
        return engine_algorithm(self.notes)


def engine_algorithm(notes: Iterable[str]) -> str:
    """``"fft"``, ``"winograd"`` or ``"gemm/direct"`` from a plan's numerical notes."""
    notes = set(notes)
    if "FFT" in notes:
        return "fft"
    if any(n.startswith("WINOGRAD") for n in notes):
        return "winograd"
    return "gemm/direct"


def inadmissible_reason(notes: Iterable[str], math: str) -> str | None:
    """Why a plan with ``notes`` breaks math mode ``math`` (fp32, tf32, fp16, fp64), or ``None``."""
    notes = set(notes)
    if math == "fp32" and notes & {"TENSOR_CORE", "DOWN_CONVERT_INPUTS"}:
        return "tensor-core (TF32) engine: not strict fp32"
    if math == "fp16" and "REDUCED_PRECISION_REDUCTION" in notes:
        return "accumulates in fp16"
    return None


def error_model(plan: CudnnPlan, math: str) -> dict[str, Any]:
    """The error model of what ``plan`` computes in math mode ``math``.

    Its algorithm family from its notes; in tf32, a tensor-core or
    down-converting engine rounds float32 operands to TF32 (fp16 operands
    are used as stored).
    """
    family = {"fft": "fft", "winograd": "winograd"}.get(plan.algorithm, "direct")
    tf32 = math == "tf32" and bool({"TENSOR_CORE", "DOWN_CONVERT_INPUTS"} & set(plan.notes))
    return {"family": family, "operand_roundoff": TF32_UNIT_ROUNDOFF if tf32 else 0.0}


def choose_plan(plans: list[CudnnPlan], math: str, select: str) -> CudnnPlan:
    """The heuristic choice (first admissible) or the fastest admissible timed plan.

    Raises
    ------
    UnsupportedProblem
        If no plan is admissible (or, for ``"best"``, none was timed).
    """
    ok = [pl for pl in plans if pl.failure is None and inadmissible_reason(pl.notes, math) is None]
    if select == "best":
        ok = [pl for pl in ok if pl.median_s is not None]
        if ok:
            return min(ok, key=lambda pl: pl.median_s)
    elif ok:
        return ok[0]
    raise UnsupportedProblem(f"cuDNN offers no admissible plan for math mode {math} "
                             f"among {len(plans)}")


def cudnn_geometry(p: ConvProblem) -> tuple[list[int], list[int], tuple[int, int]]:
    """Pre-padding, post-padding and the input extent (rows, columns) handed to cuDNN.

    ``ConvProblem.padding`` gives a negative bottom/right padding where the
    stride never reaches the trailing input rows (a 1x1 stride-2 layer on an
    even image: -1); cuDNN refuses negative padding. The post-padding is
    clamped at 0, and where that alone would give cuDNN a larger output than
    ``p`` has (an ``oh`` below the natural one), the trailing rows that no
    output reads are left out of the input tensor (same strides, smaller
    extent), so that cuDNN's output size is exactly ``p.oh x p.ow``.
    """
    (pt, pb), (pl, pr) = p.padding
    # Rows to leave out: with post-padding 0, cuDNN's output is
    # floor((H - crop + pt - R_eff) / sh) + 1, which equals P for crop = -pb - (sh - 1).
    crop_h = max(0, -pb - (p.sh - 1))
    crop_w = max(0, -pr - (p.sw - 1))
    return [pt, pl], [max(pb, 0), max(pr, 0)], (p.ih - crop_h, p.iw - crop_w)


@functools.cache
def shared_handle() -> Any:
    """One cuDNN handle per process: loading the library and creating it costs seconds."""
    return _cudnn().create_handle()


def _cudnn() -> Any:
    try:
        import cudnn  # noqa: PLC0415 -- optional dependency (nvidia-cudnn-frontend)
    except ImportError:
        return None
    except Exception:  # noqa: BLE001 -- present but its library failed to load
        return None
    return cudnn


def _failed(result: Any) -> bool:
    """Frontend calls either raise or return a status object with ``is_bad()``."""
    return bool(getattr(result, "is_bad", lambda: False)())


class CudnnFrontendBaseline(KernelBase):
    """cuDNN's execution plans of conv_fprop, conv_dgrad and conv_wgrad, through the frontend.

    ``workspace_bytes`` is 0: each plan's workspace is in ``details.plans``.

    Parameters
    ----------
    select : {"heuristic", "best"}
    """

    backend = "gpu"
    kind = "baseline"
    clock = "cuda-events"
    dtypes = GPU_DTYPES
    directions = ("fwd", "bwd_d", "bwd_w", "bwd_wb")
    uses_tf32 = True  # tensor-core engines are admissible where fpmath allows TF32
    documented_refusals = (*UNAVAILABLE_REFUSALS, r"^cuDNN offers no admissible plan ")

    def __init__(self, select: str) -> None:
        if select not in ("heuristic", "best"):
            raise ValueError(f"select must be 'heuristic' or 'best', got {select!r}")
        self.select = select
        self.name = "cudnn" if select == "heuristic" else "cudnn_best"

    def supports(self, p: ConvProblem) -> str | None:
        reason = super().supports(p)
        if reason:
            return reason
        if _cudnn() is None:
            return INSTALL_HINT
        return default_runtime().unavailable_reason()

    # ------------------------------------------------------------- graph
    def _graph(self, cudnn: Any, p: ConvProblem) -> tuple[Any, dict[str, Any], Any]:
        """The graph of ``p.dir`` with its execution plans: (graph, operand tensors, result).

        Operand tensors are keyed ``"x"``, ``"w"``, ``"dy"`` as the direction
        reads them; the result is ``y``, ``dx`` or ``dw``.
        """
        types = {"float32": cudnn.data_type.FLOAT, "float16": cudnn.data_type.HALF,
                 "float64": cudnn.data_type.DOUBLE}
        io = types[p.dtype]
        compute = cudnn.data_type.DOUBLE if p.dtype == "float64" else cudnn.data_type.FLOAT
        graph = cudnn.pygraph(io_data_type=io, intermediate_data_type=compute,
                              compute_data_type=compute, handle=shared_handle())
        n, c, h, w = p.input_shape
        k, cg, r, s = p.weight_shape
        _, kk, oh, ow = p.output_shape
        pre, post, (h_read, w_read) = cudnn_geometry(p)
        # The input (or its gradient) as cuDNN sees it: trailing rows no output reads
        # left out, strides of the whole tensor.
        x_dims, x_strides = [n, c, h_read, w_read], [c * h * w, h * w, w, 1]
        w_dims, w_strides = [k, cg, r, s], [cg * r * s, r * s, s, 1]
        y_dims, y_strides = [n, kk, oh, ow], [kk * oh * ow, oh * ow, ow, 1]
        geometry = {"pre_padding": pre, "post_padding": post, "stride": list(p.stride),
                    "dilation": list(p.dilation), "compute_data_type": compute}
        tensors = {}
        if p.dir == "fwd":
            tensors["x"] = graph.tensor(name="X", dim=x_dims, stride=x_strides, data_type=io)
            tensors["w"] = graph.tensor(name="W", dim=w_dims, stride=w_strides, data_type=io)
            result = graph.conv_fprop(image=tensors["x"], weight=tensors["w"], **geometry)
            dims, strides = y_dims, y_strides
        elif p.dir == "bwd_d":
            tensors["dy"] = graph.tensor(name="DY", dim=y_dims, stride=y_strides, data_type=io)
            tensors["w"] = graph.tensor(name="W", dim=w_dims, stride=w_strides, data_type=io)
            result = graph.conv_dgrad(loss=tensors["dy"], filter=tensors["w"], **geometry)
            dims, strides = x_dims, x_strides
        else:
            tensors["x"] = graph.tensor(name="X", dim=x_dims, stride=x_strides, data_type=io)
            tensors["dy"] = graph.tensor(name="DY", dim=y_dims, stride=y_strides, data_type=io)
            result = graph.conv_wgrad(image=tensors["x"], loss=tensors["dy"], **geometry)
            dims, strides = w_dims, w_strides
        result.set_output(True).set_data_type(io).set_dim(dims).set_stride(strides)
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        return graph, tensors, result

    def _noted_names(self, cudnn: Any, p: ConvProblem, note: str) -> set[str]:
        """Names of the plans that carry numerical ``note`` (via the frontend's filter)."""
        graph, *_ = self._graph(cudnn, p)
        graph.select_numeric_notes([getattr(cudnn.numerical_note, note)])
        graph.check_support()
        names = set()
        for i in range(graph.get_execution_plan_count()):
            try:
                if not _failed(graph.build_plan_at_index(i)):
                    names.add(graph.get_plan_name_at_index(i))
            except Exception:  # noqa: BLE001,S112 -- deselected or unsupported: no note
                continue
        return names

    def enumerate_plans(self, p: ConvProblem) -> tuple[Any, dict[str, Any], Any,
                                                       list[CudnnPlan]]:
        """Build every plan cuDNN offers for ``p`` and classify it by its notes."""
        cudnn = _cudnn()
        graph, tensors, result = self._graph(cudnn, p)
        graph.check_support()
        graph.build_plans(cudnn.build_plan_policy.ALL)
        plans = []
        for i in range(graph.get_execution_plan_count()):
            name = graph.get_plan_name_at_index(i)
            try:
                ws = int(graph.get_workspace_size_plan_at_index(i))
                failure = None
            except Exception as exc:  # noqa: BLE001 -- a plan that did not build
                ws, failure = 0, f"{type(exc).__name__}: {exc}"
            plans.append(CudnnPlan(i, name, ws, failure=failure))
        for note in NOTES:
            if not hasattr(cudnn.numerical_note, note):
                continue  # older frontends lack the newer notes
            try:
                noted = self._noted_names(cudnn, p, note)
            except Exception:  # noqa: BLE001,S112 -- no plan with that note at all
                continue
            for plan in plans:
                if plan.name in noted:
                    plan.notes.append(note)
        return graph, tensors, result, plans

    # ----------------------------------------------------------- prepare
    def prepare_call(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> Callable[[], Any]:
        """Operands in the order of ``p.dir`` (``x, w`` / ``dy, w`` / ``x, dy``)."""
        rt = default_runtime()
        cupy = rt.xp
        cudnn = _cudnn()
        names = {"fwd": ("x", "w"), "bwd_d": ("dy", "w")}.get(p.dir, ("x", "dy"))
        operands = {names[0]: rt.asarray(x), names[1]: rt.asarray(w)}
        bd = None if bias is None or p.dir != "fwd" else rt.asarray(bias).reshape(1, p.oc, 1, 1)
        shape = {"fwd": p.output_shape, "bwd_d": p.input_shape}.get(p.dir, p.weight_shape)
        # zeros: rows of dx that no output reads are outside cuDNN's tensor (cudnn_geometry)
        out = cupy.zeros(shape, dtype=p.dtype)
        db = cupy.empty(p.oc, dtype=p.dtype) if p.dir == "bwd_wb" else None
        graph, tensors, result, plans = self.enumerate_plans(p)
        stream = cupy.cuda.get_current_stream()
        cudnn.set_stream(handle=shared_handle(), stream=stream.ptr)
        pack = {tensors[key]: operands[key].data.ptr for key in tensors}
        pack[result] = out.data.ptr
        workspace = cupy.empty(max([pl.workspace_bytes for pl in plans] + [1]), dtype=cupy.uint8)

        def execute(index: int) -> None:
            graph.execute_plan_at_index(pack, workspace.data.ptr, index, handle=shared_handle())

        if self.select == "best":
            tune(plans, execute)
        chosen = choose_plan(plans, p.math, self.select)

        def run() -> Any:
            execute(chosen.index)
            if bd is not None:
                out[...] += bd
            if db is not None:
                dy = operands["dy"]
                db[...] = dy.reshape(p.mb, p.oc, p.oh * p.ow).sum(axis=2,
                                                                  dtype=cupy.float64).sum(axis=0)
                return out, db
            return out

        return Prepared(run, {
            "select": self.select, "operation": OPERATIONS[p.dir], "chosen": chosen.index,
            "engine": chosen.name,
            "algorithm": chosen.algorithm, "notes": chosen.notes,
            "error_model": error_model(chosen, p.math),
            "workspace_bytes": chosen.workspace_bytes,
            "plans": [dict(asdict(pl), algorithm=pl.algorithm,
                           admissible=inadmissible_reason(pl.notes, p.math) is None)
                      for pl in plans],
        })


def tune(plans: list[CudnnPlan], execute: Callable[[int], None]) -> None:
    """Median time of every built plan (admissible or not), on CUDA events."""
    clock = CudaEventClock()
    for plan in plans:
        if plan.failure is not None:
            continue
        try:
            timing = bench(lambda index=plan.index: execute(index), clock=clock,
                           min_reps=TUNE_REPS, min_time=0.0, warmup=3)
            plan.median_s = timing.median_s
        except Exception as exc:  # noqa: BLE001 -- a plan that fails to run is data
            plan.failure = f"{type(exc).__name__}: {exc}"


KERNELS = [CudnnFrontendBaseline("heuristic"), CudnnFrontendBaseline("best")]
