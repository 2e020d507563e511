"""Registration and lookup of kernels and baselines.

Built-in kernels live in ``convbench.kernels`` (the repository's ``kernels/``
folder) and are loaded the first time the registry is asked anything, from
the one list :data:`BUILTIN_CATALOG` names: the harness imports no kernel
module itself. Third-party kernels register through the ``convbench.kernels``
entry-point group (each entry point names a kernel object, a list of them,
or a module with a ``KERNELS`` list), through ``CONVBENCH_KERNEL_MODULES``,
or with :func:`register`.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from convbench.contract import BACKENDS, KINDS, Kernel

#: Module whose ``builtin_kernels()`` lists convbench's own kernels and baselines.
BUILTIN_CATALOG = "convbench.kernels.catalog"
ENTRY_POINT_GROUP = "convbench.kernels"
#: Comma-separated extra modules with a ``KERNELS`` list, registered like
#: built-ins: a quick way to try a kernel without packaging it. Worker
#: processes inherit it.
MODULES_ENV = "CONVBENCH_KERNEL_MODULES"
#: The peer each backend's speedups are relative to: on the CPU, oneDNN with NCHW in and
#: out in its fastest configuration for the layer (``onednn``, the plain call, is the
#: peer of records from before it existed).
SPEEDUP_PEER = {"cpu": "onednn_best", "gpu": "cudnn"}
#: The peer that older runs measured, where a run has no record of today's.
FORMER_PEER = {"onednn_best": "onednn"}


def speedup_peer(backend: str, kernels: Iterable[str] = ()) -> str:
    """The peer of ``backend``'s speedups among ``kernels`` (the kernels a run measured):
    :data:`SPEEDUP_PEER`, or its former name where only that was measured."""
    peer = SPEEDUP_PEER[backend]
    names = set(kernels)
    former = FORMER_PEER.get(peer)
    return former if names and peer not in names and former in names else peer

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
        If its backend, kind or clock is unknown, or the name is taken and
        ``replace`` is false.
    """
    if not isinstance(kernel, Kernel):
        missing = [m for m in ("name", "backend", "kind", "clock", "caches_weights", "supports",
                               "math_mode", "error_model", "workspace_bytes", "prepare")
                   if not hasattr(kernel, m)]
        raise TypeError(f"{kernel!r} does not implement the Kernel protocol: missing "
                        f"{', '.join(missing)} (subclass convbench.KernelBase for the defaults)")
    if kernel.backend not in BACKENDS:
        raise ValueError(f"kernel {kernel.name!r}: backend must be one of {BACKENDS}, "
                         f"got {kernel.backend!r}")
    if kernel.kind not in KINDS:
        raise ValueError(f"kernel {kernel.name!r}: kind must be one of {KINDS}, "
                         f"got {kernel.kind!r}")
    from convbench.measure.clocks import CLOCKS  # noqa: PLC0415 -- light; avoids a cycle

    if kernel.clock not in CLOCKS:
        raise ValueError(f"kernel {kernel.name!r}: clock must be one of {CLOCKS}, "
                         f"got {kernel.clock!r}")
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
    for kernel in importlib.import_module(BUILTIN_CATALOG).builtin_kernels():
        register(kernel)
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


def select_kernels(spec: str, backend: str) -> list[str]:
    """Kernel names from a command line's ``--algo`` (a comma list, or ``all``).

    Raises
    ------
    ValueError
        An unknown name (the message lists the registered ones), or none registered.
    """
    if spec == "all":
        names = algorithms(backend)
        if not names:
            raise ValueError(f"no {backend} kernels are registered")
        return names
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        get_kernel(name, backend)
    return names


def load_errors() -> dict[str, str]:
    """Plug-ins that failed to load, by entry-point name, with the error."""
    _ensure_loaded()
    return dict(_load_errors)
