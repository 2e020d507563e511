"""Suites from ONNX models: graphs built with onnx.helper, read back as descriptors.

Each single-Conv case is held twice: to a descriptor written out by hand, and
to onnx's own reference evaluator, whose output on random data must equal the
float64 reference of the descriptor's problem.
"""

import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="reading ONNX models needs the onnx package: "
                                          "pip install 'convbench[models]'")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import convbench  # noqa: E402
from convbench import cli  # noqa: E402
from convbench.errors import MissingExtra  # noqa: E402
from convbench.problem.models import layers_from_spec  # noqa: E402
from convbench.problem.reference import reference_for  # noqa: E402
from convbench.problem.suites import load_suite  # noqa: E402
from convbench.store.jsonl import load_run  # noqa: E402


def _weight(name, shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.uniform(-1, 1, shape).astype(dtype), name)


def _model(nodes, inputs, initializers, elem=TensorProto.FLOAT):
    """A one-output graph ("y", of the first input's rank)."""
    rank = len(inputs[0][1])
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info(n, elem, s) for n, s in inputs],
        [helper.make_tensor_value_info("y", elem, [None] * rank)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


#: (case, input shape, weight shape, bias, Conv attributes, descriptor without the name)
CONV_CASES = [
    # pads [top, left, bottom, right] = [1, 0, 2, 1], stride 2: output 6x5 on 11x10
    ("asymmetric_pads", (1, 4, 11, 10), (6, 4, 3, 3), False,
     {"strides": [2, 2], "pads": [1, 0, 2, 1]}, "mb1ic4ih11iw10oc6ow5kh3sh2ph1pw0"),
    # SAME_UPPER, stride 2 on 10x10: output 5x5, total padding 1, at the end
    ("same_upper", (1, 4, 10, 10), (4, 4, 3, 3), False,
     {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, "mb1ic4ih10oc4oh5ow5kh3sh2"),
    # SAME_LOWER, a 4x4 filter on 7x7: total padding 3, 2 at the beginning
    ("same_lower", (1, 4, 7, 7), (4, 4, 4, 4), False,
     {"auto_pad": "SAME_LOWER"}, "mb1ic4ih7oc4oh7ow7kh4ph2"),
    # VALID: no padding whatever pads would say
    ("valid", (2, 3, 9, 8), (5, 3, 3, 2), False, {"auto_pad": "VALID"},
     "mb2ic3ih9iw8oc5kh3kw2"),
    # 2 groups, dilation 2, pads 2, with bias
    ("grouped_dilated", (1, 4, 9, 9), (6, 2, 3, 3), True,
     {"group": 2, "dilations": [2, 2], "pads": [2, 2, 2, 2]},
     "--dir=FWD_B g2mb1ic4ih9oc6kh3ph2dh1"),
    # depthwise, kernel_shape given, stride 2 in w only
    ("depthwise", (1, 6, 8, 8), (6, 1, 3, 3), True,
     {"group": 6, "kernel_shape": [3, 3], "strides": [1, 2], "pads": [1, 1, 1, 1]},
     "--dir=FWD_B g6mb1ic6ih8oc6kh3sh1sw2ph1"),
    # a 1-D Conv: a 2-D problem of height 1
    ("one_d", (2, 3, 20), (5, 3, 3), False, {"strides": [2], "pads": [1, 2]},
     "mb2ic3ih1iw20oc5ow11kh1kw3sh1sw2ph0pw1"),
]


@pytest.mark.parametrize("case, x_shape, w_shape, bias, attrs, descriptor", CONV_CASES,
                         ids=[c[0] for c in CONV_CASES])
def test_a_conv_node_becomes_its_descriptor(case, x_shape, w_shape, bias, attrs, descriptor):
    inputs = ["x", "w", "b"] if bias else ["x", "w"]
    inits = [_weight("w", w_shape)] + ([_weight("b", (w_shape[0],), 1)] if bias else [])
    model = _model([helper.make_node("Conv", inputs, ["y"], name=case, **attrs)],
                   [("x", list(x_shape))], inits)
    onnx.checker.check_model(model)
    found = convbench.layers_from_onnx(model)
    assert [(str(x.problem), x.repeat) for x in found.layers] == [(f'{descriptor}n"{case}"', 1)]
    p = found.layers[0].problem
    x = np.random.default_rng(2).uniform(-1, 1, x_shape)
    w = numpy_helper.to_array(inits[0]).astype(np.float64)
    b = numpy_helper.to_array(inits[1]).astype(np.float64) if bias else None
    double = _model([helper.make_node("Conv", inputs, ["y"], **attrs)],
                    [("x", list(x_shape))],
                    [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"))
                     if a is not None], elem=TensorProto.DOUBLE)
    (y,) = ReferenceEvaluator(double).run(None, {"x": x})
    y = y.reshape(p.output_shape)  # a 1-D output gets its height 1
    np.testing.assert_allclose(reference_for(p, x.reshape(p.input_shape),
                                             w.reshape(p.weight_shape), b), y,
                               rtol=1e-10, atol=1e-12)


def _graph_with_everything():
    """Dynamic batch; Pad then Conv; a repeated conv; ConvTranspose, 3-D and If-body convs."""
    c = 4
    nodes = [
        helper.make_node("Conv", ["x", "w_stem"], ["a"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Pad", ["a", "pads"], ["a_pad"], name="pad"),
        helper.make_node("Conv", ["a_pad", "w_sq"], ["b"], name="after_pad"),
        helper.make_node("Conv", ["b", "w_sq"], ["c"], name="same_again",
                         auto_pad="SAME_UPPER"),
        helper.make_node("Conv", ["c", "w_sq"], ["d"], name="and_again", pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["d", "w_up"], ["e"], name="up", strides=[2, 2]),
        helper.make_node("Unsqueeze", ["e", "axis1"], ["e5"], name="to_3d"),
        helper.make_node("Conv", ["e5", "w_3d"], ["f"], name="volume"),
        helper.make_node("If", ["flag"], ["y"], name="branch",
                         then_branch=helper.make_graph(
                             [helper.make_node("Conv", ["d", "w_sq"], ["t"], name="inner")],
                             "then", [], [helper.make_tensor_value_info("t", 1, None)]),
                         else_branch=helper.make_graph(
                             [helper.make_node("Identity", ["d"], ["u"])],
                             "else", [], [helper.make_tensor_value_info("u", 1, None)])),
    ]
    inits = [_weight("w_stem", (c, 3, 3, 3)), _weight("w_sq", (c, c, 3, 3)),
             _weight("w_up", (c, c, 2, 2)), _weight("w_3d", (2, 1, 3, 3, 3)),
             numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    graph = helper.make_graph(
        nodes, "everything",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("f", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_graph_gives_distinct_layers_repeats_and_unmodelled_convs(tmp_path):
    path = tmp_path / "everything.onnx"
    onnx.save(_graph_with_everything(), path)
    found = convbench.layers_from_onnx(path, {"x": (2, 3, 8, 8)})
    # stem 3->4 at 8x8; Pad adds a row and a column at the end (the padded 9x9 input is
    # the next conv's, not folded); after_pad 9x9 -> 7x7; same_again and and_again are
    # the same 3x3 padding-1 conv at 7x7 (SAME_UPPER with stride 1 pads 1 on each side).
    assert [(str(x.problem), x.repeat) for x in found.layers] == [
        ('mb2ic3ih8oc4kh3ph1n"stem"', 1), ('mb2ic4ih9oc4kh3n"after_pad"', 1),
        ('mb2ic4ih7oc4kh3ph1n"same_again"', 2)]
    assert found.paths[2] == ["same_again", "and_again"]
    assert [(c.path, c.op) for c in found.unmodelled] == [
        ("up", "ConvTranspose"), ("volume", "Conv"), ("branch/then_branch/inner", "Conv")]
    reasons = [c.reason for c in found.unmodelled]
    assert "transposed" in reasons[0] and "3-D" in reasons[1] and "subgraph" in reasons[2]
    text = found.suite_text()
    assert "# not modelled: up (ConvTranspose): transposed convolution" in text
    assert "input x=2x3x8x8" in text and "Pad node" in text


def test_dynamic_dimensions_need_input_shapes_and_the_error_names_the_input(tmp_path,
                                                                          capsys):
    path = tmp_path / "everything.onnx"
    onnx.save(_graph_with_everything(), path)
    with pytest.raises(ValueError, match=r"input 'x' of everything.onnx has dynamic "
                                         r"dimension\(s\) 'batch'.*--input x=N,3,8,8"):
        convbench.layers_from_onnx(path)
    assert cli.main(["layers", "--from-onnx", str(path)]) == 2
    assert "input 'x'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="has no input 'images'; its inputs are 'x', 'flag'"):
        convbench.layers_from_onnx(path, {"images": (1, 3, 8, 8)})
    with pytest.raises(ValueError, match=r"shape \[batch, 3, 8, 8\]; the given \[1, 3, 9, 8\]"):
        convbench.layers_from_onnx(path, {"x": (1, 3, 9, 8)})
    with pytest.raises(ValueError, match="has 2 inputs"):
        layers_from_spec(str(path), ["1,3,8,8"])
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        convbench.layers_from_onnx(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match="is not an ONNX model"):
        convbench.layers_from_onnx(junk)


def test_a_single_input_takes_an_unnamed_shape_and_float64_is_kept():
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="c")],
                   [("x", ["n", 2, 5, 5])], [_weight("w", (3, 2, 3, 3), dtype=np.float64)],
                   elem=TensorProto.DOUBLE)
    found = convbench.layers_from_onnx(model, {"": (4, 2, 5, 5)})
    assert [str(x.problem) for x in found.layers] == ['--dt=f64 mb4ic2ih5oc3kh3n"c"']


def test_layers_and_run_model_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "everything.onnx"
    onnx.save(_graph_with_everything(), path)
    suite = tmp_path / "everything.txt"
    assert cli.main(["layers", "--from-onnx", str(path), "--input", "x=2,3,8,8",
                     "-o", str(suite)]) == 0
    captured = capsys.readouterr()
    assert "wrote 3 distinct layers (4 convolutions)" in captured.out
    assert "3 convolution(s) of everything.onnx cannot be modelled" in captured.err
    assert "up (ConvTranspose): transposed convolution is not modelled" in captured.err
    assert [x.repeat for x in load_suite(str(suite))] == [1, 1, 2]
    out = tmp_path / "run.jsonl"
    assert cli.main(["run", "--model", str(path), "--input", "x=2,3,8,8", "--algo", "direct",
                     "--mode", "accuracy", "--out", str(out), "--no-progress",
                     "--no-isolate"]) == 0
    records = load_run(out).records
    assert [(r["name"], r["repeat"], r["suite"], r["status"]) for r in records] == [
        ("stem", 1, "everything", "ok"), ("after_pad", 1, "everything", "ok"),
        ("same_again", 2, "everything", "ok")]
    assert "are left out" in capsys.readouterr().err


def test_without_onnx_the_flag_says_what_to_install(monkeypatch, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_graph_with_everything(), path)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingExtra, match=r"pip install 'convbench\[models\]'"):
        convbench.layers_from_onnx(path)
    assert cli.main(["layers", "--from-onnx", str(path)]) == 2
    assert "pip install 'convbench[models]'" in capsys.readouterr().err
