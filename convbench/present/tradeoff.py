"""The time-versus-error trade-off of a tuned run (``convbench tune``): numbers and figures.

A run carries tune data when its header's ``config`` has a ``tune`` block
(budget, metric, allow_vendor). :class:`TradeoffView` reads its records as
candidates per layer (:class:`~convbench.plans.choice.Candidate`) and
answers two questions, each with a table and a figure drawn from the same
numbers:

* per layer, which kernels are on the Pareto front of time and error, and
  which one the budget chooses (:func:`plot_tradeoff`);
* for the whole network, what the tuned plan costs at each of several
  budgets against every fixed kernel and the vendor (:func:`plot_budgets`);
  where the run measured several Winograd tiles, also the tuned plan with
  each tile as its only Winograd kernel, so that the figure shows what each
  tile's error admits and what it saves at each budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convbench.plans.choice import BudgetNotMet, Candidate, Choice, choose, pareto_front
from convbench.present import plots
from convbench.present.format import fmt
from convbench.present.plots import RunView, color_of
from convbench.present.tables import Table
from convbench.problem import ConvProblem
from convbench.store.jsonl import Run

#: Whole-network budgets shown per math mode: around float32's unit roundoff
#: (6e-8) for fp32, and up to the 10-bit mantissas (5e-4) of TF32 and float16.
BUDGET_LEVELS = {"fp32": (1e-7, 1e-6, 1e-5), "fp64": (1e-15, 1e-13, 1e-11),
                 "tf32": (1e-6, 1e-5, 1e-4, 1e-3), "fp16": (1e-4, 1e-3, 1e-2)}
#: Name of the tuned plan's line in the tables and figures.
TUNED = "tuned plan"


def tuned_with(tile: str) -> str:
    """Name of the line of the tuned plan whose only Winograd kernel is ``tile``."""
    return f"tuned, {tile} only"


def winograd_family(kernel: str, backend: str) -> bool:
    """Whether ``kernel`` is a registered Winograd kernel of ``backend`` (a tile of the family)."""
    from convbench.registry import get_kernel  # noqa: PLC0415

    try:
        return get_kernel(kernel, backend).family == "winograd"
    except ValueError:  # a baseline, or a kernel this installation does not have
        return False


def tune_config(run: Run) -> dict[str, Any] | None:
    """The ``tune`` block of the run's last header that has one (budget, metric,
    allow_vendor), or None. A file that ``convbench tune`` appended to several times is
    shown with the settings of its latest tuning."""
    for header in reversed(run.headers):
        tune = (header.get("config") or {}).get("tune")
        if tune:
            return dict(tune)
    return None


@dataclass
class LayerCandidates:
    """One layer of a tuned run: its name, repeat count and measured candidates."""

    name: str
    problem: str
    repeat: int
    candidates: list[Candidate]


@dataclass
class NetworkEntry:
    """A whole-network time at one budget.

    Attributes
    ----------
    time_s : float or None
        Sum of median x repeat, None where a layer has no time.
    over_budget : list of str
        Layers whose error exceeds the budget (a fixed kernel), or that no
        kernel meets (the tuned plan).
    """

    time_s: float | None
    over_budget: list[str]


@dataclass
class TradeoffView:
    """A tuned run's records as candidates, and the choices they give at any budget."""

    view: RunView
    metric: str = "rel_l2"
    budget: float = 1e-6
    allow_vendor: bool = False

    @classmethod
    def of(cls, view: RunView, config: Mapping[str, Any]) -> TradeoffView:
        return cls(view, config.get("metric", "rel_l2"), float(config["budget"]),
                   bool(config.get("allow_vendor", False)))

    def layers(self) -> list[LayerCandidates]:
        out = []
        for problem, recs in self.view.layers().items():
            cands = [c for r in recs if (c := Candidate.from_record(r)) is not None]
            out.append(LayerCandidates(recs[0].label, problem, recs[0].repeat, cands))
        return out

    def choice(self, layer: LayerCandidates, budget: float,
               without: frozenset[str] = frozenset()) -> Choice | None:
        """The tuned choice at ``budget`` among the candidates not in ``without``, None
        where none meets it."""
        candidates = [c for c in layer.candidates if c.kernel not in without]
        try:
            return choose(candidates, budget=budget, metric=self.metric,
                          allow_vendor=self.allow_vendor, problem=layer.problem)
        except BudgetNotMet:
            return None

    def winograd_tiles(self) -> list[str]:
        """The run's Winograd kernels where it measured more than one (else none)."""
        backend = self.view.records[0]["backend"] if self.view.records else "cpu"
        tiles = [k for k in self.view.kernels if winograd_family(k, backend)]
        return tiles if len(tiles) > 1 else []

    def tuned_lines(self) -> list[str]:
        """The tuned plan, then one tuned line per Winograd tile (:func:`tuned_with`)."""
        return [TUNED, *(tuned_with(t) for t in self.winograd_tiles())]

    def _tuned(self, layers: list[LayerCandidates], budget: float,
               without: frozenset[str]) -> NetworkEntry:
        total, missing = 0.0, []
        for layer in layers:
            c = self.choice(layer, budget, without)
            if c is None:
                missing.append(layer.name)
            else:
                total += c.chosen.time_s * layer.repeat
        return NetworkEntry(None if missing else total, missing)

    def budget_levels(self) -> list[float]:
        """The run's budget and the levels of every math mode among its problems."""
        modes = {ConvProblem.parse(layer.problem).math for layer in self.layers()}
        levels = {self.budget}
        for mode in modes:
            levels.update(BUDGET_LEVELS.get(mode, ()))
        return sorted(levels)

    def fixed(self) -> list[str]:
        """Kernels and baselines that ran every layer (a whole-network time each)."""
        layers = self.layers()
        ran = [{c.kernel for c in layer.candidates} for layer in layers]
        return [k for k in self.view.kernels if ran and all(k in names for names in ran)]

    def network(self, budget: float) -> dict[str, NetworkEntry]:
        """Whole-network time at ``budget`` of the tuned plan, of the tuned plan with each
        Winograd tile alone, and of each fixed kernel."""
        layers = self.layers()
        out = {TUNED: self._tuned(layers, budget, frozenset())}
        tiles = self.winograd_tiles()
        for tile in tiles:
            out[tuned_with(tile)] = self._tuned(layers, budget, frozenset(tiles) - {tile})
        for kernel in self.fixed():
            total, over = 0.0, []
            for layer in layers:
                cand = next(c for c in layer.candidates if c.kernel == kernel)
                total += cand.time_s * layer.repeat
                if not cand.meets(budget, self.metric):
                    over.append(layer.name)
            out[kernel] = NetworkEntry(total, over)
        return out

    # ------------------------------------------------------------ tables
    def choices_table(self) -> Table:
        """Per layer at the run's budget: the choice, runner-up, Pareto front, fastest."""
        rows = []
        for layer in self.layers():
            c = self.choice(layer, self.budget)
            front = ", ".join(k.kernel for k in pareto_front(layer.candidates, self.metric))
            fastest = min(layer.candidates, key=lambda k: k.time_s, default=None)
            fastest_cell = (f"{fastest.kernel} ({fmt(fastest.error(self.metric), '.1e')})"
                            if fastest else "—")
            if c is None:
                rows.append([layer.name, "none within budget", "—", "—", "—", front,
                             fastest_cell])
                continue
            rows.append([layer.name, c.chosen.kernel, fmt(c.chosen.time_s * 1e3, ".3f"),
                         fmt(c.chosen.error(self.metric), ".1e"),
                         c.runner_up.kernel if c.runner_up else "—", front, fastest_cell])
        return Table(["layer", "chosen", "ms", self.metric, "runner-up",
                      "Pareto front (fastest first)", f"fastest ({self.metric})"], rows)

    def budgets_table(self) -> Table:
        """Per budget: whole-network ms of the tuned lines and each fixed kernel."""
        fixed = self.fixed()
        lines = self.tuned_lines()
        peer = self.view.baseline
        rows = []
        for budget in self.budget_levels():
            net = self.network(budget)
            tuned = net[TUNED]
            row = [f"{budget:g}", *(_cell(net[name]) for name in lines)]
            row += [_cell(net[k]) for k in fixed]
            base = net.get(peer)
            row.append(fmt(base.time_s / tuned.time_s if base and tuned.time_s else None,
                           ".2f"))
            rows.append(row)
        return Table([f"{self.metric} budget", *(f"{name} ms" for name in lines),
                      *(f"{k} ms" for k in fixed), f"{peer} / {TUNED}"], rows)


def _cell(entry: NetworkEntry) -> str:
    if entry.time_s is None:
        return f"none ({len(entry.over_budget)} layers unmet)"
    text = fmt(entry.time_s * 1e3, ".2f")
    return f"{text} (over on {len(entry.over_budget)})" if entry.over_budget else text


# ------------------------------------------------------------------ figures
#: Errors are drawn on a log axis; an exact result (error 0) is drawn at this value.
EXACT_FLOOR = 1e-17


def plot_tradeoff(tv: TradeoffView, path: Path) -> Path:
    """Per layer: time against error of every kernel, the Pareto front, the budget, the choice."""
    plt = plots._pyplot()
    layers = tv.layers()
    cols = min(4, max(1, len(layers)))
    rows = max(1, math.ceil(len(layers) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows + 0.6),
                             squeeze=False)
    order = tv.view.kernels
    for ax, layer in zip(axes.flat, layers, strict=False):
        for cand in layer.candidates:
            err = cand.error(tv.metric)
            if math.isnan(err):
                continue
            ax.scatter(max(err, EXACT_FLOOR), cand.time_s * 1e3, s=30,
                       marker="s" if cand.kind == "baseline" else "o",
                       color=color_of(cand.kernel, order), label=cand.kernel, zorder=3)
        # Most accurate first: the staircase steps down to each faster, less accurate kernel.
        front = pareto_front(layer.candidates, tv.metric)[::-1]
        if front:
            xs = [max(c.error(tv.metric), EXACT_FLOOR) for c in front]
            ys = [c.time_s * 1e3 for c in front]
            ax.step(xs, ys, where="post", color="k", lw=1, ls="-", alpha=0.6, zorder=2,
                    label="Pareto front")
        ax.axvline(tv.budget, color="#cc3311", ls="--", lw=1, label=f"budget {tv.budget:g}")
        c = tv.choice(layer, tv.budget)
        if c is not None:
            ax.scatter(max(c.chosen.error(tv.metric), EXACT_FLOOR), c.chosen.time_s * 1e3,
                       s=140, facecolors="none", edgecolors="k", lw=1.5, zorder=4,
                       label="chosen")
        _log_axes(ax)
        ax.set_title(f"{layer.name}" + (f" (x{layer.repeat})" if layer.repeat > 1 else "")
                     + (f": {c.chosen.kernel}" if c is not None else ": none within budget"),
                     fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.25)
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("median ms", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel(tv.metric, fontsize=8)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.suptitle(f"{tv.view.label}: time vs {tv.metric} per layer (circles: convbench, "
                 "squares: baselines)", fontsize=9)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(6, len(handles)),
               fontsize=8, frameon=False)
    height = 2.9 * rows + 0.6
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _log_axes(ax: Any) -> None:
    """Log axes labelled at 1, 2 and 5 times each power of ten, in plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: PLC0415

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis, text in ((ax.xaxis, "{:.0e}"), (ax.yaxis, "{:g}")):
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _, text=text: text.format(v)))
        axis.set_minor_formatter(NullFormatter())


def plot_budgets(tv: TradeoffView, path: Path) -> Path:
    """Whole-network time per budget: the tuned plan, each fixed kernel, the vendor.

    A fixed kernel whose error exceeds the budget on some layer is drawn
    hatched and pale: it is faster or slower, but not admissible.
    """
    plt = plots._pyplot()
    from matplotlib.patches import Patch  # noqa: PLC0415

    budgets = tv.budget_levels()
    lines = tv.tuned_lines()
    names = [*lines, *tv.fixed()]
    colours = {n: color_of(n, tv.view.kernels) for n in names}
    colours[TUNED] = "#000000"
    tiles = tv.winograd_tiles()
    for tile in tiles:  # a tile's own colour: it runs no fixed line (not every layer)
        colours[tuned_with(tile)] = color_of(tile, tv.view.kernels)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.0 + 0.4 * len(budgets) * len(names)), 4.6))
    width = 0.8 / len(names)
    for i, budget in enumerate(budgets):
        network = tv.network(budget)
        for j, name in enumerate(names):
            entry = network[name]
            x = i + (j - (len(names) - 1) / 2) * width
            if entry.time_s is None:
                ax.text(x, 0.02, "none within budget", rotation=90, ha="center", va="bottom",
                        fontsize=7, transform=ax.get_xaxis_transform())
                continue
            admissible = not entry.over_budget
            ax.bar(x, entry.time_s * 1e3, width, color=colours[name],
                   alpha=1.0 if admissible else 0.3, hatch=None if admissible else "//",
                   edgecolor="#000000" if name in lines else colours[name],
                   linewidth=1.2 if name in lines else 1.0)
            ax.text(x, entry.time_s * 1e3, f"{entry.time_s * 1e3:.0f}", ha="center",
                    va="bottom", fontsize=6, rotation=90 if len(names) > 5 else 0)
    ax.set_xticks(range(len(budgets)), [f"{tv.metric} <= {b:g}" for b in budgets], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("whole-network ms (sum of median x repeat, log)")
    title = f"{tv.view.label}: tuned plan vs fixed kernels per budget"
    if len(lines) > 1:
        title += " (black edges: tuned plans; 'TILE only': its one Winograd tile)"
    ax.set_title(title, fontsize=9)
    handles = [Patch(facecolor=colours[n], edgecolor="#000000" if n in lines else colours[n],
                     label=n) for n in names]
    handles.append(Patch(facecolor="white", edgecolor="#666666", hatch="//",
                         label="over budget on some layer"))
    ax.legend(handles=handles, fontsize=8, ncol=min(4, len(handles)), loc="upper left",
              bbox_to_anchor=(0, -0.12), frameon=False)
    return plots._save(fig, path)
