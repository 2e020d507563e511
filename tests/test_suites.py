"""Shipped suites: every line parses, round-trips, and has the right layer count."""

import pytest

from convbench import ConvProblem
from convbench.problem.suites import list_suites, load_suite, parse_suite, suite_path

SHIPPED = ["alexnet", "deepbench", "googlenet", "lenet5", "mobilenet_v1", "resnet50", "vgg16"]


def test_every_named_suite_ships():
    assert list_suites() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_line_parses_round_trips_and_has_positive_output(name):
    layers = load_suite(name)
    assert layers
    for layer in layers:
        p = layer.problem
        assert p.oh > 0 and p.ow > 0 and p.name
        assert ConvProblem.parse(str(p)) == p
    names = [layer.problem.name for layer in layers]
    assert len(set(names)) == len(names), "layer names must be unique within a suite"


@pytest.mark.parametrize("name, lines, conv_layers, gflop_per_image", [
    ("resnet50", 20, 53, 7.71),   # ~3.86 GMAC
    ("vgg16", 9, 13, 30.69),      # ~15.3 GMAC
    ("googlenet", 57, 57, 3.16),  # ~1.58 GMAC
    ("mobilenet_v1", 19, 27, 1.14),  # ~569 MMAC
    ("alexnet", 5, 5, 1.33),
    ("lenet5", 3, 3, 0.000811),  # 235200 + 480000 + 96000 flops
    ("deepbench", 94, 94, None),
])
def test_network_sizes_match_the_literature(name, lines, conv_layers, gflop_per_image):
    layers = load_suite(name, batch=1)
    assert len(layers) == lines
    assert sum(x.repeat for x in layers) == conv_layers
    if gflop_per_image is not None:
        total = sum(x.problem.flops * x.repeat for x in layers) / 1e9
        assert total == pytest.approx(gflop_per_image, rel=0.01)


def test_alexnet_has_grouped_and_mobilenet_depthwise_layers():
    assert {x.problem.g for x in load_suite("alexnet")} == {1, 2}
    assert sum(x.problem.is_depthwise for x in load_suite("mobilenet_v1")) == 9


def test_batch_dtype_and_bias_overrides():
    layers = load_suite("resnet50", batch=8, dtype="float64", bias=True)
    assert {(x.problem.mb, x.problem.dtype, x.problem.bias) for x in layers} == \
        {(8, "float64", True)}
    assert load_suite("resnet50")[0].problem.mb == 2  # benchdnn's default mb
    assert load_suite("deepbench")[0].problem.mb == 4  # DeepBench's own batch kept


def test_user_file_with_comments(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text('# my layers\n\nmb1ic8ih10oc8kh3ph1n"a"  # repeat=5 hot loop\n'
                    'ic4ih6oc2kh1n"b#1"\n')
    layers = load_suite(str(path))
    assert [(x.problem.name, x.repeat) for x in layers] == [("a", 5), ("b#1", 1)]
    assert suite_path(str(path)) == path


def test_errors_name_file_and_line(tmp_path):
    with pytest.raises(ValueError, match=r"bad.txt:2: cannot parse"):
        path = tmp_path / "bad.txt"
        path.write_text("mb1ic8ih10oc8kh3\nmb1ic8ih10oc8kh3zz\n")
        load_suite(str(path))
    with pytest.raises(ValueError, match="no suite 'nope'"):
        load_suite("nope")
    with pytest.raises(ValueError, match="<suite>:1: .*output size"):
        parse_suite("mb1ic3ih2oc3kh5")


def test_a_3d_line_is_kept_as_unsupported_and_a_bad_line_still_stops(tmp_path):
    good = 'mb1ic3ih8oc4kh3n"two_d"'
    three_d = 'mb1ic3id8ih8oc4kd3kh3n"three_d"'
    layers = parse_suite(f"{good}\n{three_d}  # repeat=2\n", "f.txt")
    assert [x.name for x in layers] == ["two_d", "three_d"]
    assert layers[0].unsupported is None and layers[0].problem is not None
    assert layers[1].problem is None and layers[1].repeat == 2
    assert "3-D convolution is not supported" in layers[1].unsupported
    assert layers[1].descriptor == three_d
    assert layers[1].with_(mb=4) is layers[1]  # overrides leave it as written
    with pytest.raises(ValueError, match=r"f.txt:3: cannot parse"):
        parse_suite(f"{good}\n{three_d}\nmb1ic3ih8oc4kh3zz\n", "f.txt")
