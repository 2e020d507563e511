"""The convolution problem model and its benchdnn descriptor text.

One :class:`ConvProblem` describes one 2-D convolution in one direction:
shapes, stride, padding, dilation, groups, bias, dtype and which of the
training convolutions is computed (``dir``: the forward pass, the gradient of
the input, of the weights, or of the weights and the bias). Correctness checks,
timing, suites and results all share it, as in benchdnn, so that any
record can be reproduced by pasting its descriptor.

Descriptor grammar (benchdnn's ``conv-desc``)::

    [--dt=f32|f64|f16] [--dir=FWD_D|FWD_B|FWD_I|BWD_D|BWD_W|BWD_WB] [--mb=N]
    [--attr-fpmath=strict|tf32]
    gX mbX icX ihX iwX ocX ohX owX khX kwX shX swX phX pwX dhX dwX nNAME

* ``_`` between tokens is ignored; ``n"name"`` or a bare name ending the text.
* A token given twice takes its last value, as in benchdnn (its own input
  files repeat tokens, e.g. ``kh5`` in ``shapes_regression_padding``).
* Defaults: ``g1 mb2 sh1 ph0 dh0``; a missing ``w`` value copies ``h``; with no
  ``ih`` at all the problem is 1-D (``ih1 kh1``).
* Dilation uses benchdnn's convention: ``dh0`` is no dilation, ``dh1`` means
  a gap of one, i.e. PyTorch's ``dilation=2``.
* Padding: ``ph``/``pw`` are the top/left padding. The bottom/right padding is
  implied by ``oh``/``ow`` (benchdnn's rule), which is how asymmetric padding
  such as PyTorch's ``"same"`` for even filters is written. A missing ``oh`` is
  computed with symmetric padding; a given ``oh`` with no ``ph`` implies
  ``ph = ((oh-1)*sh - ih + kh_eff) // 2``.
* ``--dt`` selects the dtype (default f32). ``--dir=FWD_B`` means with bias;
  convbench's default is *without* bias (``FWD_D``), unlike benchdnn's, because
  ``torch.nn.functional.conv2d`` defaults to ``bias=None``.
* ``--dir=BWD_D`` (gradient of the input), ``BWD_W`` (of the weights) and
  ``BWD_WB`` (of the weights and the bias) are benchdnn's backward directions.
  The bias enters neither ``dx`` nor ``dw``, so a ``BWD_D``/``BWD_W`` problem
  has ``bias=False``; ``BWD_WB`` is ``BWD_W`` of a layer with bias.
* ``--attr-fpmath=tf32`` (benchdnn's attribute) lets float32 problems compute
  with TF32 operands (10-bit mantissa, float32 accumulation); the default
  ``strict`` forbids any implicit down-conversion.
* 3-D descriptors (``id``, ``kd``...) raise :class:`UnsupportedDescriptor`, a
  ``ValueError`` that suite files turn into a skipped line instead of an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

#: dtype name -> benchdnn ``--dt`` spelling.
DTYPE_TO_DT = {"float32": "f32", "float64": "f64", "float16": "f16"}
DT_TO_DTYPE = {v: k for k, v in DTYPE_TO_DT.items()}

_INT_TOKENS = ("mb", "ic", "ih", "iw", "oc", "oh", "ow", "kh", "kw", "sh", "sw",
               "ph", "pw", "dh", "dw", "g")
_3D_TOKENS = ("id", "od", "kd", "sd", "pd", "dd")
_TOKEN_RE = re.compile(r"(mb|ic|id|ih|iw|oc|od|oh|ow|kd|kh|kw|sd|sh|sw|pd|ph|pw|dd|dh|dw|g)(\d+)")
_NAME_RE = re.compile(r'n(?:"([^"]*)"|(\S+))$')
_KNOB_RE = re.compile(r"--(dt|cfg|dir|mb|attr-fpmath)=(\S+)")

#: Directions of a problem, as in benchdnn: the forward pass, the gradient of the
#: input (backward data), of the weights, and of the weights and the bias.
DIRECTIONS = ("fwd", "bwd_d", "bwd_w", "bwd_wb")
#: benchdnn's ``--dir`` names -> convbench's direction. FWD_B is the forward pass
#: with bias; FWD_I (inference) computes the same thing as FWD_D.
BENCHDNN_DIRECTIONS = {"FWD_D": "fwd", "FWD_B": "fwd", "FWD_I": "fwd", "BWD_D": "bwd_d",
                       "BWD_W": "bwd_w", "BWD_WB": "bwd_wb"}
#: convbench's backward directions -> their benchdnn ``--dir`` spelling.
DIRECTION_TO_DIR = {"bwd_d": "BWD_D", "bwd_w": "BWD_W", "bwd_wb": "BWD_WB"}

#: Floating-point math modes of a problem (benchdnn's ``--attr-fpmath``).
FPMATH_MODES = ("strict", "tf32")
#: The math modes users choose, as (dtype, fpmath) of the problem.
MATH_MODES = {"fp32": ("float32", "strict"), "tf32": ("float32", "tf32"),
              "fp16": ("float16", "strict"), "fp64": ("float64", "strict")}


class UnsupportedDescriptor(ValueError):
    """Well-formed descriptor text of a problem convbench does not model (3-D)."""


def normalize_direction(name: Any) -> str:
    """The canonical direction (``"fwd"``...) of convbench's or benchdnn's name for it.

    Accepts :data:`DIRECTIONS` and benchdnn's ``--dir`` names (``FWD_D``,
    ``FWD_B``, ``FWD_I``, ``BWD_D``, ``BWD_W``, ``BWD_WB``), in any case.

    Raises
    ------
    TypeError
        If ``name`` is not a str.
    ValueError
        If it names no direction.
    """
    if not isinstance(name, str):
        raise TypeError(f"direction must be a str, got {type(name).__name__}")
    if name.lower() in DIRECTIONS:
        return name.lower()
    if name.upper() in BENCHDNN_DIRECTIONS:
        return BENCHDNN_DIRECTIONS[name.upper()]
    raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)} (or benchdnn's "
                     f"{', '.join(BENCHDNN_DIRECTIONS)}), got {name!r}")


def _pair(value: Any, what: str, minimum: int) -> tuple[int, int]:
    """Normalize an int or an (h, w) pair of ints, each ``>= minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{what} must be an int or a pair of ints (h, w), got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return pair


def effective_extent(size: int, dilation: int) -> int:
    """Extent ``d*(k-1)+1`` that a dilated filter of ``size`` taps covers."""
    return dilation * (size - 1) + 1


def output_extent(size: int, ksize: int, stride: int, pad_lo: int, pad_hi: int,
                  dilation: int) -> int:
    """Output length ``(size + pad_lo + pad_hi - d*(k-1) - 1) // stride + 1``."""
    return (size + pad_lo + pad_hi - effective_extent(ksize, dilation)) // stride + 1


def normalize_dtype(dtype: Any) -> str:
    """Return the canonical dtype name (``"float32"``...) or raise ``TypeError``."""
    try:
        name = np.dtype(DT_TO_DTYPE.get(dtype, dtype)).name
    except TypeError:
        raise TypeError(f"dtype must be float16, float32 or float64, got {dtype!r}") from None
    if name not in DTYPE_TO_DT:
        raise TypeError(f"dtype must be float16, float32 or float64, got {name}")
    return name


@dataclass(frozen=True)
class ConvProblem:
    """Shape, parameters and direction of one 2-D convolution (NCHW, KCRS).

    ``dir`` is one of :data:`DIRECTIONS`: ``"fwd"`` computes ``y`` from
    ``x`` and ``w``; ``"bwd_d"`` computes ``dx`` from ``dy`` and ``w``;
    ``"bwd_w"`` computes ``dw`` from ``x`` and ``dy``; ``"bwd_wb"`` also
    computes ``db``. Shapes keep their meaning in every direction
    (:attr:`input_shape` is ``x``'s and ``dx``'s, :attr:`output_shape` is
    ``y``'s and ``dy``'s), and so does :attr:`flops`;
    ``dataclasses.replace(p, dir="bwd_d")`` is the same layer in another
    direction. ``bias`` says whether the computation involves a bias: a
    ``"bwd_d"`` or ``"bwd_w"`` problem has ``bias=False`` (it is set so, since
    neither ``dx`` nor ``dw`` depends on it), and a ``"bwd_wb"`` problem must
    have ``bias=True``.

    Field names follow benchdnn (``mb``, ``ic``, ``ih``...). ``ph``/``pw`` are
    the top/left padding; the bottom/right padding follows from ``oh``/``ow``
    (see :attr:`padding`). ``dil_h``/``dil_w`` use PyTorch's convention
    (1 = no dilation). Use :meth:`make` for PyTorch-style arguments and
    :meth:`parse` for descriptor text.

    Parameters
    ----------
    mb, ic, ih, iw : int
        Batch N, input channels C, input height H and width W.
    oc, kh, kw : int
        Output channels K, filter height R and width S.
    sh, sw : int
        Strides.
    ph, pw : int
        Top and left zero padding.
    dil_h, dil_w : int
        Dilation (1 = dense filter).
    g : int
        Groups; divides ``ic`` and ``oc``. Depthwise is ``g == ic``.
    oh, ow : int or None
        Output size P, Q. ``None`` computes it with symmetric padding.
    bias : bool
        Whether a bias vector of length ``oc`` is added.
    dtype : str
        ``"float32"``, ``"float64"`` or ``"float16"``.
    fpmath : str
        ``"strict"`` (default) or ``"tf32"``: float32 problems whose kernels may
        round operands to TF32 (benchdnn's ``--attr-fpmath``).
    name : str
        Layer name, e.g. ``"res2a_branch2b"``.
    """

    mb: int
    ic: int
    ih: int
    iw: int
    oc: int
    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    ph: int = 0
    pw: int = 0
    dil_h: int = 1
    dil_w: int = 1
    g: int = 1
    oh: int | None = None
    ow: int | None = None
    bias: bool = False
    dtype: str = "float32"
    fpmath: str = "strict"
    name: str = field(default="")
    dir: str = "fwd"

    def __post_init__(self) -> None:
        if not isinstance(self.dir, str) or self.dir not in DIRECTIONS:
            raise ValueError(f"ConvProblem.dir must be one of {', '.join(DIRECTIONS)}, "
                             f"got {self.dir!r}")
        for attr in ("mb", "ic", "ih", "iw", "oc", "kh", "kw", "sh", "sw", "ph", "pw",
                     "dil_h", "dil_w", "g"):
            value = getattr(self, attr)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"ConvProblem.{attr} must be an int, got {value!r}")
            object.__setattr__(self, attr, int(value))
        minimum = {"mb": 0, "ph": 0, "pw": 0}
        for attr in ("mb", "ic", "ih", "iw", "oc", "kh", "kw", "sh", "sw", "ph", "pw",
                     "dil_h", "dil_w", "g"):
            lo = minimum.get(attr, 1)
            if getattr(self, attr) < lo:
                raise ValueError(f"ConvProblem.{attr} must be >= {lo}, got {getattr(self, attr)}")
        if self.ic % self.g or self.oc % self.g:
            raise ValueError(f"groups={self.g} must divide both input channels ({self.ic}) "
                             f"and output channels ({self.oc})")
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype))
        object.__setattr__(self, "bias", bool(self.bias))
        if self.dir in ("bwd_d", "bwd_w"):
            object.__setattr__(self, "bias", False)  # neither dx nor dw depends on it
        elif self.dir == "bwd_wb" and not self.bias:
            raise ValueError("direction bwd_wb computes the bias gradient, so it needs a "
                             "problem with bias (bias=True), got bias=False")
        if self.fpmath not in FPMATH_MODES:
            raise ValueError(f"fpmath must be one of {FPMATH_MODES}, got {self.fpmath!r}")
        if self.fpmath == "tf32" and self.dtype != "float32":
            raise ValueError(f"fpmath 'tf32' applies to float32 data, got {self.dtype}")
        if '"' in self.name:
            raise ValueError(f"problem name must not contain '\"', got {self.name!r}")
        if self.oh is None:
            object.__setattr__(self, "oh", self.natural_oh)
        if self.ow is None:
            object.__setattr__(self, "ow", self.natural_ow)
        object.__setattr__(self, "oh", int(self.oh))
        object.__setattr__(self, "ow", int(self.ow))
        if self.oh <= 0 or self.ow <= 0:
            raise ValueError(
                f"output size must be positive, got {self.oh}x{self.ow} for input "
                f"{self.ih}x{self.iw}, filter {self.kh}x{self.kw}, stride ({self.sh}, {self.sw}), "
                f"padding ({self.ph}, {self.pw}), dilation ({self.dil_h}, {self.dil_w})")

    # ----------------------------------------------------------------- builders
    @classmethod
    def make(cls, n: int, c: int, h: int, w: int, k: int, r: int, s: int, *,
             stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
             bias: bool = False, dtype: Any = "float32", fpmath: str = "strict",
             name: str = "") -> ConvProblem:
        """Build a problem from PyTorch-style arguments.

        Parameters
        ----------
        n, c, h, w : int
            Input shape NCHW.
        k, r, s : int
            Output channels and filter size.
        stride, dilation : int or (int, int)
        padding : int, (int, int), ((top, bottom), (left, right)), "same" or "valid"
            ``"same"`` follows PyTorch: stride 1 only, total padding
            ``d*(k-1)`` split with the smaller half on the top/left.
        groups : int
        bias : bool
        dtype : str or numpy dtype
        fpmath : {"strict", "tf32"}
        name : str

        Returns
        -------
        ConvProblem
        """
        sh, sw = _pair(stride, "stride", 1)
        dh, dw = _pair(dilation, "dilation", 1)
        (pt, pb), (pl, pr) = _padding(padding, (r, s), (dh, dw), (sh, sw))
        if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        for what, value in (("n", n), ("c", c), ("h", h), ("w", w), ("k", k), ("r", r),
                            ("s", s)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"{what} must be an int, got {value!r}")
        oh = output_extent(h, r, sh, pt, pb, dh)
        ow = output_extent(w, s, sw, pl, pr, dw)
        if oh <= 0 or ow <= 0:
            raise ValueError(
                f"output size must be positive, got {oh}x{ow} for input {h}x{w}, filter "
                f"{r}x{s}, stride ({sh}, {sw}), padding (({pt}, {pb}), ({pl}, {pr})), "
                f"dilation ({dh}, {dw})")
        return cls(mb=n, ic=c, ih=h, iw=w, oc=k, kh=r, kw=s, sh=sh, sw=sw, ph=pt, pw=pl,
                   dil_h=dh, dil_w=dw, g=int(groups), oh=oh, ow=ow, bias=bias, dtype=dtype,
                   fpmath=fpmath, name=name)

    @classmethod
    def parse(cls, text: str) -> ConvProblem:
        """Parse a benchdnn convolution descriptor (see the module docstring).

        Raises
        ------
        ValueError
            On unknown tokens, 3-D descriptors, missing mandatory values
            (``ic``, ``ih`` or ``iw``, ``oc``, ``kh`` or ``kw``) or impossible shapes.
        """
        if not isinstance(text, str):
            raise TypeError(f"descriptor must be a str, got {type(text).__name__}")
        knobs = {}
        rest = text.strip()
        while rest.startswith("--"):
            m = _KNOB_RE.match(rest)
            if not m:
                raise ValueError(f"unknown option in descriptor {text!r}: {rest.split()[0]!r}; "
                                 "expected --dt=, --cfg=, --dir=, --mb= or --attr-fpmath=")
            knobs[m.group(1)] = m.group(2)
            rest = rest[m.end():].lstrip()
        name = ""
        m = _NAME_RE.search(rest)
        if m:
            name = m.group(1) if m.group(1) is not None else m.group(2)
            rest = rest[:m.start()]
        values: dict[str, int] = {}
        pos = 0
        body = rest.replace("_", "").replace(" ", "")
        while pos < len(body):
            m = _TOKEN_RE.match(body, pos)
            if not m:
                raise ValueError(f"cannot parse descriptor {text!r} at {body[pos:]!r}; "
                                 f"expected one of {', '.join(_INT_TOKENS)} followed by an "
                                 "integer, or n\"name\" at the end")
            values[m.group(1)] = int(m.group(2))  # a repeated token: the last one wins
            pos = m.end()
        depth = [key for key in values if key in _3D_TOKENS]
        if depth:
            raise UnsupportedDescriptor(f"3-D convolution is not supported ({', '.join(depth)} "
                                        f"in {text!r})")
        return cls._from_tokens(values, knobs, name, text)

    @classmethod
    def _from_tokens(cls, v: dict[str, int], knobs: dict[str, str], name: str,
                     text: str) -> ConvProblem:
        if "ic" not in v or "oc" not in v:
            raise ValueError(f"descriptor {text!r} must give ic and oc")
        if "ih" not in v and "iw" not in v:
            raise ValueError(f"descriptor {text!r} must give ih (or iw for a 1-D problem)")
        if "kh" not in v and "kw" not in v:
            raise ValueError(f"descriptor {text!r} must give kh (or kw for a 1-D problem)")
        if "ih" not in v:  # 1-D problem along w: benchdnn sets the h dimensions to one
            v.update(ih=1, kh=1)
        for h, w in (("ih", "iw"), ("kh", "kw"), ("sh", "sw"), ("ph", "pw"), ("dh", "dw")):
            if h in v and w not in v:
                v[w] = v[h]
        if "kh" not in v:
            v["kh"] = 1
        square = all(v.get(h) == v.get(w) for h, w in (("ih", "iw"), ("kh", "kw"),
                                                        ("sh", "sw"), ("dh", "dw")))
        if "oh" in v and "ow" not in v and square:
            v["ow"] = v["oh"]
        sh, sw = v.get("sh", 1), v.get("sw", 1)
        dil_h, dil_w = v.get("dh", 0) + 1, v.get("dw", 0) + 1
        ph, pw = v.get("ph"), v.get("pw")
        oh, ow = v.get("oh"), v.get("ow")
        if ph is None:
            ph = 0 if oh is None else max(
                0, ((oh - 1) * sh - v["ih"] + effective_extent(v["kh"], dil_h)) // 2)
        if pw is None:
            pw = 0 if ow is None else max(
                0, ((ow - 1) * sw - v["iw"] + effective_extent(v["kw"], dil_w)) // 2)
        dt = knobs.get("dt", knobs.get("cfg", "f32"))
        if dt not in DT_TO_DTYPE:
            raise ValueError(f"unsupported data type {dt!r} in {text!r}; expected f32, f64 or f16")
        direction = knobs.get("dir", "FWD_D").upper()
        if direction not in BENCHDNN_DIRECTIONS:
            raise ValueError(f"unknown direction --dir={knobs['dir']} in {text!r}; expected "
                             f"one of {', '.join(BENCHDNN_DIRECTIONS)}")
        mb = int(knobs["mb"]) if "mb" in knobs and int(knobs["mb"]) > 0 else v.get("mb", 2)
        return cls(mb=mb, ic=v["ic"], ih=v["ih"], iw=v["iw"], oc=v["oc"], kh=v["kh"],
                   kw=v["kw"], sh=sh, sw=sw, ph=ph, pw=pw, dil_h=dil_h, dil_w=dil_w,
                   g=v.get("g", 1), oh=oh, ow=ow, bias=direction in ("FWD_B", "BWD_WB"),
                   dir=BENCHDNN_DIRECTIONS[direction],
                   dtype=DT_TO_DTYPE[dt], fpmath=knobs.get("attr-fpmath", "strict").lower(),
                   name=name)

    def __str__(self) -> str:
        """Canonical descriptor: ``parse(str(p)) == p`` for every problem."""
        out = []
        if self.dtype != "float32":
            out.append(f"--dt={DTYPE_TO_DT[self.dtype]} ")
        if self.dir != "fwd":
            out.append(f"--dir={DIRECTION_TO_DIR[self.dir]} ")
        elif self.bias:
            out.append("--dir=FWD_B ")
        if self.fpmath != "strict":
            out.append(f"--attr-fpmath={self.fpmath} ")
        if self.g != 1:
            out.append(f"g{self.g}")
        out.append(f"mb{self.mb}ic{self.ic}ih{self.ih}")
        if self.iw != self.ih:
            out.append(f"iw{self.iw}")
        out.append(f"oc{self.oc}")
        if self.oh != self.natural_oh:
            out.append(f"oh{self.oh}")
        if self.ow != self.natural_ow:
            out.append(f"ow{self.ow}")
        for tok, hv, wv, default in (("k", self.kh, self.kw, None), ("s", self.sh, self.sw, 1),
                                     ("p", self.ph, self.pw, 0),
                                     ("d", self.dil_h - 1, self.dil_w - 1, 0)):
            if hv != default or wv != hv:
                out.append(f"{tok}h{hv}")
            if wv != hv:
                out.append(f"{tok}w{wv}")
        if self.name:
            out.append(f'n"{self.name}"')
        return "".join(out)

    # --------------------------------------------------------------- geometry
    @property
    def natural_oh(self) -> int:
        """Output height with symmetric padding ``ph`` on both sides."""
        return output_extent(self.ih, self.kh, self.sh, self.ph, self.ph, self.dil_h)

    @property
    def natural_ow(self) -> int:
        """Output width with symmetric padding ``pw`` on both sides."""
        return output_extent(self.iw, self.kw, self.sw, self.pw, self.pw, self.dil_w)

    # Paper notation (Lavin & Gray, cuDNN): N C H W -> K P Q with R x S filters.
    N = property(lambda self: self.mb, doc="Batch size (``mb``).")
    C = property(lambda self: self.ic, doc="Input channels (``ic``).")
    H = property(lambda self: self.ih, doc="Input height (``ih``).")
    W = property(lambda self: self.iw, doc="Input width (``iw``).")
    K = property(lambda self: self.oc, doc="Output channels (``oc``).")
    R = property(lambda self: self.kh, doc="Filter height (``kh``).")
    S = property(lambda self: self.kw, doc="Filter width (``kw``).")
    P = property(lambda self: self.oh, doc="Output height (``oh``).")
    Q = property(lambda self: self.ow, doc="Output width (``ow``).")

    @property
    def stride(self) -> tuple[int, int]:
        return (self.sh, self.sw)

    @property
    def dilation(self) -> tuple[int, int]:
        return (self.dil_h, self.dil_w)

    @property
    def groups(self) -> int:
        return self.g

    @property
    def padded_height(self) -> int:
        """Rows of the zero-padded input that the output reads: ``(P-1)*sh + R_eff``."""
        return (self.oh - 1) * self.sh + effective_extent(self.kh, self.dil_h)

    @property
    def padded_width(self) -> int:
        """Columns of the zero-padded input that the output reads."""
        return (self.ow - 1) * self.sw + effective_extent(self.kw, self.dil_w)

    @property
    def padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((top, bottom), (left, right))`` zero padding actually read.

        Bottom/right are derived from the output size, so they may be smaller
        than the padding that was asked for when a stride skips the last rows,
        and negative when trailing input rows are never read.
        """
        return ((self.ph, self.padded_height - self.ih - self.ph),
                (self.pw, self.padded_width - self.iw - self.pw))

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.mb, self.ic, self.ih, self.iw)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.oc, self.ic // self.g, self.kh, self.kw)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.mb, self.oc, self.oh, self.ow)

    @property
    def reduction_length(self) -> int:
        """Terms in each output's dot product: ``(C/g)*R*S``."""
        return (self.ic // self.g) * self.kh * self.kw

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def flops(self) -> int:
        """Direct-convolution flop count ``2*N*K*(C/g)*R*S*P*Q`` (bias not counted)."""
        return 2 * self.mb * self.oc * self.reduction_length * self.oh * self.ow

    @property
    def tensor_bytes(self) -> int:
        """Bytes of input, weights, bias and output: the least memory traffic."""
        elems = (self.mb * self.ic * self.ih * self.iw + self.oc * self.reduction_length
                 + self.mb * self.oc * self.oh * self.ow + (self.oc if self.bias else 0))
        return elems * self.itemsize

    @property
    def im2col_bytes(self) -> int:
        """Bytes of the full lowered matrix ``N * (C*R*S) * (P*Q)``: why im2col tiles."""
        return self.mb * self.ic * self.kh * self.kw * self.oh * self.ow * self.itemsize

    @property
    def is_depthwise(self) -> bool:
        return self.g > 1 and self.g == self.ic

    @property
    def math(self) -> str:
        """The math mode users choose: ``"fp32"`` (strict), ``"tf32"``, ``"fp16"`` or ``"fp64"``."""
        if self.fpmath == "tf32":
            return "tf32"
        return {"float32": "fp32", "float16": "fp16", "float64": "fp64"}[self.dtype]

    def with_(self, **changes: Any) -> ConvProblem:
        """Copy with fields replaced; ``oh``/``ow`` are recomputed unless given."""
        changes.setdefault("oh", None if {"ih", "kh", "sh", "ph", "dil_h"} & changes.keys()
                           else self.oh)
        changes.setdefault("ow", None if {"iw", "kw", "sw", "pw", "dil_w"} & changes.keys()
                           else self.ow)
        return replace(self, **changes)


def _padding(padding: Any, ksize: tuple[int, int], dilation: tuple[int, int],
             stride: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Normalize PyTorch-style padding to ``((top, bottom), (left, right))``."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1 (as in PyTorch), got {stride}")
            out = []
            for k, d in zip(ksize, dilation, strict=True):
                total = d * (k - 1)
                out.append((total // 2, total - total // 2))
            return (out[0], out[1])
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    if (isinstance(padding, Sequence) and len(padding) == 2
            and all(isinstance(p, Sequence) and not isinstance(p, str) for p in padding)):
        top_bottom = _pair(tuple(padding[0]), "padding (top, bottom)", 0)
        left_right = _pair(tuple(padding[1]), "padding (left, right)", 0)
        return (top_bottom, left_right)
    ph, pw = _pair(padding, "padding", 0)
    return ((ph, ph), (pw, pw))
