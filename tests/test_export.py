"""Export: the paper's inference form equals the trained network, and the ONNX and TorchScript
files equal eager PyTorch within 1e-5 on random input of another batch size than traced."""
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from inference_fixtures import CLASSES, tiny_checkpoint
from torch import nn

from muldml import load_model
from muldml.cli import main
from muldml.export import InferenceNet, example_input, export
from muldml.model import vote

VARIANTS = {"raw": ("mul-dml", {}), "normalized": ("mul-dml", {"classifier_input": "normalized"}),
            "multitask": ("mul-dml-multask-same", {"num_slices": 3})}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    # sharp=1: the classifier as initialised, logits of the usual scale for a 1e-5 tolerance.
    return {name: load_model(tiny_checkpoint(root / name, preset, sharp=1.0, **kw))
            for name, (preset, kw) in VARIANTS.items()}


def eager(model, images):
    """What the trained network computes in eval mode: the reference for every export."""
    with torch.no_grad():
        out = model.net.eval()(images)
    if model.net.multitask:
        return [out.logits, vote(out.logits), out.embedding]
    return [out.logits, out.embedding]


def images(model, batch=5):
    return torch.randn(batch, 3, model.crop, model.crop, generator=torch.Generator().manual_seed(batch))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_inference_form_equals_the_trained_network(models, variant):
    model = models[variant]
    net = InferenceNet(model.net, embedding=True)
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())
    x = images(model)
    with torch.no_grad():
        got = net(x)
    for a, b in zip(got, eager(model, x), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    # One matrix M = [M_1 … M_N] gives what the N slice maps M_i give side by side.
    with torch.no_grad():
        features = model.net.backbone(x)
        by_slice = torch.cat([layer(features) for layer in model.net.split_embedding()], dim=1)
    assert torch.allclose(got[-1], by_slice, atol=1e-5)


def test_onnx_equals_eager_with_metadata_and_a_dynamic_batch(models, tmp_path):
    model = models["raw"]
    (path,) = export(model, tmp_path / "model.onnx", "onnx", embedding=True)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["classes"] == CLASSES and meta["input_shape"] == ["batch", 3, 30, 30] and meta["resize"] == 32
    assert meta["mean"] == [0.5] * 3 and meta["std"] == [0.5] * 3 and meta["output_names"] == ["logits", "embedding"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "embedding"]
    for batch in (1, 5):  # traced with 2
        x = images(model, batch)
        got = session.run(None, {"images": x.numpy()})
        for a, b in zip(got, eager(model, x), strict=True):
            assert a.shape == tuple(b.shape) and np.abs(a - b.numpy()).max() <= 1e-5


def test_onnx_multitask_gives_per_slice_logits_and_the_vote(models, tmp_path):
    model = models["multitask"]
    (path,) = export(model, tmp_path / "multitask.onnx", "onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["slice_logits", "vote"]
    x = images(model, 7)
    slice_logits, voted = session.run(None, {"images": x.numpy()})
    logits, expected_vote, _ = eager(model, x)
    assert slice_logits.shape == (3, 7, 3) and np.abs(slice_logits - logits.numpy()).max() <= 1e-5
    assert np.array_equal(voted, expected_vote.numpy())


@pytest.mark.parametrize("variant", ["normalized", "multitask"])
def test_torchscript_equals_eager_with_metadata_inside_and_beside(models, variant, tmp_path):
    model = models[variant]
    path, side = export(model, tmp_path / "model.pt", "torchscript", embedding=True)
    assert side.name == "model.pt.json"
    meta = json.loads(side.read_text())
    assert meta["classes"] == CLASSES and meta["multitask"] == (variant == "multitask")
    extra = {"metadata.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["metadata.json"]) == meta
    for batch in (1, 6):
        x = images(model, batch)
        with torch.no_grad():
            got = loaded(x)
        for a, b in zip(got, eager(model, x), strict=True):
            assert a.shape == b.shape and (a.float() - b.float()).abs().max() <= 1e-5
    assert example_input(model).shape[0] == 2  # the traced batch differs from the checked ones


def test_cli_exports_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    run = tiny_checkpoint(tmp_path / "run")
    out = tmp_path / "m.pt"
    assert main(["export", "--checkpoint", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    assert out.is_file() and (tmp_path / "m.pt.json").is_file()
    capsys.readouterr()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "file").write_text("")
    cases = [
        (["--checkpoint", str(run), "--format", "torchscript", "--out", str(out)], "exists"),
        (["--checkpoint", str(tmp_path / "junk.pt"), "--format", "onnx", "--out", str(tmp_path / "a.onnx")], "not a muldml checkpoint"),
        (["--checkpoint", str(tmp_path / "none"), "--format", "onnx", "--out", str(tmp_path / "a.onnx")], "not found"),
        (["--checkpoint", str(run), "--format", "onnx", "--out", str(tmp_path)], "is a folder"),
        (["--checkpoint", str(run), "--format", "onnx", "--out", str(tmp_path / "file" / "a.onnx")], "not writable"),
    ]
    for args, words in cases:
        assert main(["export", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("muldml: error:") and words in err and "\n" not in err, err
