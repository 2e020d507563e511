"""Earlier "x oneDNN" figures beside the same figures rerun against ``onednn_best``.

The earlier results were measured against ``onednn``, the plain NCHW call, in one process
per run, some on other machines. The reruns measure the same kernels and layers against
``onednn_best`` (and ``onednn_cl`` and the plain ``onednn`` in the same interleaved run),
over several worker processes. This script reads both kinds of file (``benchmarks/
vs_onednn.py``'s ``OUT.json``), computes every figure the same way from each, on the layers
both hold, and writes one table: the earlier figure and its interval, the new figure against
each peer with its interval, and a verdict.

Verdicts, for the new figure against ``onednn_best``:

* a target with a threshold: ``met`` / ``not shown`` / ``no`` as ``vs_onednn.py`` says them
  (met only when the interval's lower end clears the threshold);
* every figure: ``holds`` when the earlier point lies inside the new interval, ``falls`` when
  the new interval lies wholly below it (convbench is slower relative to the peer than was
  claimed), ``rises`` when wholly above.

Usage::

    python benchmarks/onednn_best_reruns.py --out results/cpu/onednn_best_reruns
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType

from convbench.measure.peers import (
    IntervalRatio,
    LayerComparison,
    geomean,
    geomean_over_passes,
    whole_network,
)
from convbench.problem import ConvProblem
from convbench.store.provenance import combined, markdown_block, read_provenance


def _sibling(name: str) -> ModuleType:
    """A sibling script as a module, loaded from its file: putting ``benchmarks/`` on
    ``sys.path`` would let its ``conftest.py`` shadow the tests' in processes spawned later."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


vs_onednn = _sibling("vs_onednn")

#: (earlier file, rerun files): the rerun files together measured the earlier file's
#: layers again, or some of them. Layers from separate rerun files are paired pass by pass
#: as if they had run in the same processes, which widens no interval and narrows none by
#: much: each file's passes are over 3 worker processes.
_CPU = "results/cpu/"
_RERUN_MB8 = _CPU + "vs_onednn_resnet50_mb8-best.json"
PAIRS = [
    (_CPU + "vs_onednn_resnet50_mb8-epyc.json", [_RERUN_MB8]),
    (_CPU + "vs_onednn_resnet50_mb8.json", [_RERUN_MB8]),
    (_CPU + "vs_onednn.json", [_RERUN_MB8, _CPU + "vs_onednn_resnet50_mb1-best.json",
                               _CPU + "vs_onednn_vgg16_3x3-best.json"]),
]

#: (earlier, rerun) of ``benchmarks/winograd_tiles.py``: the tiles through ``convbench.plan``.
TILE_PAIRS = [(_CPU + "winograd_tiles-xeon.json", _CPU + "winograd_tiles.json")]

#: (earlier tiles study, rerun files of ``vs_onednn.py`` that hold the same target layers):
#: the tiles' targets from the prepared kernels' interleaved reruns.
TILE_RERUNS = [(_CPU + "winograd_tiles-xeon.json",
                [_RERUN_MB8, _CPU + "vs_onednn_resnet50_mb1-best.json",
                 _CPU + "vs_onednn_vgg16_3x3-best.json"])]

#: The Winograd tiles whose fastest a figure takes.
TILES = ("winograd", "winograd_4x4", "winograd_6x6")

#: The peers a rerun reports, the first being the peer of every figure and verdict.
NEW_PEERS = ("onednn_best", "onednn", "onednn_cl")
OLD_PEER = "onednn"


@dataclass(frozen=True)
class Figure:
    """One figure: a label, how to compute it from a file's layers for a peer, a threshold."""

    label: str
    compute: Callable[[list[LayerComparison], list[str], str], IntervalRatio | None]
    threshold: float | None = None
    per_network: bool = False


def load(path: str) -> tuple[list[LayerComparison], list[str], dict]:
    """A ``vs_onednn.py`` JSON file's layers (as :class:`LayerComparison`), kernels, data."""
    data = json.loads(Path(path).read_text())
    known = {f.name for f in fields(LayerComparison)}
    layers = [LayerComparison(**{k: v for k, v in rec.items() if k in known})
              for rec in data["layers"]]
    return layers, list(data["kernels"]), data


def key(r: LayerComparison) -> tuple[str, str, str]:
    """A layer's identity across runs: suite, name and problem text (batch and direction)."""
    return r.suite, r.name, str(ConvProblem.parse(r.problem))


def _geomean(kernel: str | list[str], keep: Callable[[LayerComparison, ConvProblem], bool],
             direction: str = "fwd"):
    def compute(layers: list[LayerComparison], names: list[str], peer: str):
        chosen = [r for r in layers if ConvProblem.parse(r.problem).dir == direction
                  and keep(r, ConvProblem.parse(r.problem))]
        k = [n for n in kernel if n in names] if isinstance(kernel, list) else kernel
        if not k or (isinstance(k, str) and k not in names) or \
                (isinstance(k, list) and len(k) < 2):  # a "fastest of" one kernel is that kernel
            return None
        if chosen and not any(r.samples_ms for r in chosen):
            return point_geomean(chosen, k, peer)
        return geomean_over_passes(chosen, k, peer)
    return compute


def point_geomean(layers: list[LayerComparison], kernel: str | list[str], peer: str
                  ) -> IntervalRatio | None:
    """The geometric mean of the layers' median ratios, for files that kept no per-pass
    samples: a point with no interval (for a list of kernels, each layer's fastest, as
    such files reported it)."""
    ratios = []
    for r in layers:
        mine = [r.ratios.get(n, {}).get(peer) for n in
                (kernel if isinstance(kernel, list) else [kernel])]
        mine = [v for v in mine if v]
        if mine:
            ratios.append(max(mine))
    value = geomean(ratios)
    return None if value is None else IntervalRatio(
        value, math.nan, math.nan, "point", math.nan,
        f"geometric mean of {len(ratios)} layers' medians; the file kept no per-pass samples")


def _network(direction: str | None):
    """Best-of-convbench over a whole network in one direction, or the training step."""
    def compute(layers: list[LayerComparison], names: list[str], peer: str):
        groups: dict[tuple[str, int], list[LayerComparison]] = {}
        for r in layers:
            groups.setdefault((r.suite, ConvProblem.parse(r.problem).mb), []).append(r)
        if len(groups) != 1:
            return None
        rs = next(iter(groups.values()))
        if direction is not None:
            rs = [r for r in rs if ConvProblem.parse(r.problem).dir == direction]
        else:
            by = {d: [r for r in rs if ConvProblem.parse(r.problem).dir == d]
                  for d in ("fwd", "bwd_d", "bwd_w")}
            if not all(by.values()):
                return None
            first = by["fwd"][0].name
            rs = by["fwd"] + by["bwd_w"] + [r for r in by["bwd_d"] if r.name != first]
        w = whole_network(rs, names, peer) if rs else None
        return None if w is None else w[0]
    return compute


def figures() -> list[Figure]:
    """Every figure: ``vs_onednn.py``'s forward and backward targets, the whole-network
    best-of-convbench per direction, the training step, and the Winograd tiles."""
    out = [Figure(label, _geomean(kernel, keep), threshold)
           for label, kernel, _peer, keep, threshold in vs_onednn.TARGETS
           if "+prepare" not in str(kernel)]
    out += [Figure(f"{name} fwd, 3x3 s1 C,K>=64 (geometric mean)",
                   _geomean(name, lambda r, p: vs_onednn._is_winograd_target(p)))
            for name in ("winograd_4x4", "winograd_6x6")]
    for label, direction, kernel, suite, keep, threshold in vs_onednn.BACKWARD_TARGETS:
        if kernel == "best":
            continue

        def keep_in(r, p, suite=suite, keep=keep):
            return r.suite == suite and keep(p)
        out.append(Figure(label, _geomean(kernel, keep_in, direction), threshold))
    out.append(Figure("winograd bwd_w, 3x3 s1 C,K>=64 of ResNet-50 (geometric mean)",
                      _geomean("winograd", lambda r, p: r.suite == "resnet50"
                               and vs_onednn._is_winograd_target(p), "bwd_w")))
    for direction, threshold in (("fwd", None), ("bwd_d", 0.8), ("bwd_w", 0.8)):
        out.append(Figure(f"best-of-convbench, whole network, {direction}",
                          _network(direction), threshold, per_network=True))
    out.append(Figure("best-of-convbench, training step (fwd + bwd_d + bwd_w)", _network(None),
                      per_network=True))
    return out


def verdict(old: IntervalRatio, new: IntervalRatio) -> str:
    """``holds`` / ``falls`` / ``rises``: where the earlier point lies against the new
    interval."""
    if new.hi < old.value:
        return "falls"
    if new.lo > old.value:
        return "rises"
    return "holds"


def text(g: IntervalRatio | None) -> str:
    if g is None:
        return "—"
    if math.isnan(g.lo):
        return f"{g.value:.2f} (point)"
    return f"{g.value:.2f} [{g.lo:.2f}, {g.hi:.2f}]"


def machine(prov: dict | None) -> str:
    platform = (prov or {}).get("platform") or {}
    if "per_source" in platform:
        platform = next(iter(platform["per_source"].values()))
    model = platform.get("cpu_model") or "?"
    ident = f", {platform['id']}" if platform.get("id") else ""
    return f"{model}, {platform.get('cpu_isa') or '?'}{ident}"


def compare(old_path: str, new_paths: list[str]) -> list[dict]:
    """Every figure the earlier file and the rerun files can give, on the layers both hold;
    whole-network figures per suite and batch."""
    old_layers, old_names, _ = load(old_path)
    new_layers, new_names = [], []
    for path in new_paths:
        layers, names, _ = load(path)
        new_layers += layers
        new_names += [n for n in names if n not in new_names]
    shared = {key(r) for r in old_layers} & {key(r) for r in new_layers}
    old_layers = [r for r in old_layers if key(r) in shared]
    new_layers = [r for r in new_layers if key(r) in shared]
    names = [n for n in new_names if n in old_names]
    groups: dict[tuple[str, int], tuple[list, list]] = {}
    for side, layers in enumerate((old_layers, new_layers)):
        for r in layers:
            groups.setdefault((r.suite, ConvProblem.parse(r.problem).mb), ([], []))[side].append(r)
    rows = []
    for fig in figures():
        scopes = [(f"{fig.label}: {suite}, batch {mb}", old, new)
                  for (suite, mb), (old, new) in groups.items()] if fig.per_network \
            else [(fig.label, old_layers, new_layers)]
        for label, old_rs, new_rs in scopes:
            row = _row(fig, label, old_rs, new_rs, names)
            if row is not None:
                rows.append({**row, "old_file": old_path, "new_files": new_paths})
    return rows


def _row(fig: Figure, label: str, old_rs: list[LayerComparison],
         new_rs: list[LayerComparison], names: list[str]) -> dict | None:
    old = fig.compute(old_rs, names, OLD_PEER)
    new = {peer: fig.compute(new_rs, names, peer) for peer in NEW_PEERS}
    best = new[NEW_PEERS[0]]
    if old is None or best is None:
        return None
    return {"figure": label,
            "old": [None if math.isnan(v) else v for v in (old.value, old.lo, old.hi)],
            "old_interval": old.label,
            "new": {p: None if g is None else [g.value, g.lo, g.hi] for p, g in new.items()},
            "new_interval": best.label, "threshold": fig.threshold,
            "met": None if fig.threshold is None else vs_onednn.met_text(best, fig.threshold),
            "verdict": verdict(old, best)}


def compare_tiles(old_path: str, new_path: str) -> list[dict]:
    """``winograd_tiles.py``'s speed targets from both files (its own summary), side by side;
    the rerun has ``onednn_best`` as its only peer."""
    winograd_tiles = _sibling("winograd_tiles")

    old = {what.replace(" (not cross-fitted: no samples kept)", ""): (v, t) for what, v, t in
           winograd_tiles.summary(json.loads(Path(old_path).read_text())["rows"])}
    rows = []
    for what, value, target in winograd_tiles.summary(
            json.loads(Path(new_path).read_text())["rows"]):
        if what not in old or old[what][0] is None or value is None:
            continue
        before = IntervalRatio(*old[what][0], "", 0.95, "")
        now = IntervalRatio(*value, "", 0.95, "")
        rows.append({"figure": f"{what} (through plan)", "old": list(old[what][0]),
                     "old_interval": "median over passes, order-statistic interval",
                     "new": {"onednn_best": list(value), "onednn": None, "onednn_cl": None},
                     "new_interval": "median over passes, order-statistic interval",
                     "threshold": target,
                     "met": None if target is None else winograd_tiles.holds(value, target),
                     "verdict": verdict(before, now), "old_file": old_path,
                     "new_files": [new_path]})
    return rows


def tiles_from_reruns(old_path: str, new_paths: list[str]) -> list[dict]:
    """``winograd_tiles.py``'s speed targets, earlier from its own file, new from
    ``vs_onednn.py`` reruns of the same target layers (prepared kernels rather than plan
    callables; every figure with its between-process interval, the fastest tile
    cross-fitted)."""
    winograd_tiles = _sibling("winograd_tiles")

    old = {what.replace(" (not cross-fitted: no samples kept)", ""): (v, t) for what, v, t in
           winograd_tiles.summary(json.loads(Path(old_path).read_text())["rows"])}
    layers = []
    for path in new_paths:
        layers += [r for r in load(path)[0] if r.suite in ("resnet50", "vgg16")
                   and ConvProblem.parse(r.problem).dir == "fwd"
                   and vs_onednn._is_winograd_target(ConvProblem.parse(r.problem))]
    rows = []
    for batch in (1, 8, None):
        group = [r for r in layers if batch is None or ConvProblem.parse(r.problem).mb == batch]
        where = f"batch {batch}" if batch else "batch 1 and 8"
        figures: list[tuple[str, Callable[[str], IntervalRatio | None], float | None]] = [
            (f"{name} x oneDNN, geomean, {where}",
             lambda peer, name=name, group=group: geomean_over_passes(group, name, peer), target)
            for name, target in (("winograd_6x6", None), ("winograd_4x4", 1.2),
                                 ("winograd", 1.0))]
        figures.append((f"fastest Winograd per layer x oneDNN, geomean, {where}",
                        lambda peer, g=group: geomean_over_passes(g, list(TILES), peer),
                        1.3))
        figures += [(f"{name} slowest layer x oneDNN, {where}",
                     lambda peer, name=name, group=group: _slowest(group, name, peer), 0.7)
                    for name in winograd_tiles.TILES]
        for what, compute, target in figures:
            before = old.get(what, (None,))[0]
            new = {peer: compute(peer) for peer in NEW_PEERS}
            best = new[NEW_PEERS[0]]
            if before is None or best is None:
                continue
            rows.append({
                "figure": f"{what} (tiles study; rerun by vs_onednn.py)",
                "old": list(before), "old_interval": "median over passes, order statistics",
                "new": {p: None if g is None else [g.value, g.lo, g.hi] for p, g in new.items()},
                "new_interval": best.label, "threshold": target,
                "met": None if target is None else vs_onednn.met_text(best, target),
                "verdict": verdict(IntervalRatio(*before, "", 0.95, ""), best),
                "old_file": old_path, "new_files": new_paths})
    return rows


def _slowest(layers: list[LayerComparison], name: str, peer: str) -> IntervalRatio | None:
    """The layer where ``name`` is slowest against ``peer``: its median ratio and interval."""
    ran = [r for r in layers if peer in r.ratios.get(name, {})]
    if not ran:
        return None
    worst = min(ran, key=lambda r: r.ratios[name][peer])
    lo, hi = worst.intervals[name][peer]
    return IntervalRatio(worst.ratios[name][peer], lo, hi, "", 0.95, worst.name)


def report(rows: list[dict], provs: dict[str, dict | None]) -> str:
    lines = [
        "## Earlier figures against `onednn`, rerun against `onednn_best`\n",
        "Each figure is computed the same way from both files, on the layers both hold "
        "(`benchmarks/onednn_best_reruns.py`). Earlier: against the plain NCHW call, "
        "intervals over the passes of one process, on the machine named. New: against "
        "`onednn_best`, with the plain `onednn` and channels-last `onednn_cl` from the same "
        "interleaved run beside it, intervals over the worker processes. `holds`: the "
        "earlier point lies inside the new interval; `falls`: the new interval lies below "
        "it; `rises`: above it. A target is met only when the lower end of its interval "
        "clears it.\n",
        "| figure | earlier file (machine) | earlier x onednn | new x onednn_best "
        "| new x onednn | new x onednn_cl | target | met (new) | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for row in rows:
        new = {p: None if v is None else IntervalRatio(v[0], v[1], v[2], "", 0.95, "")
               for p, v in row["new"].items()}
        old = IntervalRatio(*[math.nan if v is None else v for v in row["old"]], "", 0.95, "")
        lines.append(
            f"| {row['figure']} | `{Path(row['old_file']).name}` "
            f"({machine(provs.get(row['old_file']))}) | {text(old)} | "
            f"{text(new['onednn_best'])} | {text(new['onednn'])} | {text(new['onednn_cl'])} | "
            f"{'—' if row['threshold'] is None else row['threshold']} | {row['met'] or '—'} | "
            f"{row['verdict']} |")
    reruns = sorted({f for row in rows for f in row["new_files"]})
    lines.append("\nNew figures from " + ", ".join(
        f"`{Path(f).name}` ({machine(provs.get(f))})" for f in reruns) + ".")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/cpu/onednn_best_reruns",
                    help="write OUT.json and OUT.md")
    args = ap.parse_args()
    rows, used = [], []
    for old, news in PAIRS:
        missing = [f for f in (old, *news) if not Path(f).exists()]
        if missing:
            print(f"left out: {', '.join(missing)} (not there)", file=sys.stderr)
        news = [f for f in news if Path(f).exists()]
        if not Path(old).exists() or not news:
            continue
        rows += compare(old, news)
        used += [old, *news]
    for old, news in TILE_RERUNS:
        news = [f for f in news if Path(f).exists()]
        if Path(old).exists() and news:
            rows += tiles_from_reruns(old, news)
            used += [old, *news]
    for old, new in TILE_PAIRS:
        if Path(old).exists() and Path(new).exists():
            rows += compare_tiles(old, new)
            used += [old, new]
        else:
            print(f"left out: {old} -> {new} (not there)", file=sys.stderr)
    provs = {f: read_provenance(f) for f in dict.fromkeys(used)}
    prov = combined({f: p for f, p in provs.items() if p is not None})
    prov["derived_by"] = [sys.executable, *sys.argv]
    text_ = report(rows, provs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown_block(prov) + "\n" + text_ + "\n")
    out.with_suffix(".json").write_text(json.dumps({"provenance": prov, "rows": rows},
                                                   indent=1, default=str))
    print(text_)
    return 0


if __name__ == "__main__":
    sys.exit(main())
