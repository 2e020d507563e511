"""benchmarks/onednn_best_reruns.py: earlier figures against reruns, on recorded samples."""

import dataclasses
import json

import pytest
from benchmark_scripts import loaded_script

from convbench.measure.peers import IntervalRatio, LayerComparison


@pytest.fixture(scope="module")
def reruns():
    with loaded_script("onednn_best_reruns") as module:
        yield module


#: A 3x3 stride-1 layer with C, K >= 64: a Winograd target layer.
LAYER = 'mb8ic64ih56oc64oh56kh3ph1n"res2_branch2b"'


def _file(tmp_path, name, peers_ms, winograd_ms, processes):
    layer = LayerComparison("resnet50", "res2_branch2b", LAYER,
                            samples_ms={**peers_ms, "winograd": winograd_ms},
                            process_of_pass=processes)
    path = tmp_path / name
    path.write_text(json.dumps({"kernels": ["winograd"],
                                "layers": [dataclasses.asdict(layer)]}))
    return str(path)


def test_a_figure_that_the_rerun_no_longer_reaches_falls(reruns, tmp_path):
    # Earlier: the plain call took 10 ms against winograd's 8 (1.25x), in one process.
    old = _file(tmp_path, "old.json", {"onednn": [10.0] * 5}, [8.0] * 5, [])
    # Rerun: onednn_best takes 8 ms, the plain call 10, winograd 10 (0.8x the best peer).
    passes = [8.0, 8.1, 7.9, 8.0, 8.05, 7.95]
    new = _file(tmp_path, "new.json",
                {"onednn_best": passes, "onednn": [10.0] * 6, "onednn_cl": passes},
                [10.0, 10.1, 9.9, 10.0, 10.05, 9.95], [0, 0, 1, 1, 2, 2])
    rows = {r["figure"]: r for r in reruns.compare(old, [new])}
    row = rows["winograd >= 0.9x oneDNN, 3x3 s1 C,K>=64 (ResNet-50, VGG-16)"]
    assert row["old"][0] == pytest.approx(1.25)
    assert row["new"]["onednn_best"][0] == pytest.approx(0.8, rel=0.02)
    assert row["new"]["onednn"][0] == pytest.approx(1.0, rel=0.02)
    assert row["verdict"] == "falls"
    assert row["met"] == "**no**"


def test_a_layer_only_one_file_holds_is_left_out_of_both(reruns, tmp_path):
    old = _file(tmp_path, "old.json", {"onednn": [10.0] * 5}, [8.0] * 5, [])
    other = LAYER.replace("res2_branch2b", "res3_branch2b")
    new_path = tmp_path / "new.json"
    layer = LayerComparison("resnet50", "res3_branch2b", other,
                            samples_ms={"onednn_best": [1.0] * 4, "winograd": [1.0] * 4})
    new_path.write_text(json.dumps({"kernels": ["winograd"],
                                    "layers": [dataclasses.asdict(layer)]}))
    assert reruns.compare(old, [str(new_path)]) == []


@pytest.mark.parametrize("new, expected", [((1.0, 0.9, 1.1), "holds"),
                                           ((0.7, 0.6, 0.8), "falls"),
                                           ((1.3, 1.2, 1.4), "rises")])
def test_the_verdict_places_the_earlier_point_against_the_new_interval(reruns, new, expected):
    old = IntervalRatio(1.0, 0.95, 1.05, "", 0.95, "")
    assert reruns.verdict(old, IntervalRatio(*new, "", 0.95, "")) == expected
