"""One side of ``convbench ab``: a process that prepares and times kernels of one source tree.

Run as a file, never imported: ``python worker.py TREE``. It puts ``TREE``
first on ``sys.path`` and takes three names from that tree's convbench only:
``convbench.problem.ConvProblem.parse``, ``convbench.registry.get_kernel`` and
the kernel's ``prepare``. Everything else -- the inputs (``.npz`` files the
controller wrote), the timing, the cool-down and warm calls (the invoking
convbench's ``measure/cooldown.py``, loaded by path), the instruction counts --
is this file's, so both sides of a comparison measure the same way whatever
the two trees' harnesses do.

It speaks JSON lines: one request on stdin, one reply on stdout. The kernels'
own prints go to stderr (file descriptor 1 is pointed there), so that nothing
but replies reaches the controller. The first line it writes says whether the
tree's convbench was imported and from which file; a tree whose ``convbench``
resolves outside it (an installed copy shadowing it) is refused.

Requests (``op``): ``prepare`` (the kernel for a problem, its first call, the
output saved where asked), ``time`` (a cool-down, warm calls, then timed calls
for a window), ``count`` (callgrind's instructions of some calls, under
Valgrind), ``release`` and ``exit``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path

#: Alignment of the input copies: where an array starts inside a cache line changes
#: how a vectorized loop runs over it, and must not differ between the two sides.
ALIGN = 64
#: Cool-down helpers of the invoking convbench (this file's package), loaded by path.
COOLDOWN_FILE = Path(__file__).resolve().parents[1] / "measure" / "cooldown.py"


def _load_cooldown():
    spec = importlib.util.spec_from_file_location("_convbench_ab_cooldown", COOLDOWN_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _import_tree(tree: Path):
    """The tree's ``ConvProblem`` and ``get_kernel``, and the file convbench came from."""
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [str(tree)] + [p for p in sys.path if p not in ("", here)]
    for name in [m for m in sys.modules if m == "convbench" or m.startswith("convbench.")]:
        del sys.modules[name]
    import convbench  # noqa: PLC0415 -- the tree's, now first on the path

    origin = Path(convbench.__file__).resolve()
    if tree.resolve() not in origin.parents:
        raise ImportError(f"convbench was imported from {origin}, outside the tree {tree}; "
                          "the tree needs a convbench/ package at its top")
    from convbench.problem import ConvProblem  # noqa: PLC0415
    from convbench.registry import get_kernel  # noqa: PLC0415

    return ConvProblem, get_kernel, str(origin)


def _aligned(a):
    import numpy as np  # noqa: PLC0415

    raw = np.empty(a.nbytes + ALIGN, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _error_model(kernel, p, call):
    """The kernel's error model as a dict (what its call says it computed, first)."""
    model = (getattr(call, "details", None) or {}).get("error_model")
    if model is None and hasattr(kernel, "error_model"):
        model = kernel.error_model(p)
    if dataclasses.is_dataclass(model):
        return dataclasses.asdict(model)
    return model if isinstance(model, dict) else None


class Worker:
    """The prepared calls of this process, by the controller's key."""

    def __init__(self, conv_problem, get_kernel) -> None:
        self.conv_problem = conv_problem
        self.get_kernel = get_kernel
        self.calls: dict[str, object] = {}
        self.cooldown = _load_cooldown()
        self.shim = None
        self.dumps = 0

    def prepare(self, req: dict) -> dict:
        import numpy as np  # noqa: PLC0415

        p = self.conv_problem.parse(req["problem"])
        kernel = self.get_kernel(req["kernel"], req.get("backend", "cpu"))
        out = {"kind": getattr(kernel, "kind", None)}
        with np.load(req["inputs"]) as data:
            a, b = _aligned(data["a"]), _aligned(data["b"])
            bias = _aligned(data["bias"]) if "bias" in data else None
        try:
            t0 = time.perf_counter()
            call = kernel.prepare(p, a, b, bias)
            out["prepare_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            y = call()
            out["first_call_s"] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 -- a refusal or a fault is the reply
            refused = type(exc).__name__ == "UnsupportedProblem"
            return {**out, "status": "skipped" if refused else "failed",
                    "reason": f"{'' if refused else type(exc).__name__ + ': '}{exc}",
                    **({} if refused else {"traceback": traceback.format_exc(limit=-3)})}
        self.calls[req["key"]] = call
        if req.get("output"):
            parts = y if isinstance(y, (tuple, list)) else (y,)
            np.savez(req["output"], *[np.asarray(v) for v in parts])
        return {**out, "status": "ok", "error_model": _error_model(kernel, p, call),
                "details": _plain(getattr(call, "details", None))}

    def time(self, req: dict) -> dict:
        call = self.calls[req["key"]]
        cooled = self.cooldown.cool_down(float(req.get("cooldown_s", 0.0)))
        warm = self.cooldown.warm_up(call, float(req.get("warm_s", 0.0)))
        window = float(req["window_s"])
        samples = []
        started = time.perf_counter()
        while not samples or time.perf_counter() - started < window:
            t0 = time.perf_counter()
            call()
            samples.append(time.perf_counter() - t0)
        return {"samples_s": samples, "cooled_s": cooled, "warm_calls": len(warm)}

    def count(self, req: dict) -> dict:
        if self.shim is None:
            self.shim = ctypes.CDLL(req["shim"])
            self.shim.cb_stop.argtypes = [ctypes.c_char_p]
        if not self.shim.cb_on_valgrind():
            raise RuntimeError("count needs the worker to run under valgrind --tool=callgrind")
        call = self.calls[req["key"]]
        calls = int(req["calls"])
        # prepare made the first call (buffers touched, functions loaded): these are steady.
        self.shim.cb_start()
        for _ in range(calls):
            call()
        self.shim.cb_stop(str(req["key"]).encode())
        self.dumps += 1
        dump = Path(f"{req['dump_prefix']}.{os.getpid()}.{self.dumps}")
        return {"instructions": callgrind_total(dump), "calls": calls, "dump": str(dump)}

    def release(self, req: dict) -> dict:
        self.calls.pop(req["key"], None)
        return {"status": "ok"}


def _plain(details):
    """The JSON-able part of a call's details."""
    if not details:
        return None
    out = {}
    for k, v in dict(details).items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[str(k)] = v
    return out or None


def callgrind_total(path: Path) -> int:
    """The ``Ir`` total of a callgrind dump file (its ``totals:`` or ``summary:`` line)."""
    for line in path.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise ValueError(f"no totals line in callgrind dump {path}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: worker.py TREE", file=sys.stderr)
        return 2
    # Replies get the real stdout; whatever a kernel prints goes to stderr.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    tree = Path(argv[1])
    try:
        conv_problem, get_kernel, origin = _import_tree(tree)
        worker = Worker(conv_problem, get_kernel)
    except Exception as exc:  # noqa: BLE001 -- said to the controller, which stops
        replies.write(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}",
                                  "tree": str(tree)}) + "\n")
        return 3
    replies.write(json.dumps({"ready": True, "convbench_file": origin, "tree": str(tree),
                              "pid": os.getpid(), "python": sys.executable}) + "\n")
    handlers = {"prepare": worker.prepare, "time": worker.time, "count": worker.count,
                "release": worker.release}
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") == "exit":
            break
        try:
            reply = handlers[req["op"]](req)
        except Exception as exc:  # noqa: BLE001 -- the controller decides what it means
            reply = {"error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc(limit=-3)}
        replies.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
