"""Figures of a run (matplotlib, headless): one function per picture.

Every function takes a :class:`RunView` and writes one PNG. The numbers a
figure shows come from the same :class:`RunView` methods that build the
tables beside it, so a plot and its table cannot disagree.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convbench.present.tables import group_by_layer, network_totals, platform_label
from convbench.problem import ConvProblem
from convbench.registry import speedup_peer
from convbench.store.jsonl import Run
from convbench.store.records import Record

#: Stable colours per kernel, so a kernel looks the same in every figure.
PALETTE = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb",
           "#000000", "#ee8866", "#44bb99"]


def _pyplot():
    import matplotlib  # noqa: PLC0415 -- optional 'plot' extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


@dataclass
class RunView:
    """One run's records, in the shape the report needs.

    Attributes
    ----------
    label : str
    records : list of Record
        The last record per (problem, backend, kernel), in sweep order.
    roof : dict or None
        ``peak_gflops`` and ``bandwidth_gbs`` measured on the run's machine.
    baseline : str
        Kernel the speedups are relative to (``onednn``; ``cudnn`` on a GPU).
    """

    label: str
    records: list[Record]
    roof: dict[str, Any] | None = None
    baseline: str = "onednn_best"
    kernels: list[str] = field(default_factory=list)

    @classmethod
    def from_run(cls, run: Run, label: str) -> list[RunView]:
        """One view per suite and platform in the run (a run may sweep several suites, and
        a Dask sweep several platforms: their times never meet in one view)."""
        per_platform = run.latest_per_platform()
        views = []
        for platform, latest in per_platform.items():
            suites: OrderedDict[str, list[Record]] = OrderedDict()
            for rec in latest.values():
                suites.setdefault(rec.get("suite") or "custom", []).append(rec)
            for s, recs in suites.items():
                name = label if len(suites) == 1 else f"{label} / {s}"
                if len(per_platform) > 1:
                    name += f" on {platform_label(platform, recs)}"
                # Each direction is a view of its own: a layer's fwd and bwd_d times are
                # different convolutions, never one row of a figure.
                directions = list(dict.fromkeys(r.dir for r in recs))
                for d in directions:
                    mine = [r for r in recs if r.dir == d]
                    views.append(cls._from_records(
                        run, mine, name if len(directions) == 1 else f"{name} [{d}]"))
        return views

    @classmethod
    def _from_records(cls, run: Run, records: list[Record], label: str) -> RunView:
        roof = None
        for header in run.headers:
            roof = header.get("environment", {}).get("roof") or roof
        for rec in run.roofs:
            roof = rec
        backend = records[0]["backend"] if records else "cpu"
        kernels = list(OrderedDict.fromkeys(r["kernel"] for r in records))
        return cls(label, records, roof, speedup_peer(backend, kernels), kernels)

    # ------------------------------------------------------------ numbers
    def layers(self) -> OrderedDict[str, list[Record]]:
        return group_by_layer(self.records)

    def layer_names(self) -> list[str]:
        return [recs[0].label for recs in self.layers().values()]

    @staticmethod
    def value(rec: Record | None, what: str) -> float | None:
        """``gflops``, ``median_s`` or an error metric (``rel_l2``...) of an ok record."""
        if rec is None:
            return None
        if what == "gflops":
            return rec.gflops
        if what == "median_s":
            return rec.median_s
        return rec.error(what)

    def matrix(self, what: str) -> list[list[float | None]]:
        """Rows = layers, columns = ``self.kernels``."""
        out = []
        for recs in self.layers().values():
            by_kernel = {r["kernel"]: r for r in recs}
            out.append([self.value(by_kernel.get(k), what) for k in self.kernels])
        return out

    def speedups(self) -> list[list[float | None]]:
        """Baseline time / kernel time per layer and kernel (None where either is missing)."""
        out = []
        for recs in self.layers().values():
            by_kernel = {r["kernel"]: r for r in recs}
            base = self.value(by_kernel.get(self.baseline), "median_s")
            row = []
            for k in self.kernels:
                t = self.value(by_kernel.get(k), "median_s")
                row.append(base / t if base and t else None)
            out.append(row)
        return out

    @staticmethod
    def intensity(rec: Record) -> float:
        """Arithmetic intensity: direct flops / least bytes moved (inputs, weights, output)."""
        p = ConvProblem.parse(rec["problem"])
        return p.flops / p.tensor_bytes

    def winners(self, budget: float) -> list[tuple[str, str | None, str | None]]:
        """(layer, fastest kernel, fastest kernel with rel_l2 <= budget) per layer."""
        out = []
        for name, recs in zip(self.layer_names(), self.layers().values(), strict=True):
            ok = [r for r in recs if self.value(r, "median_s")]
            fastest = min(ok, key=lambda r: self.value(r, "median_s"), default=None)
            within = [r for r in ok if (self.value(r, "rel_l2") or math.inf) <= budget]
            best = min(within, key=lambda r: self.value(r, "median_s"), default=None)
            out.append((name, fastest["kernel"] if fastest else None,
                        best["kernel"] if best else None))
        return out

    def network(self) -> dict[str, dict[str, Any]]:
        return network_totals(self.records)


def color_of(kernel: str, order: list[str]) -> str:
    return PALETTE[order.index(kernel) % len(PALETTE)] if kernel in order else "#999999"


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_layer_gflops(view: RunView, path: Path) -> Path:
    """Per-layer GFLOP/s, one bar per kernel and baseline."""
    plt = _pyplot()
    names, values = view.layer_names(), view.matrix("gflops")
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(names) * max(1, len(view.kernels)) / 3),
                                    4.5))
    width = 0.8 / max(1, len(view.kernels))
    for j, kernel in enumerate(view.kernels):
        xs = [i + (j - (len(view.kernels) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [row[j] or 0.0 for row in values], width, label=kernel,
               color=color_of(kernel, view.kernels))
    if view.roof:
        ax.axhline(view.roof["peak_gflops"], color="k", ls="--", lw=1,
                   label=f"GEMM roof {view.roof['peak_gflops']:.0f}")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("GFLOP/s (direct-conv flop count)")
    ax.set_title(f"{view.label}: throughput per layer")
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def plot_speedup_heatmap(view: RunView, path: Path) -> Path:
    """Speedup over the baseline, layer x kernel, numbers in the cells."""
    import numpy as np  # noqa: PLC0415

    plt = _pyplot()
    from matplotlib.colors import LogNorm  # noqa: PLC0415

    names, values = view.layer_names(), view.speedups()
    grid = np.array([[v if v else np.nan for v in row] for row in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(view.kernels) + 3, 0.32 * len(names) + 1.8))
    finite = grid[np.isfinite(grid)]
    span = max(2.0, float(np.nanmax(np.abs(np.log10(finite)))) if finite.size else 1.0)
    lo, hi = 10 ** -min(span, 2), 10 ** min(span, 2)
    image = ax.imshow(grid, cmap="RdBu", norm=LogNorm(vmin=lo, vmax=hi), aspect="auto")
    for i in range(len(names)):
        for j in range(len(view.kernels)):
            text = f"{grid[i, j]:.2f}" if np.isfinite(grid[i, j]) else "—"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(view.kernels)), view.kernels, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title(f"{view.label}: speedup over {view.baseline} (>1 is faster)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, path)


def plot_roofline(view: RunView, path: Path) -> Path:
    """Each (layer, kernel) at its arithmetic intensity and GFLOP/s, under the measured roof."""
    import numpy as np  # noqa: PLC0415

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    points = [(view.intensity(r), view.value(r, "gflops"), r["kernel"]) for r in view.records
              if view.value(r, "gflops")]
    for kernel in view.kernels:
        pts = [(x, y) for x, y, k in points if k == kernel]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=18, label=kernel,
                       color=color_of(kernel, view.kernels))
    if points:
        xs = np.geomspace(min(p[0] for p in points) / 2, max(p[0] for p in points) * 2, 200)
    else:
        xs = np.geomspace(0.1, 1000, 200)
    if view.roof:
        peak, bw = view.roof["peak_gflops"], view.roof["bandwidth_gbs"]
        ax.plot(xs, np.minimum(peak, xs * bw), "k-", lw=1.5,
                label=f"roof: {peak:.0f} GFLOP/s, {bw:.1f} GB/s")
        title = "roofline (roof measured by convbench roof on the same machine)"
    else:
        title = "roofline (no roof in this run: run 'convbench roof' before the sweep)"
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (flop / byte of inputs, weights, output)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"{view.label}: {title}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_accuracy(view: RunView, path: Path) -> Path:
    """rel_l2 and bound_ratio per kernel across layers, log scale."""
    plt = _pyplot()
    names = view.layer_names()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True)
    for ax, what in zip(axes, ("rel_l2", "bound_ratio"), strict=True):
        values = view.matrix(what)
        for j, kernel in enumerate(view.kernels):
            pts = [(i, row[j]) for i, row in enumerate(values) if row[j]]
            if pts:
                ax.semilogy(*zip(*pts, strict=True), "o-", ms=3, lw=1, label=kernel,
                            color=color_of(kernel, view.kernels))
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title(f"{view.label}: error vs float64 reference")
    axes[1].set_title("max |err| / (u |W|*|X|)")
    axes[1].legend(fontsize=8)
    return _save(fig, path)


def plot_winners(view: RunView, path: Path, budget: float) -> Path:
    """Per layer: the fastest kernel, and the fastest within the error budget."""
    import numpy as np  # noqa: PLC0415

    plt = _pyplot()
    from matplotlib.colors import ListedColormap  # noqa: PLC0415

    rows = view.winners(budget)
    order = view.kernels
    grid = np.array([[order.index(k) if k in order else -1 for k in (a, b)]
                     for _, a, b in rows], dtype=float)
    grid[grid < 0] = np.nan
    cmap = ListedColormap([color_of(k, order) for k in order])
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(rows) + 1.6))
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(order) - 0.5, aspect="auto")
    for i, (_, a, b) in enumerate(rows):
        for j, k in enumerate((a, b)):
            ax.text(j, i, k or "none", ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks([0, 1], ["fastest", f"fastest with rel_l2 <= {budget:g}"])
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.set_title(f"{view.label}: winner per layer", fontsize=9)
    return _save(fig, path)


def plot_network(views: list[RunView], path: Path) -> Path:
    """Whole-network time per kernel (sum of median x repeat); runs side by side."""
    plt = _pyplot()
    kernels = list(OrderedDict.fromkeys(k for v in views for k in v.network()))
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(kernels) * len(views)), 4.2))
    width = 0.8 / len(views)
    for j, view in enumerate(views):
        totals = view.network()
        xs, ys = [], []
        for i, k in enumerate(kernels):
            entry = totals.get(k)
            x = i + (j - (len(views) - 1) / 2) * width
            if entry and entry["complete"]:
                xs.append(x)
                ys.append(entry["time_s"] * 1e3)
            elif entry:  # a kernel that skipped layers has no whole-network time: say so
                ax.text(x, 0.02, f"partial\n{entry['layers']} layers", ha="center",
                        va="bottom", fontsize=7, transform=ax.get_xaxis_transform())
        ax.bar(xs, ys, width, label=view.label, color=PALETTE[j % len(PALETTE)])
        for x, y in zip(xs, ys, strict=True):
            ax.text(x, y, f"{y:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(kernels)), kernels, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("whole-network time (ms, log)")
    ax.set_title("whole network: sum over layers of median time x repeat count")
    ax.legend(fontsize=8)
    return _save(fig, path)
