"""Suites from PyTorch models: the descriptors and repeats a forward pass implies.

The test model (tests/models/toy_net.py) has a conv stem, repeated residual
blocks, grouped and dilated convolutions, a depthwise layer, a strided 1x1, an
asymmetric nn.ZeroPad2d before a conv, an even 'same' kernel; its expected
layers are written out below by hand from its docstring, and each one is also
held to the module itself: the descriptor's float64 reference on the module's
real input equals the module's output.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="reading PyTorch models needs torch: "
                                            "pip install 'convbench[compare]'")

import convbench  # noqa: E402
from convbench import ConvProblem, cli  # noqa: E402
from convbench.errors import MissingExtra  # noqa: E402
from convbench.problem.models import layers_from_spec, load_factory  # noqa: E402
from convbench.problem.reference import reference_for  # noqa: E402
from convbench.problem.suites import load_suite, parse_suite  # noqa: E402
from convbench.store.jsonl import load_run  # noqa: E402

MODELS = Path(__file__).parent / "models"
sys.path.insert(0, str(MODELS))
import toy_net  # noqa: E402

TOY = f"{MODELS / 'toy_net.py'}:toy_net"
TOY_INPUT = (2, 3, 32, 32)
#: (name, descriptor without the name, repeat) in the order the forward pass runs them.
TOY_LAYERS = [
    ("stem", "mb2ic3ih32oc16kh5sh2ph2", 1),
    ("layer1.0.conv1", "mb2ic16ih16oc8kh1", 3),
    ("layer1.0.conv2", "mb2ic8ih16oc8kh3ph1", 3),
    ("layer1.0.conv3", "mb2ic8ih16oc16kh1", 3),
    ("layer2.0.conv1", "mb2ic16ih16oc16kh1", 1),
    ("layer2.0.conv2", "mb2ic16ih16oc16kh3sh2ph1", 1),
    ("layer2.0.conv3", "mb2ic16ih8oc32kh1", 3),          # and layer2.1/2.2's conv3
    ("layer2.0.down", "mb2ic16ih16oc32kh1sh2", 1),       # the strided 1x1
    ("layer2.1.conv1", "mb2ic32ih8oc16kh1", 2),          # and layer2.2.conv1
    ("layer2.1.conv2", "g4mb2ic16ih8oc16kh3ph1", 1),     # grouped
    ("layer2.2.conv2", "g4mb2ic16ih8oc16kh3ph2dh1", 1),  # grouped, dilation 2
    ("dw", "--dir=FWD_B g32mb2ic32ih8oc32kh3ph1", 1),    # depthwise, 'same', bias
    ("reduce", "mb2ic32ih9oc64kh3sh2", 1),               # on the ZeroPad2d's 9x9 output
    ("wide", "mb2ic64ih4oc64ow4kh1kw4ph0pw1", 1),        # 'same' 1x4: left 1, right 2
    ("head", "--dir=FWD_B mb2ic64ih4oc10kh1", 1),
]


def _expected(layers):
    return [(f'{desc}n"{name}"', repeat) for name, desc, repeat in layers]


def _found(found):
    return [(str(x.problem), x.repeat) for x in found.layers]


def test_toy_net_yields_the_layers_its_forward_pass_implies():
    found = convbench.layers_from_torch(toy_net.toy_net, TOY_INPUT)
    assert _found(found) == _expected(TOY_LAYERS)
    assert found.conv_count == 24 and not found.unmodelled
    assert "meta device" in found.suite_text()  # built without allocating weights
    # The same from a module with real weights: its forward runs on meta copies of them,
    # and the module is left as it was.
    model = toy_net.ToyNet().train()
    assert _found(convbench.layers_from_torch(model, TOY_INPUT)) == _expected(TOY_LAYERS)
    assert model.training and all(m.training for m in model.modules())
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert found.paths[6] == ["layer2.0.conv3", "layer2.1.conv3", "layer2.2.conv3"]


def test_the_zero_pad_in_front_of_a_conv_is_left_as_its_padded_input():
    reduce = {x.problem.name: x.problem for x in
              convbench.layers_from_torch(toy_net.toy_net, TOY_INPUT).layers}["reduce"]
    assert (reduce.ih, reduce.iw, reduce.padding) == (9, 9, ((0, 0), (0, 0)))
    assert "not folded" in convbench.layers_from_torch(toy_net.toy_net, TOY_INPUT).suite_text()


def _real_calls(model, shape, dtype=torch.float64):
    """Every conv module's input, weight, bias and output on a real CPU forward pass."""
    seen = {}
    names = {id(m): n for n, m in model.named_modules()}

    def hook(module, args, output):
        seen.setdefault(names[id(module)], (args[0].detach().numpy(),
                                            module.weight.detach().numpy(),
                                            None if module.bias is None
                                            else module.bias.detach().numpy(),
                                            output.detach().numpy()))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.Conv1d)]
    torch.manual_seed(0)
    model = model.to(dtype).eval()
    with torch.no_grad():
        model(torch.rand(shape, dtype=dtype) * 2 - 1)
    for h in handles:
        h.remove()
    return seen


def test_every_descriptor_computes_what_its_module_computes():
    model = toy_net.ToyNet()
    real = _real_calls(model, TOY_INPUT)
    for layer in convbench.layers_from_torch(model, TOY_INPUT).layers:
        p = layer.problem
        x, w, b, y = real[p.name]
        assert (p.input_shape, p.weight_shape, p.output_shape) == (x.shape, w.shape, y.shape)
        assert (b is not None) == p.bias
        np.testing.assert_allclose(reference_for(p, x, w, b), y, rtol=1e-10, atol=1e-12,
                                   err_msg=p.name)


def _convbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "convbench.cli", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def test_the_extracted_suite_runs_and_every_record_matches_the_real_shapes(tmp_path):
    suite = tmp_path / "toy.txt"
    proc = _convbench("layers", "--from-torch", TOY, "--input", "2,3,32,32", "-o", str(suite))
    assert proc.returncode == 0, proc.stderr
    assert "wrote 15 distinct layers (24 convolutions)" in proc.stdout
    assert [(str(x.problem), x.repeat) for x in load_suite(str(suite))] == \
        _expected(TOY_LAYERS)
    out = tmp_path / "toy.jsonl"
    assert cli.main(["run", "--suite", str(suite), "--algo", "im2col", "--mode", "accuracy",
                     "--out", str(out), "--no-progress", "--no-isolate"]) == 0
    records = load_run(out).records
    real = _real_calls(toy_net.ToyNet(), TOY_INPUT, torch.float32)
    assert sorted(r["name"] for r in records) == sorted(name for name, _, _ in TOY_LAYERS)
    repeats = {name: repeat for name, _, repeat in TOY_LAYERS}
    for rec in records:
        assert rec["status"] == "ok" and rec["error"]["envelope_ratio"] <= 1, rec
        p = ConvProblem.parse(rec["problem"])
        x, w, _, y = real[rec["name"]]
        assert (p.input_shape, p.weight_shape, p.output_shape) == (x.shape, w.shape, y.shape)
        assert rec["repeat"] == repeats[rec["name"]] and rec["suite"] == "toy"


def test_run_model_runs_the_same_layers_as_its_suite(tmp_path):
    out = tmp_path / "model.jsonl"
    assert cli.main(["run", "--model", TOY, "--input", "2,3,32,32", "--algo", "direct",
                     "--mode", "accuracy", "--match", "^(stem|head)$", "--out", str(out),
                     "--no-progress", "--no-isolate"]) == 0
    run = load_run(out)
    assert sorted(r["problem"] for r in run.records) == \
        sorted(d for d, _ in _expected(TOY_LAYERS) if d.endswith(('"stem"', '"head"')))
    assert {r["suite"] for r in run.records} == {"toy_net"}
    config = run.headers[0]["config"]
    assert config["model"] == {"spec": TOY, "input": ["2,3,32,32"]}


def test_unmodellable_layers_are_comments_naming_module_and_reason(tmp_path, capsys):
    suite = tmp_path / "un.txt"
    assert cli.main(["layers", "--from-torch", f"{MODELS / 'toy_net.py'}:unmodellable",
                     "--input", "2,4,6,6", "-o", str(suite)]) == 0
    stderr = capsys.readouterr().err
    text = suite.read_text()
    for path, op, reason in [("reflect", "Conv2d", "padding_mode='reflect'"),
                             ("up", "ConvTranspose2d", "transposed convolution"),
                             ("volume", "Conv3d", "3-D convolution is not supported")]:
        line = next(x for x in text.splitlines() if x.startswith(f"# not modelled: {path} "))
        assert f"({op})" in line and reason in line
        assert f"{path} ({op})" in stderr and reason in stderr
    layers = parse_suite(text)
    # Conv1d(4, 8, 3, stride=2, padding=1, dilation=2) on length 36: a height-1 2-D problem.
    seq = ConvProblem.make(2, 4, 1, 36, 8, 1, 3, stride=(1, 2), padding=(0, 1),
                           dilation=(1, 2), bias=True, name="seq")
    valid = ConvProblem.make(2, 4, 6, 6, 4, 3, 3, padding="valid", bias=True, name="valid")
    assert [x.problem for x in layers] == [seq, valid]


def test_a_printed_suite_goes_to_stdout(capsys):
    assert cli.main(["layers", "--from-torch", TOY, "--input", "2x3x32x32"]) == 0
    assert [(str(x.problem), x.repeat) for x in parse_suite(capsys.readouterr().out)] == \
        _expected(TOY_LAYERS)


def test_a_model_on_the_cpu_only_falls_back_from_meta():
    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            if x.sum().item() > 1:  # needs real data: fails on meta
                return x
            return self.conv(x)

    found = convbench.layers_from_torch(DataDependent, (1, 3, 8, 8))
    assert _found(found) == [('--dir=FWD_B mb1ic3ih8oc4kh3n"conv"', 1)]
    assert "cpu device" in found.suite_text()


@pytest.mark.parametrize("spec, shape, message", [
    ("toy_net", (1, 3, 8, 8), "MODULE:FACTORY"),
    ("no_such_module_here:build", (1, 3, 8, 8), "cannot import 'no_such_module_here'"),
    (f"{MODELS / 'toy_net.py'}:missing", (1, 3, 8, 8), "has no callable 'missing'"),
    ("missing_file.py:build", (1, 3, 8, 8), "no model file"),
    (f"{MODELS / 'toy_net.py'}:toy_net", (1, 4, 32, 32), "forward pass of"),
])
def test_bad_models_say_what_is_wrong(spec, shape, message):
    with pytest.raises(ValueError, match=message):
        layers_from_spec(spec, [",".join(map(str, shape))])


def test_bad_arguments_and_a_factory_that_returns_no_module():
    with pytest.raises(ValueError, match="needs its input shape"):
        layers_from_spec(TOY, [])
    with pytest.raises(ValueError, match="positional"):
        layers_from_spec(TOY, ["x=1,3,8,8"])
    with pytest.raises(ValueError, match="positive integers"):
        layers_from_spec(TOY, ["1,3,0,8"])
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        convbench.layers_from_torch(lambda: 3, (1, 3, 8, 8))
    with pytest.raises(TypeError, match="torch.nn.Module or a factory"):
        convbench.layers_from_torch(3, (1, 3, 8, 8))
    factory, label = load_factory("toy_net:toy_net")
    assert label == "toy_net:toy_net" and isinstance(factory(), toy_net.ToyNet)


def test_without_torch_the_flag_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(MissingExtra, match=r"pip install 'convbench\[compare\]'"):
        layers_from_spec(TOY, ["1,3,8,8"])
    assert cli.main(["layers", "--from-torch", TOY, "--input", "1,3,8,8"]) == 2
    assert "pip install 'convbench[compare]'" in capsys.readouterr().err


#: torchvision's ResNet-50 (v1.5: the stride in each stage's first 3x3, conv2, not in
#: its 1x1), at 1x3x224x224: (name, descriptor without the name, repeat). The 1x1 after
#: each stage's first block and the shortcut of stage 1 (layer1.0.downsample.0: 64 -> 256
#: at 56x56) share a shape, hence repeat=4 there.
RESNET50_V15 = [
    ("conv1", "mb1ic3ih224oc64kh7sh2ph3", 1),
    ("layer1.0.conv1", "mb1ic64ih56oc64kh1", 1),
    ("layer1.0.conv2", "mb1ic64ih56oc64kh3ph1", 3),
    ("layer1.0.conv3", "mb1ic64ih56oc256kh1", 4),
    ("layer1.1.conv1", "mb1ic256ih56oc64kh1", 2),
    ("layer2.0.conv1", "mb1ic256ih56oc128kh1", 1),
    ("layer2.0.conv2", "mb1ic128ih56oc128kh3sh2ph1", 1),
    ("layer2.0.conv3", "mb1ic128ih28oc512kh1", 4),
    ("layer2.0.downsample.0", "mb1ic256ih56oc512kh1sh2", 1),
    ("layer2.1.conv1", "mb1ic512ih28oc128kh1", 3),
    ("layer2.1.conv2", "mb1ic128ih28oc128kh3ph1", 3),
    ("layer3.0.conv1", "mb1ic512ih28oc256kh1", 1),
    ("layer3.0.conv2", "mb1ic256ih28oc256kh3sh2ph1", 1),
    ("layer3.0.conv3", "mb1ic256ih14oc1024kh1", 6),
    ("layer3.0.downsample.0", "mb1ic512ih28oc1024kh1sh2", 1),
    ("layer3.1.conv1", "mb1ic1024ih14oc256kh1", 5),
    ("layer3.1.conv2", "mb1ic256ih14oc256kh3ph1", 5),
    ("layer4.0.conv1", "mb1ic1024ih14oc512kh1", 1),
    ("layer4.0.conv2", "mb1ic512ih14oc512kh3sh2ph1", 1),
    ("layer4.0.conv3", "mb1ic512ih7oc2048kh1", 3),
    ("layer4.0.downsample.0", "mb1ic1024ih14oc2048kh1sh2", 1),
    ("layer4.1.conv1", "mb1ic2048ih7oc512kh1", 2),
    ("layer4.1.conv2", "mb1ic512ih7oc512kh3ph1", 2),
]


def test_the_hand_written_resnet50_v15_list_adds_up():
    """The list itself: 53 convolutions, and v1.5's flops (4.09 GMAC per image)."""
    assert sum(r for _, _, r in RESNET50_V15) == 53
    flops = sum(ConvProblem.parse(d).flops * r for _, d, r in RESNET50_V15)
    assert flops / 2e9 == pytest.approx(4.09, rel=0.01)


def test_torchvision_resnet50_yields_its_distinct_layers_and_repeats():
    pytest.importorskip("torchvision", reason="torchvision is not installed (no build of it "
                                              "installs beside torch 2.13.0 here)")
    found = layers_from_spec("torchvision.models:resnet50", ["1,3,224,224"])
    assert _found(found) == _expected(RESNET50_V15)
    assert found.conv_count == 53 and not found.unmodelled
