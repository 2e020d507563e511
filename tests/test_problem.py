"""ConvProblem: geometry, flop counts and the benchdnn descriptor both ways."""

from dataclasses import replace

import pytest

from convbench import ConvProblem


def test_parse_design_example():
    p = ConvProblem.parse('mb8ic64ih56oc64kh3ph1n"res2a_branch2b"')
    assert (p.mb, p.ic, p.ih, p.iw, p.oc, p.kh, p.kw) == (8, 64, 56, 56, 64, 3, 3)
    assert (p.oh, p.ow, p.ph, p.pw, p.sh, p.sw) == (56, 56, 1, 1, 1, 1)
    assert p.name == "res2a_branch2b"
    assert p.flops == 2 * 8 * 64 * 64 * 9 * 56 * 56
    assert ConvProblem.parse(str(p)) == p


def test_benchdnn_defaults():
    p = ConvProblem.parse("ic3ih32oc16kh3")
    assert p.mb == 2 and p.g == 1 and p.stride == (1, 1) and p.dilation == (1, 1)
    assert (p.iw, p.kw, p.oh, p.ow) == (32, 3, 30, 30)
    assert not p.bias and p.dtype == "float32" and p.name == ""


def test_dilation_uses_benchdnn_convention():
    assert ConvProblem.parse("ic3ih32oc16kh3dh0").dilation == (1, 1)
    p = ConvProblem.parse("ic3ih32oc16kh3dh1")
    assert p.dilation == (2, 2)
    assert p.oh == 32 - 5 + 1
    assert "dh1" in str(p)


def test_missing_w_copies_h_but_explicit_w_wins():
    p = ConvProblem.parse("mb1ic8ih20iw30oc8kh5kw1sh2ph2pw0")
    assert (p.ih, p.iw, p.kh, p.kw, p.sh, p.sw, p.ph, p.pw) == (20, 30, 5, 1, 2, 2, 2, 0)
    assert (p.oh, p.ow) == ((20 + 4 - 5) // 2 + 1, (30 - 1) // 2 + 1)


def test_underscores_and_quotes():
    a = ConvProblem.parse('g2_mb4_ic32ih14_oc64oh14_kh3ph1_n"conv:a_b"')
    b = ConvProblem.parse('g2mb4ic32ih14oc64oh14kh3ph1n"conv:a_b"')
    assert a == b and a.name == "conv:a_b" and a.g == 2


def test_bare_name_runs_to_the_end():
    assert ConvProblem.parse("mb1ic3ih5oc3kh1nconv1_x").name == "conv1_x"


def test_oh_given_without_ph_implies_padding():
    p = ConvProblem.parse("mb1ic64ih56oc64oh56kh3")
    assert p.ph == 1 and p.padding == ((1, 1), (1, 1))


def test_asymmetric_padding_round_trips_through_oh():
    # PyTorch padding="same" for an even filter pads 1 on top, 2 at the bottom.
    p = ConvProblem.make(1, 4, 10, 7, 4, 4, 2, padding="same")
    assert p.padding == ((1, 2), (0, 1))
    assert (p.oh, p.ow) == (10, 7)
    text = str(p)
    assert "oh10" in text and "ow7" in text
    assert ConvProblem.parse(text) == p


def test_one_dimensional_descriptor():
    p = ConvProblem.parse("mb2ic16iw32oc16kw3")
    assert (p.ih, p.kh, p.iw, p.kw, p.oh, p.ow) == (1, 1, 32, 3, 1, 30)


def test_dtype_and_direction_knobs():
    p = ConvProblem.parse("--dt=f64 --dir=FWD_B mb1ic3ih5oc2kh3")
    assert p.dtype == "float64" and p.bias
    assert ConvProblem.parse(str(p)) == p
    assert ConvProblem.parse("--mb=7 mb1ic3ih5oc2kh3").mb == 7
    assert ConvProblem.parse("--cfg=f16 mb1ic3ih5oc2kh3").dtype == "float16"


@pytest.mark.parametrize("text, message", [
    ("mb1ic3ih5kh3", "must give ic and oc"),
    ("mb1ic3oc3kh3", "must give ih"),
    ("mb1ic3ih5oc3", "must give kh"),
    ("mb1ic3id5ih5oc3kh3", "3-D"),
    ("mb1ic3ih5oc3kh3zz4", "cannot parse"),
    ("mb1ic3ih2oc3kh5", "output size must be positive"),
    ("g2mb1ic3ih5oc4kh3", "must divide"),
    ("--dt=bf16 mb1ic3ih5oc3kh3", "unsupported data type"),
    ("--dir=BWD_X mb1ic3ih5oc3kh3", "unknown direction"),
    ("--foo=1 mb1ic3ih5oc3kh3", "unknown option"),
])
def test_bad_descriptors_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        ConvProblem.parse(text)


def test_a_repeated_token_takes_its_last_value_as_in_benchdnn():
    # From benchdnn's inputs/conv/shapes_regression_padding.
    p = ConvProblem.parse("mb1ic16oc16_ih10kh5_kh5ph7sh1")
    assert (p.kh, p.kw, p.ph, p.oh) == (5, 5, 7, 20)
    assert ConvProblem.parse("mb1ic3ih5ih6oc3kh3").ih == 6
    assert ConvProblem.parse("mb1ic3ih9oc3kh3kh5").kh == 5


@pytest.mark.parametrize("text", ["mb1ic3id5ih5oc3kh3", "mb1ic3ih5oc3kd3kh3",
                                  "g2mb2_ic16oc32_id4ih10iw10_kd2kh3kw3_n\"3d_conv\""])
def test_3d_descriptors_are_unsupported_not_malformed(text):
    from convbench.problem import UnsupportedDescriptor

    with pytest.raises(UnsupportedDescriptor, match="3-D convolution is not supported"):
        ConvProblem.parse(text)


def test_math_modes_in_descriptors():
    p = ConvProblem.parse("--attr-fpmath=tf32 mb1ic3ih5oc3kh3")
    assert p.fpmath == "tf32" and p.math == "tf32"
    assert str(p) == "--attr-fpmath=tf32 mb1ic3ih5oc3kh3" and ConvProblem.parse(str(p)) == p
    assert ConvProblem.parse("--dt=f16 mb1ic3ih5oc3kh3").math == "fp16"
    assert ConvProblem.parse("mb1ic3ih5oc3kh3").math == "fp32"
    with pytest.raises(ValueError, match="fpmath 'tf32' applies to float32"):
        ConvProblem.parse("--dt=f64 --attr-fpmath=tf32 mb1ic3ih5oc3kh3")
    with pytest.raises(ValueError, match="fpmath must be one of"):
        ConvProblem.parse("--attr-fpmath=bf16 mb1ic3ih5oc3kh3")


@pytest.mark.parametrize("kwargs", [
    dict(stride=2, padding=1),
    dict(stride=(2, 3), padding=(3, 0), dilation=(1, 2)),
    dict(padding="valid"),
    dict(padding="same", dilation=2),
    dict(padding=((0, 2), (1, 0))),
    dict(groups=4, bias=True, dtype="float64", name="x"),
])
def test_round_trip_of_made_problems(kwargs):
    p = ConvProblem.make(3, 8, 13, 9, 12, 3, 2, **kwargs)
    assert ConvProblem.parse(str(p)) == p


def test_stride_that_skips_the_last_row():
    # 8 rows, 3x3, stride 2, padding 1: the bottom padding row is never read.
    p = ConvProblem.make(1, 1, 8, 8, 1, 3, 3, stride=2, padding=1)
    assert p.oh == 4 and p.padding == ((1, 0), (1, 0))
    assert "oh" not in str(p)


def test_flops_hand_checked():
    # AlexNet conv1: 96 x (3*11*11) x (55*55) multiply-adds per image.
    p = ConvProblem.parse('mb1ic3ih227oc96kh11sh4n"conv1"')
    assert (p.oh, p.ow) == (55, 55)
    assert p.flops == 2 * 96 * 363 * 3025 == 210830400
    # Grouped: AlexNet conv2 (2 groups) does half the work of its dense twin.
    dense = ConvProblem.parse("mb1ic96ih27oc256kh5ph2")
    grouped = ConvProblem.parse("g2mb1ic96ih27oc256kh5ph2")
    assert grouped.flops * 2 == dense.flops == 2 * 256 * 96 * 25 * 27 * 27
    # Depthwise 3x3 on 112x112x32.
    dw = ConvProblem.parse("g32mb1ic32ih112oc32kh3ph1")
    assert dw.is_depthwise and dw.flops == 2 * 32 * 9 * 112 * 112


def test_shapes_and_sizes():
    p = ConvProblem.make(2, 6, 10, 10, 4, 3, 3, groups=2, bias=True)
    assert p.input_shape == (2, 6, 10, 10)
    assert p.weight_shape == (4, 3, 3, 3)
    assert p.output_shape == (2, 4, 8, 8)
    assert p.reduction_length == 27
    assert p.tensor_bytes == 4 * (2 * 6 * 100 + 4 * 27 + 2 * 4 * 64 + 4)
    assert p.im2col_bytes == 4 * 2 * 6 * 9 * 64


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(stride=1.5), TypeError, "stride must be an int"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding="full"), ValueError, "'same' or 'valid'"),
    (dict(padding="same", stride=2), ValueError, "needs stride 1"),
    (dict(dilation=(1, 0)), ValueError, "dilation must be >= 1"),
    (dict(groups=0), ValueError, "groups must be a positive int"),
    (dict(dtype="int32"), TypeError, "dtype must be"),
])
def test_make_validates(kwargs, error, message):
    with pytest.raises(error, match=message):
        ConvProblem.make(1, 4, 8, 8, 4, 3, 3, **kwargs)


def test_paper_notation_aliases():
    p = ConvProblem.parse("g2mb3ic8ih10iw12oc6kh3kw5ph1")
    # pw copies ph = 1, so Q = 12 + 2 - 5 + 1 = 10.
    assert (p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.P, p.Q) == (3, 8, 10, 12, 6, 3, 5, 10, 10)
    assert (p.groups, p.stride, p.dilation) == (2, (1, 1), (1, 1))


def test_with_recomputes_output_size():
    p = ConvProblem.parse("mb1ic3ih32oc8kh3ph1")
    q = p.with_(ih=16, mb=4)
    assert (q.oh, q.ow, q.mb) == (16, 32, 4)
    assert p.with_(mb=3).oh == 32


@pytest.mark.parametrize("knob, direction, bias", [
    ("", "fwd", False), ("--dir=FWD_D ", "fwd", False), ("--dir=FWD_B ", "fwd", True),
    ("--dir=FWD_I ", "fwd", False), ("--dir=BWD_D ", "bwd_d", False),
    ("--dir=BWD_W ", "bwd_w", False), ("--dir=BWD_WB ", "bwd_wb", True),
    ("--dir=bwd_d ", "bwd_d", False),
])
def test_the_dir_knob_takes_benchdnns_directions_and_round_trips(knob, direction, bias):
    p = ConvProblem.parse(f"{knob}--dt=f64 g2mb3ic4ih9iw7oc6kh3sh2ph1n\"layer\"")
    assert (p.dir, p.bias, p.dtype, p.g, p.sh) == (direction, bias, "float64", 2, 2)
    assert ConvProblem.parse(str(p)) == p
    assert ("--dir=" in str(p)) == (direction != "fwd" or bias)


def test_direction_is_a_validated_field_that_keeps_shapes_and_flops():
    p = ConvProblem.parse("--dir=FWD_B mb2ic8ih10oc4kh3sh2ph1")
    assert p.dir == "fwd" and ConvProblem.make(1, 1, 3, 3, 1, 1, 1).dir == "fwd"
    for direction in ("bwd_d", "bwd_w"):
        q = replace(p, dir=direction)
        assert q.dir == direction and not q.bias  # the bias enters neither dx nor dw
        assert (q.input_shape, q.weight_shape, q.output_shape, q.flops) == (
            p.input_shape, p.weight_shape, p.output_shape, p.flops)
        assert ConvProblem.parse(str(q)) == q
    wb = replace(p, dir="bwd_wb")
    assert wb.bias and str(wb).startswith("--dir=BWD_WB ") and ConvProblem.parse(str(wb)) == wb
    with pytest.raises(ValueError, match="bwd_wb .*needs a problem with bias"):
        replace(p, bias=False, dir="bwd_wb")
    with pytest.raises(ValueError, match="dir must be one of fwd, bwd_d, bwd_w, bwd_wb, got 'bwd'"):
        replace(p, dir="bwd")
    with pytest.raises(ValueError, match="dir must be one of"):
        replace(p, dir=None)


def test_normalize_direction_takes_both_spellings():
    from convbench.problem import normalize_direction
    assert [normalize_direction(n) for n in ("fwd", "FWD_D", "fwd_b", "BWD_D", "bwd_w",
                                             "BWD_WB", "Bwd_D")] == [
        "fwd", "fwd", "fwd", "bwd_d", "bwd_w", "bwd_wb", "bwd_d"]
    with pytest.raises(ValueError, match="direction must be one of .* got 'bwd'"):
        normalize_direction("bwd")
    with pytest.raises(TypeError, match="direction must be a str"):
        normalize_direction(1)
