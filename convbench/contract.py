"""The kernel contract: everything the harness asks of a kernel, and nothing more.

A kernel (convbench's own) or a baseline (a peer library) is an object with

* ``name``, ``backend`` (``"cpu"``/``"gpu"``), ``kind`` (``"kernel"``/``"baseline"``);
* ``clock``: how a prepared call is timed, ``"host"`` (the work is done when
  the call returns) or ``"cuda-events"`` (the work is queued on the current
  CUDA stream);
* ``caches_weights``: whether ``prepare`` transforms the weights once, as a
  framework's inference does (Winograd's ``U = G g G^T``, FFT's filter
  spectra), so that a call does not repeat it;
* ``reads_input_at_call`` (optional, default false): whether the prepared
  call reads the values of ``x`` when it runs rather than when it is
  prepared. Then writing new values into the array given to ``prepare`` and
  calling again convolves the new values with the weights already
  transformed: :func:`convbench.plan` binds a kernel once per weight tensor
  this way. A kernel without the attribute is prepared again for every input;
* ``takes_input_at_call`` (optional, default false): whether the prepared
  call also accepts an input, ``call(x)``, and convolves that array instead
  of the one given to ``prepare``. ``x`` is then like that one: same shape,
  same (native) dtype, C-contiguous, on the same device. The harness never
  passes it; :func:`convbench.plan` does, so that a call with a new input
  neither copies it nor transforms the weights again;
* ``directions`` (optional, default ``("fwd",)``): the directions of
  :data:`~convbench.problem.DIRECTIONS` the kernel computes; ``supports``
  refuses the others;
* ``supports(p) -> None | str``: the reason it cannot run ``p``, without running;
  a reason matches :data:`CONTRACT_REFUSALS` or one of the kernel's
  ``documented_refusals`` (optional, default ``()``: regular expressions, see
  :func:`is_documented_refusal`), so that a test can tell a refusal the kernel
  documents from a bug that makes it refuse;
* ``math_mode(p) -> str``: how it computes ``p`` (recorded with every result);
* ``error_model(p) -> ErrorModel``: which error envelope its results are held
  to (the algorithm family, and how much its operands are rounded before they
  are multiplied; see :mod:`convbench.measure.compare`);
* ``workspace_bytes(p) -> int``: the most memory a prepared call of ``p`` holds
  beyond its operands and its result, from ``prepare`` through a call (see
  "The workspace" below);
* ``prepare(p, x, w, bias) -> PreparedCall``: the once-per-layer work; returns
  the call that is timed. Raises :class:`~convbench.errors.UnsupportedProblem`
  where ``supports`` gives a reason. The call may carry ``details`` (a dict:
  the cuDNN engine it chose, the precision of each stage), which the
  harness records; an ``error_model`` entry there (an :class:`ErrorModel`)
  overrides ``error_model(p)`` for what the call really computes (cuDNN's
  engine is only known once a plan is chosen).

``prepare`` takes the operands of ``p.dir`` in the order of
``torch.nn.grad``'s functions, and its call returns the gradient:

* ``fwd``: ``prepare(p, x, w, bias)``, the call returns ``y`` (``p.output_shape``);
* ``bwd_d``: ``prepare(p, dy, w, None)``, the call returns ``dx`` (``p.input_shape``);
* ``bwd_w``: ``prepare(p, x, dy, None)``, the call returns ``dw`` (``p.weight_shape``);
* ``bwd_wb``: ``prepare(p, x, dy, None)``, the call returns ``(dw, db)``, ``db`` of
  shape ``(K,)``.

The attributes above read per direction: ``caches_weights`` means, for
``bwd_d``, that ``prepare`` transforms ``w`` once; ``reads_input_at_call``
that the call reads the current values of its array operands (``dy`` for
``bwd_d``, ``x`` and ``dy`` for ``bwd_w``); ``takes_input_at_call`` that the
call accepts ``call(dy)`` for ``bwd_d`` and ``call(x, dy)`` for
``bwd_w``/``bwd_wb``. Output buffers belong to the kernel, as in the forward.

The workspace
-------------
What counts toward ``workspace_bytes`` and a kernel's cap is everything a
prepared call holds beyond its inputs and outputs:

* its **prepared state**: whatever ``prepare`` keeps for the calls -- filter
  spectra, transformed filters (Winograd's ``U``), packed or transposed
  weights, staging buffers, zeroed scratch kept between calls;
* its **per-call scratch**: what a call allocates while it runs -- lowered
  matrices, tile buffers, a batch's spectra and their copies, per-thread
  accumulators, the temporaries its libraries make (a padded copy before an
  FFT, a transposed operand);
* what ``prepare`` holds at once while it chooses (candidates timed side by
  side, a transform beside its transposed copy).

The arrays given to ``prepare`` and the result buffers the call returns do not
count. A kernel with a cap (``workspace_cap``; convbench's CPU kernels default
to 256 MiB, ``CONVBENCH_WORKSPACE_CAP`` or ``--workspace-cap`` set another)
keeps the figure at or under it by tiling -- fewer images per batch, smaller
tiles, no stored spectra -- and otherwise refuses ``p`` in ``supports`` with
:func:`workspace_refusal`'s message, which starts with
:data:`WORKSPACE_REFUSAL` and says how many bytes it would need.

:class:`KernelBase` implements the defaults and the refusal; subclasses
write :meth:`KernelBase.prepare_call`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from convbench.errors import UnsupportedProblem
from convbench.problem.conv_problem import ConvProblem

BACKENDS = ("cpu", "gpu")
KINDS = ("kernel", "baseline")

#: Algorithm families with an error model: ``"direct"`` covers every algorithm whose
#: outputs are dot products of the inputs (direct, im2col + GEMM, implicit GEMM) in
#: any summation order; ``"any"`` is the loosest of the three, for unknown algorithms.
FAMILIES = ("direct", "winograd", "fft", "any")
#: Unit roundoff of a TF32 operand (10 explicit mantissa bits, rounded to nearest).
TF32_UNIT_ROUNDOFF = 2.0**-11
#: Unit roundoff of an fp16 operand (an fp32 value stored as fp16).
FP16_UNIT_ROUNDOFF = 2.0**-11
#: How every refusal for want of workspace begins (a stable prefix to match on).
WORKSPACE_REFUSAL = "workspace: needs "
#: Environment variable with the default workspace cap of convbench's CPU kernels,
#: in bytes (or with a KiB, MiB or GiB suffix); worker processes inherit it.
WORKSPACE_CAP_ENV = "CONVBENCH_WORKSPACE_CAP"
_BYTE_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
               "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


@dataclass(frozen=True)
class ErrorModel:
    """Which error envelope a kernel's output is held to.

    Attributes
    ----------
    family : str
        One of :data:`FAMILIES`.
    operand_roundoff : float
        Relative rounding applied to the operands before they are multiplied
        (TF32 operands, fp16-stored transformed tiles); 0 when they are used
        as stored.
    transform_size : int or None
        Points of the FFT (``L_h * L_w``), where the family is ``"fft"``;
        None: an upper bound from the problem.
    transforms : tuple or None
        Winograd's ``(A^T, G, B^T)`` as nested tuples of floats, where the
        family is ``"winograd"``: the envelope's growth factors are computed
        from them. None: F(2x2,3x3) with Lavin & Gray's matrices.
    """

    family: str = "any"
    operand_roundoff: float = 0.0
    transform_size: int | None = None
    transforms: tuple | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"error model family must be one of {FAMILIES}, "
                             f"got {self.family!r}")
        if self.transforms is not None:
            # Arrays or lists (a record's JSON) become tuples: the model stays hashable.
            mats = tuple(tuple(tuple(float(v) for v in row) for row in mat)
                         for mat in self.transforms)
            if len(mats) != 3:
                raise ValueError(f"transforms must be (A^T, G, B^T), got {len(mats)} matrices")
            object.__setattr__(self, "transforms", mats)


#: How each math mode computes, unless a kernel says more.
MATH_MODE_LABELS = {
    "fp32": "fp32 strict (no TF32)",
    "tf32": "tf32 operands, fp32 accumulation",
    "fp16": "fp16 storage, fp32 accumulation",
    "fp64": "fp64",
}


#: Refusals any kernel may give (regular expressions, matched with :func:`re.search`):
#: a direction it does not compute (:func:`direction_refusal`), a storage dtype outside
#: :attr:`KernelBase.dtypes`, a missing optional library (the reason says what to
#: ``pip install``), and a problem whose workspace would exceed the kernel's cap (its
#: ``workspace_bytes`` over its ``workspace_cap``).
CONTRACT_REFUSALS = (
    r"^\S+ \S+ does not compute \w+$",
    r"^\S+ \S+ runs [\w, ]+, got \w+$",
    r" is not installed: pip install ",
    r"needs \d+ bytes\b.*\bof workspace\b.* cap of \d+ bytes",
)


def parse_bytes(text: str) -> int:
    """A byte count from ``"268435456"``, ``"256MiB"``, ``"1.5 GiB"`` or ``"2GB"``.

    Raises
    ------
    ValueError
        Not a number with one of the units, or not positive.
    """
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", str(text))
    try:
        value = float(match.group(1)) * _BYTE_UNITS[match.group(2).lower()]
    except (AttributeError, KeyError, ValueError):
        raise ValueError(f"a byte count is a number with an optional unit (KiB, MiB, GiB, "
                         f"KB, MB, GB), got {text!r}") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"a byte count must be positive, got {text!r}")
    return int(value)


def workspace_refusal(needed: int, cap: int) -> str:
    """The refusal of a problem whose workspace, ``needed`` bytes, is over ``cap``.

    It begins with :data:`WORKSPACE_REFUSAL`, e.g. ``"workspace: needs 833617920
    bytes (795.0 MiB) of workspace, over the cap of 268435456 bytes (256.0 MiB);
    raise it with workspace_cap=, CONVBENCH_WORKSPACE_CAP or --workspace-cap"``.
    """
    return (f"{WORKSPACE_REFUSAL}{needed} bytes ({needed / 2**20:.1f} MiB) of workspace, "
            f"over the cap of {cap} bytes ({cap / 2**20:.1f} MiB); raise it with "
            f"workspace_cap=, {WORKSPACE_CAP_ENV} or --workspace-cap")


@runtime_checkable
class PreparedCall(Protocol):
    """The timed call of a prepared kernel, with what it chose."""

    details: Mapping[str, Any]

    def __call__(self, *x: Any) -> Any:
        """Compute the output (into the kernel's own buffer) and return it.

        With an argument, a kernel that declares ``takes_input_at_call``
        convolves it instead of the prepared input.
        """


class Prepared:
    """A :class:`PreparedCall` made of a function and its details."""

    __slots__ = ("details", "fn")

    def __init__(self, fn: Callable[..., Any], details: Mapping[str, Any] | None = None) -> None:
        self.fn = fn
        self.details = dict(details or {})

    def __call__(self, *x: Any) -> Any:
        return self.fn(*x)


def as_prepared(call: Callable[..., Any]) -> PreparedCall:
    """``call`` as a :class:`PreparedCall` (plain callables get empty details)."""
    return call if isinstance(call, PreparedCall) else Prepared(call)


def kernel_directions(kernel: Any) -> tuple[str, ...]:
    """The directions ``kernel`` computes (``("fwd",)`` where it does not say)."""
    return tuple(getattr(kernel, "directions", ("fwd",)))


def direction_refusal(kernel: Any, p: ConvProblem) -> str | None:
    """Why ``kernel`` does not compute ``p``'s direction, or ``None``."""
    if p.dir in kernel_directions(kernel):
        return None
    return (f"{getattr(kernel, 'backend', '?')} {getattr(kernel, 'name', '?')} does not "
            f"compute {p.dir}")


def refusal(kernel: Any, p: ConvProblem) -> str | None:
    """Why ``kernel`` cannot run ``p``: its direction first, then ``kernel.supports(p)``.

    The harness asks this rather than ``supports`` alone, so that a third-party
    kernel that does not declare ``directions`` is never handed a backward
    problem it would compute as a forward one.
    """
    return direction_refusal(kernel, p) or kernel.supports(p)


def documented_refusals(kernel: Any) -> tuple[str, ...]:
    """The patterns of every reason ``kernel`` documents for refusing a problem.

    :data:`CONTRACT_REFUSALS` and the kernel's own ``documented_refusals``
    (``()`` where it declares none).
    """
    return CONTRACT_REFUSALS + tuple(getattr(kernel, "documented_refusals", ()))


def is_documented_refusal(kernel: Any, reason: str) -> bool:
    """Whether ``reason`` (from ``kernel.supports``) is one ``kernel`` documents.

    Parameters
    ----------
    kernel : Kernel
        The kernel that refused.
    reason : str
        Its reason.

    Returns
    -------
    bool
        True where a pattern of :func:`documented_refusals` is found in ``reason``.
    """
    return any(re.search(pattern, reason) for pattern in documented_refusals(kernel))


@runtime_checkable
class Kernel(Protocol):
    """What every kernel and baseline provides (see the module docstring)."""

    name: str
    backend: str
    kind: str
    clock: str
    caches_weights: bool

    def supports(self, p: ConvProblem) -> str | None:
        """``None`` if the kernel can run ``p``, else the reason it cannot."""

    def math_mode(self, p: ConvProblem) -> str:
        """How the kernel computes ``p``: storage, operand and accumulation precision."""

    def error_model(self, p: ConvProblem) -> ErrorModel:
        """The error envelope the kernel's output on ``p`` is held to."""

    def workspace_bytes(self, p: ConvProblem) -> int:
        """Most memory a prepared call of ``p`` holds beyond its operands and result:
        prepared state plus per-call scratch (see the module docstring)."""

    def prepare(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> PreparedCall:
        """Do the once-per-layer work; return the call that computes the output."""


class KernelBase:
    """Defaults of the contract: host clock, no weight cache, no workspace, every problem
    of :attr:`dtypes`.

    Subclasses set ``name`` (and ``backend``, ``kind`` where they differ),
    narrow :meth:`supports` and write :meth:`prepare_call`, which only ever
    sees problems that :meth:`supports` accepted.
    """

    name: str = ""
    backend: str = "cpu"
    kind: str = "kernel"
    clock: str = "host"
    caches_weights: bool = False
    #: Storage dtypes the kernel computes.
    dtypes: tuple[str, ...] = ("float16", "float32", "float64")
    #: Directions the kernel computes (of :data:`~convbench.problem.DIRECTIONS`);
    #: :meth:`supports` refuses the others.
    directions: tuple[str, ...] = ("fwd",)
    #: Whether the prepared call reads ``x`` when it runs (see the module docstring).
    #: False by default: a kernel that copies or transforms ``x`` in ``prepare`` must
    #: not claim it.
    reads_input_at_call: bool = False
    #: Whether the prepared call accepts another input as ``call(x)`` (see the module
    #: docstring).
    takes_input_at_call: bool = False
    #: Whether the kernel rounds float32 operands to TF32 where the problem allows it
    #: (``fpmath="tf32"``); a kernel that does not computes such problems strictly.
    uses_tf32: bool = False
    #: The algorithm family whose error model applies (see :data:`FAMILIES`).
    family: str = "any"
    #: Patterns (:func:`re.search`) of the reasons :meth:`supports` gives beyond
    #: :data:`CONTRACT_REFUSALS`. A subclass that refuses more problems extends its
    #: parent's tuple; a refusal that matches neither is one tests report as a bug.
    documented_refusals: tuple[str, ...] = ()

    def direction_reason(self, p: ConvProblem) -> str | None:
        """Why the kernel does not compute ``p.dir`` (``None`` if it is in :attr:`directions`)."""
        return direction_refusal(self, p)

    def supports(self, p: ConvProblem) -> str | None:
        reason = self.direction_reason(p)
        if reason is not None:
            return reason
        if p.dtype not in self.dtypes:
            return f"{self.backend} {self.name} runs {', '.join(self.dtypes)}, got {p.dtype}"
        return None

    def math_mode(self, p: ConvProblem) -> str:
        return MATH_MODE_LABELS["tf32" if self.rounds_to_tf32(p) else
                                "fp32" if p.math == "tf32" else p.math]

    def rounds_to_tf32(self, p: ConvProblem) -> bool:
        """Whether this kernel rounds ``p``'s operands to TF32."""
        return p.math == "tf32" and self.uses_tf32

    def error_model(self, p: ConvProblem) -> ErrorModel:
        return ErrorModel(self.family, TF32_UNIT_ROUNDOFF if self.rounds_to_tf32(p) else 0.0)

    def workspace_bytes(self, p: ConvProblem) -> int:
        return 0

    def prepare(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> PreparedCall:
        """Refuse what :meth:`supports` refuses, else :meth:`prepare_call`.

        Raises
        ------
        UnsupportedProblem
            With the reason :meth:`supports` gave.
        """
        reason = self.direction_reason(p) or self.supports(p)
        if reason is not None:
            raise UnsupportedProblem(reason)
        return as_prepared(self.prepare_call(p, x, w, bias))

    def prepare_call(self, p: ConvProblem, x: Any, w: Any,
                     bias: Any) -> Callable[..., Any]:  # pragma: no cover -- abstract
        """The once-per-layer work for a supported problem; returns the timed call.

        A subclass that declares ``takes_input_at_call`` returns a call whose one
        optional argument is the input (defaulting to ``x``).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement prepare_call")
