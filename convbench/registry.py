"""The kernel protocol, registration and lookup.

Built-in kernels live in the ``kernels`` package and are imported lazily the
first time the registry is asked anything; third-party kernels register
through the ``convbench.kernels`` entry-point group (each entry point names a
kernel object, a list of them, or a module with a ``KERNELS`` list).
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from convbench.problem import ConvProblem

BACKENDS = ("cpu", "gpu")
KINDS = ("kernel", "baseline")

#: Modules whose ``KERNELS`` list is registered on first use. GPU modules
#: import without CuPy; they say what is missing when a kernel is prepared.
BUILTIN_MODULES = (
    "kernels.cpu.direct",
    "kernels.cpu.im2col",
    "kernels.cpu.fft",
    "kernels.cpu.winograd",
    "kernels.baselines.onednn",
    "kernels.baselines.numpy_im2col",
    "kernels.gpu.direct",
    "kernels.gpu.im2col",
    "kernels.gpu.fft",
    "kernels.gpu.winograd",
    "kernels.baselines.cudnn",
    "kernels.baselines.torch_cudnn",
)
ENTRY_POINT_GROUP = "convbench.kernels"
#: Comma-separated extra modules with a ``KERNELS`` list, registered like
#: built-ins: a quick way to try a kernel without packaging it. Worker
#: processes inherit it.
MODULES_ENV = "CONVBENCH_KERNEL_MODULES"


@runtime_checkable
class Kernel(Protocol):
    """What every kernel and baseline provides.

    Attributes
    ----------
    name : str
        Algorithm name, e.g. ``"winograd"``; unique per backend.
    backend : str
        ``"cpu"`` or ``"gpu"``.
    kind : str
        ``"kernel"`` (convbench's own) or ``"baseline"`` (a peer library).
    """

    name: str
    backend: str
    kind: str

    def supports(self, p: ConvProblem) -> str | None:
        """``None`` if the kernel can run ``p``, else the reason it cannot."""

    def workspace_bytes(self, p: ConvProblem) -> int:
        """Extra memory the kernel allocates for ``p`` beyond inputs and output."""

    def prepare(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> Callable[[], Any]:
        """Do the once-per-layer work; return the call that computes the output."""


_registry: dict[tuple[str, str], Kernel] = {}
_load_errors: dict[str, str] = {}
_loaded = False


def register(kernel: Kernel, *, replace: bool = False) -> Kernel:
    """Add ``kernel`` to the registry and return it.

    Raises
    ------
    TypeError
        If ``kernel`` does not implement the protocol.
    ValueError
        If its backend or kind is unknown, or the name is taken and
        ``replace`` is false.
    """
    if not isinstance(kernel, Kernel):
        raise TypeError(f"{kernel!r} does not implement the Kernel protocol (name, backend, "
                        "kind, supports, workspace_bytes, prepare)")
    if kernel.backend not in BACKENDS:
        raise ValueError(f"kernel {kernel.name!r}: backend must be one of {BACKENDS}, "
                         f"got {kernel.backend!r}")
    if kernel.kind not in KINDS:
        raise ValueError(f"kernel {kernel.name!r}: kind must be one of {KINDS}, "
                         f"got {kernel.kind!r}")
    key = (kernel.backend, kernel.name)
    if key in _registry and not replace and _registry[key] is not kernel:
        raise ValueError(f"a {kernel.backend} kernel named {kernel.name!r} is already "
                         "registered; pass replace=True to override it")
    _registry[key] = kernel
    return kernel


def unregister(name: str, backend: str) -> None:
    """Remove a kernel (used by tests that plant faulty kernels)."""
    _registry.pop((backend, name), None)


def _register_all(obj: Any) -> None:
    """Register a kernel, a list of kernels, or a module's ``KERNELS``.

    A module that sets ``REPLACES_BUILTINS = True`` may take the names of
    built-in kernels (used to plant faults in tests).
    """
    if isinstance(obj, Kernel):
        register(obj)
        return
    replace = bool(getattr(obj, "REPLACES_BUILTINS", False))
    items: Iterable[Any] = getattr(obj, "KERNELS", obj)
    for item in items:
        register(item, replace=replace)


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        _register_all(importlib.import_module(module))
    for module in filter(None, (m.strip() for m in os.environ.get(MODULES_ENV, "").split(","))):
        try:
            _register_all(importlib.import_module(module))
        except Exception as exc:  # noqa: BLE001 -- report, keep the built-ins usable
            _load_errors[module] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"convbench: {MODULES_ENV} module {module!r} failed to load: {exc}",
                          RuntimeWarning, stacklevel=2)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            _register_all(ep.load())
        except Exception as exc:  # noqa: BLE001 -- a broken plug-in must not break convbench
            _load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"convbench: kernel plug-in {ep.name!r} ({ep.value}) failed to "
                          f"load: {exc}", RuntimeWarning, stacklevel=2)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def kernels(backend: str | None = None, kind: str | None = None) -> list[Kernel]:
    """Registered kernels, convbench's own first, in registration order."""
    _ensure_loaded()
    if backend is not None:
        _check_backend(backend)
    found = [k for k in _registry.values()
             if (backend is None or k.backend == backend) and (kind is None or k.kind == kind)]
    return sorted(found, key=lambda k: KINDS.index(k.kind))


def algorithms(backend: str = "cpu") -> list[str]:
    """Names of every registered kernel and baseline for ``backend``.

    Examples
    --------
    >>> import convbench
    >>> convbench.algorithms("cpu")[:4]
    ['direct', 'im2col', 'fft', 'winograd']
    """
    return [k.name for k in kernels(backend)]


def get_kernel(name: str, backend: str = "cpu") -> Kernel:
    """Look a kernel up by algorithm name.

    Raises
    ------
    ValueError
        If no such kernel is registered; the message lists those that are.
    """
    _ensure_loaded()
    _check_backend(backend)
    try:
        return _registry[(backend, name)]
    except KeyError:
        known = ", ".join(algorithms(backend)) or "none"
        raise ValueError(f"unknown {backend} algorithm {name!r}; registered: {known}, "
                         "or 'auto'") from None


def load_errors() -> dict[str, str]:
    """Plug-ins that failed to load, by entry-point name, with the error."""
    _ensure_loaded()
    return dict(_load_errors)
