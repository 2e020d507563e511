"""oneDNN through PyTorch: ``torch.nn.functional.conv2d`` and its gradients on the CPU.

PyTorch's CPU convolution dispatches to oneDNN (mkldnn) for float32; the
thread count is the harness's (``torch.set_num_threads``). Skipped with an
install hint when torch is absent.

The backward directions call aten's ``convolution_backward`` (what
``torch.nn.grad.conv2d_input`` and ``conv2d_weight`` call) with the output
mask of the direction, so that only the gradients asked for are computed.
Which of torch's convolution backends ran (``Mkldnn`` is oneDNN; float64
takes ``Slow2d``, torch's own im2col) is recorded in the call's details as
``torch_backend``, in every direction.

Three oneDNN baselines, for three questions:

* ``onednn`` -- the plain call on NCHW tensors with plain weights, which
  oneDNN reorders into its blocked layout inside every call. Kept as it
  was, so that older records keep their meaning.
* ``onednn_best`` -- NCHW in and NCHW out, as convbench's kernels get their
  operands, in the fastest of the configurations of
  :func:`nchw_configurations` (the plain call; weights prepacked once into
  oneDNN's layout by ``torch.utils.mkldnn``'s reorder; weights in
  channels-last once and the activations converted inside the call), chosen
  at ``prepare`` by timing them on samples of their own
  (:func:`convbench.kernels.cpu.base.fastest`), never on the samples a
  benchmark then reports. The prepared call's details say which ran
  (``configuration``). This is the peer of every "x oneDNN" figure.
* ``onednn_cl`` -- channels-last tensors end to end (``x``, ``w`` and the
  output, and ``dy``/``dx``/``dw`` backward), as in a model that runs
  channels-last: the operands are converted once in ``prepare`` and the
  output stays channels-last. Another input layout, not the same task, so
  its tables label it as such: a channels-last user reads their gap from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convbench.contract import KernelBase, Prepared
from convbench.problem import ConvProblem

INSTALL_HINT = "torch is not installed: pip install 'convbench[compare]' (torch==2.13.0, CPU)"


def _torch() -> Any:
    try:
        import torch  # noqa: PLC0415 -- optional dependency
    except ImportError:
        return None
    return torch


def torch_padding(p: ConvProblem) -> tuple[Any, tuple[int, int, int, int] | None]:
    """PyTorch ``padding`` for ``p``, plus an explicit pre-pad when it is asymmetric.

    Returns ``(padding, pre_pad)``: ``pre_pad`` is ``(left, right, top, bottom)``
    for ``torch.nn.functional.pad`` (done once in ``prepare``), else ``None``.
    """
    (pt, pb), (pl, pr) = p.padding
    if pt == pb and pl == pr:
        return (pt, pl), None
    # Bottom/right padding the stride never reads is equivalent to the top/left one.
    if p.natural_oh == p.oh and p.natural_ow == p.ow:
        return (p.ph, p.pw), None
    return 0, (pl, pr, pt, pb)


def torch_backend(torch: Any, p: ConvProblem, x: Any, w: Any, bias: Any,
                  padding: Any) -> str:
    """The convolution backend torch selects for these operands (``Mkldnn`` is oneDNN)."""
    try:
        chosen = torch._C._select_conv_backend(
            x, w, bias, list(p.stride), list(padding) if not isinstance(padding, int)
            else [padding, padding], list(p.dilation), False, [0, 0], p.g, None)
    except (AttributeError, RuntimeError, TypeError):  # private API: may move
        return "unknown"
    return str(chosen).rpartition(".")[2]


class OneDnnBaseline(KernelBase):
    """``torch.nn.functional.conv2d`` on the CPU (oneDNN), strict float32 or float64.

    ``workspace_bytes`` is 0: oneDNN's scratchpad is not observable from Python.
    """

    name = "onednn"
    #: The memory layout of the operands the timed call takes and returns.
    layout = "NCHW"
    family = "direct"
    kind = "baseline"
    directions = ("fwd", "bwd_d", "bwd_w", "bwd_wb")

    dtypes = ("float32", "float64")

    def supports(self, p: ConvProblem) -> str | None:
        return INSTALL_HINT if _torch() is None else super().supports(p)

    def prepare_call(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                     bias: np.ndarray | None) -> Callable[[], Any]:
        if p.dir != "fwd":
            return self._prepare_backward(p, x, w)
        torch = _torch()
        f = torch.nn.functional
        padding, pre_pad = torch_padding(p)
        xt = torch.from_numpy(x)
        if pre_pad is not None:
            # Negative amounts crop rows the output never reads.
            xt = f.pad(xt, pre_pad)
        wt = torch.from_numpy(w)
        bt = None if bias is None else torch.from_numpy(bias)

        def run() -> Any:
            with torch.no_grad():
                return f.conv2d(xt, wt, bt, stride=p.stride, padding=padding,
                                dilation=p.dilation, groups=p.g)

        return Prepared(run, {"torch_backend": torch_backend(torch, p, xt, wt, bt, padding)})

    def _prepare_backward(self, p: ConvProblem, a: np.ndarray, b: np.ndarray) -> Prepared:
        """bwd_d from ``(dy, w)``; bwd_w and bwd_wb from ``(x, dy)``: aten's
        ``convolution_backward`` with the direction's output mask."""
        torch = _torch()
        dy, x, w, mask, args, finish = _backward_operands(p, a, b)
        bias_sizes = [p.oc] if mask[2] else None
        backend = torch_backend(torch, p, x, w, None, tuple(args[1]))

        def run() -> Any:
            with torch.no_grad():
                return finish(torch.ops.aten.convolution_backward(dy, x, w, bias_sizes, *args))

        return Prepared(run, {"torch_backend": backend})


#: ``onednn_best``'s configurations for NCHW in and NCHW out (see the module docstring).
NCHW_CONFIGURATIONS = ("plain", "prepacked", "cl_inside")


def _forward_operands(p: ConvProblem, x: np.ndarray, w: np.ndarray,
                      bias: np.ndarray | None) -> tuple[Any, Any, Any, Any]:
    """``(x, w, bias, padding)`` as torch tensors, asymmetric padding applied to ``x``."""
    torch = _torch()
    padding, pre_pad = torch_padding(p)
    xt = torch.from_numpy(x)
    if pre_pad is not None:
        xt = torch.nn.functional.pad(xt, pre_pad)  # negative amounts crop unread rows
    return xt, torch.from_numpy(w), None if bias is None else torch.from_numpy(bias), padding


def _pair(v: Any) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


def nchw_configurations(p: ConvProblem, x: np.ndarray, w: np.ndarray,
                        bias: np.ndarray | None) -> dict[str, Callable[[], Any]]:
    """oneDNN's ways of computing ``p`` with NCHW in and NCHW out, each a call.

    * ``plain`` -- ``conv2d`` (forward) or ``convolution_backward`` on NCHW
      tensors and plain weights: oneDNN reorders the weights in every call;
    * ``prepacked`` (forward, float32) -- the weights reordered once into
      oneDNN's blocked layout (``mkldnn_reorder_conv2d_weight``, what
      ``torch.utils.mkldnn.to_mkldnn`` does to a ``Conv2d``), the input
      converted to a oneDNN tensor and the output back to NCHW in the call;
    * ``cl_inside`` -- the weights in channels-last once, the activations
      converted to channels-last and the result back to NCHW in the call.
    """
    torch = _torch()
    if p.dir != "fwd":
        return _backward_configurations(p, x, w)
    f = torch.nn.functional
    xt, wt, bt, padding = _forward_operands(p, x, w, bias)
    args = dict(stride=p.stride, padding=padding, dilation=p.dilation, groups=p.g)
    wcl = wt.contiguous(memory_format=torch.channels_last)
    cl = torch.channels_last

    def plain() -> Any:
        with torch.no_grad():
            return f.conv2d(xt, wt, bt, **args)

    def cl_inside() -> Any:
        with torch.no_grad():
            return f.conv2d(xt.contiguous(memory_format=cl), wcl, bt, **args).contiguous()

    calls = {"plain": plain}
    if p.dtype == "float32":  # oneDNN tensors are float32 (and bf16) only
        packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
            wt.to_mkldnn(), _pair(padding), list(p.stride), list(p.dilation), p.g,
            list(xt.shape))
        pad, stride, dil = _pair(padding), list(p.stride), list(p.dilation)

        def prepacked() -> Any:
            with torch.no_grad():
                return torch.mkldnn_convolution(xt.to_mkldnn(), packed, bt, pad, stride, dil,
                                                p.g).to_dense()

        calls["prepacked"] = prepacked
    calls["cl_inside"] = cl_inside
    return calls


def _backward_operands(p: ConvProblem, a: np.ndarray, b: np.ndarray
                       ) -> tuple[Any, Any, Any, list[bool], tuple, Callable[[Any], Any]]:
    """``(dy, x, w, mask, args, finish)`` of aten's ``convolution_backward`` for ``p``.

    bwd_d passes ``(dy, w)`` and a zero ``x`` (only its shape is read);
    bwd_w and bwd_wb pass ``(x, dy)`` and a zero ``w``. ``finish`` turns the
    op's three results into the direction's output (``dx`` with its padding
    cropped, ``dw``, or ``(dw, db)``).
    """
    torch = _torch()
    f = torch.nn.functional
    padding, pre_pad = torch_padding(p)
    (pt, pb), (pl, pr) = p.padding
    padded_shape = (p.mb, p.ic, p.padded_height, p.padded_width)
    if p.dir == "bwd_d":
        dy, w = torch.from_numpy(a), torch.from_numpy(b)
        # Only its shape is read for dx; allocated here, not in the timed call.
        x = torch.zeros(padded_shape if pre_pad else p.input_shape, dtype=w.dtype)
        mask = [True, False, False]
    else:
        x, dy = torch.from_numpy(a), torch.from_numpy(b)
        if pre_pad is not None:
            x = f.pad(x, pre_pad)  # negative amounts crop rows no window reads
        w = torch.zeros(p.weight_shape, dtype=x.dtype)
        mask = [False, True, p.dir == "bwd_wb"]
    pad = list(padding) if pre_pad is None else [0, 0]
    args = (list(p.stride), pad, list(p.dilation), False, [0, 0], p.g, mask)

    def finish(grads: tuple[Any, Any, Any]) -> Any:
        dx, dw, db = grads
        if p.dir == "bwd_d":
            # The padded input's gradient, its padding cropped off (and zeros for
            # trailing rows no window read).
            return dx if pre_pad is None else f.pad(dx, (-pl, -pr, -pt, -pb))
        return (dw, db) if p.dir == "bwd_wb" else dw

    return dy, x, w, mask, args, finish


def _backward_configurations(p: ConvProblem, a: np.ndarray, b: np.ndarray
                             ) -> dict[str, Callable[[], Any]]:
    """``plain`` and ``cl_inside`` for a backward direction (prepacked weights have no
    backward in torch)."""
    torch = _torch()
    dy, x, w, mask, args, finish = _backward_operands(p, a, b)
    bias_sizes = [p.oc] if mask[2] else None
    cl = torch.channels_last
    xcl, wcl = x.contiguous(memory_format=cl), w.contiguous(memory_format=cl)
    # What the direction reads from x (bwd_w) or w (bwd_d) is converted in the call.
    reads_x = p.dir != "bwd_d"

    def plain() -> Any:
        with torch.no_grad():
            return finish(torch.ops.aten.convolution_backward(dy, x, w, bias_sizes, *args))

    def cl_inside() -> Any:
        with torch.no_grad():
            grads = torch.ops.aten.convolution_backward(
                dy.contiguous(memory_format=cl),
                x.contiguous(memory_format=cl) if reads_x else xcl,
                wcl, bias_sizes, *args)
            out = finish(grads)
            if isinstance(out, tuple):
                return out[0].contiguous(), out[1]
            return out.contiguous()

    return {"plain": plain, "cl_inside": cl_inside}


def channels_last_call(p: ConvProblem, a: np.ndarray, b: np.ndarray,
                       bias: np.ndarray | None) -> Callable[[], Any]:
    """``p`` on channels-last tensors end to end: operands converted once, output kept
    channels-last."""
    torch = _torch()
    cl = torch.channels_last
    if p.dir == "fwd":
        xt, wt, bt, padding = _forward_operands(p, a, b, bias)
        xt, wt = xt.contiguous(memory_format=cl), wt.contiguous(memory_format=cl)
        f = torch.nn.functional

        def run() -> Any:
            with torch.no_grad():
                return f.conv2d(xt, wt, bt, stride=p.stride, padding=padding,
                                dilation=p.dilation, groups=p.g)

        return run
    dy, x, w, mask, args, finish = _backward_operands(p, a, b)
    dy, x, w = (t.contiguous(memory_format=cl) for t in (dy, x, w))
    bias_sizes = [p.oc] if mask[2] else None

    def run_backward() -> Any:
        with torch.no_grad():
            return finish(torch.ops.aten.convolution_backward(dy, x, w, bias_sizes, *args))

    return run_backward


#: ``onednn_best`` keeps the plain call unless another configuration is faster by more.
CHOICE_MARGIN = 0.05


class OneDnnBest(OneDnnBaseline):
    """oneDNN with NCHW in and out in its fastest configuration for the layer.

    ``prepare`` times :func:`nchw_configurations` against each other (the
    median of alternating samples after cool-downs,
    :func:`convbench.kernels.cpu.base.fastest`, kept per layer and thread
    count) and returns the fastest, keeping the plain call unless another
    beats it by :data:`CHOICE_MARGIN`; its details name it (``configuration``).
    """

    name = "onednn_best"
    layout = "NCHW"

    def prepare_call(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                     bias: np.ndarray | None) -> Callable[[], Any]:
        from convbench.kernels.cpu.base import fastest  # noqa: PLC0415 -- imports numba

        torch = _torch()
        calls = nchw_configurations(p, x, w, bias)
        choice = (next(iter(calls)) if len(calls) == 1 else
                  fastest(calls, key=(self.name, str(p), p.dir, torch.get_num_threads()),
                          margin=CHOICE_MARGIN))
        return Prepared(calls[choice], {"configuration": choice, "layout": self.layout,
                                        "torch_backend": _backend_of(p, x, w, bias)})


class OneDnnChannelsLast(OneDnnBaseline):
    """oneDNN on channels-last (NHWC) tensors end to end: another input layout.

    What a model that runs channels-last gets; convbench's kernels take NCHW,
    so a ratio against this baseline compares two layouts, and tables label
    it so.
    """

    name = "onednn_cl"
    layout = "NHWC"

    def prepare_call(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                     bias: np.ndarray | None) -> Callable[[], Any]:
        return Prepared(channels_last_call(p, x, w, bias),
                        {"configuration": "channels_last", "layout": self.layout,
                         "torch_backend": _backend_of(p, x, w, bias, channels_last=True)})


def _backend_of(p: ConvProblem, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None,
                channels_last: bool = False) -> str:
    """The convolution backend torch selects for ``p`` (``Mkldnn`` is oneDNN)."""
    torch = _torch()
    if p.dir == "fwd":
        x, w, bt, padding = _forward_operands(p, a, b, bias)
    else:
        _, x, w, _, args, _ = _backward_operands(p, a, b)
        bt, padding = None, tuple(args[1])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    return torch_backend(torch, p, x, w, bt, padding)


KERNELS = [OneDnnBaseline(), OneDnnBest(), OneDnnChannelsLast()]
