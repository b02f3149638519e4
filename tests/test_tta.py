"""Test-time augmentation (muldml.inference): flip and ten-crop views, their averaging, and
`--tta` in predict and evaluate."""
import json

import numpy as np
import pytest
import torch
from inference_fixtures import CLASSES, tiny_checkpoint
from PIL import Image

from muldml import load_model
from muldml.cli import main
from muldml.data.augment import crop_box, eval_transform
from muldml.errors import UserError
from muldml.inference import TTA_VIEWS, classify_views, tta_transform, tta_views


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("run"))


def faces(n=6, size=48, symmetric=False, seed=0, edges=False):
    """Random-texture 'faces'; symmetric ones are their own mirror image; with edges, a light
    band on the left and a dark one at the top, which some crops hold and others do not."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    if symmetric:
        pixels[:, :, size // 2 :] = pixels[:, :, : size // 2][:, :, ::-1]
    if edges:
        pixels[:, :, : size // 8], pixels[:, : size // 8] = 255, 0
    return [Image.fromarray(p) for p in pixels]


def test_ten_crop_views_are_the_corners_centre_and_their_mirrors():
    image = torch.randn(2, 3, 32, 32)
    views = tta_views(image, 30, "ten-crop")
    assert views.shape == (2, 10, 3, 30, 30)
    for k, position in enumerate(("top_left", "top_right", "bottom_left", "bottom_right")):
        left, top, right, bottom = crop_box(32, 32, 30, position)
        assert torch.equal(views[:, k], image[..., top:bottom, left:right])
        # the mirror image's corners: its top left is the top right mirrored
        assert torch.equal(views[:, 5 + k], views[:, k ^ 1].flip(-1))
    assert torch.equal(views[:, 4], image[..., 1:31, 1:31]) and torch.equal(views[:, 9], views[:, 4].flip(-1))
    flip = tta_views(image, 30, "flip")
    assert flip.shape == (2, 2, 3, 30, 30) and torch.equal(flip[:, 1], flip[:, 0].flip(-1))
    with pytest.raises(UserError, match="unknown test-time augmentation"):
        tta_views(image, 30, "five-crop")


def test_no_tta_is_the_evaluation_transform_exactly():
    for face in faces(3, size=41):
        assert torch.equal(tta_transform(32, None, "none")(face)[0], eval_transform(32)(face))


@pytest.mark.parametrize("preset", ["mul-dml", "mul-dml-multask"])
@pytest.mark.parametrize("tta", ["flip", "ten-crop"])
def test_probabilities_are_the_mean_softmax_over_views(run, tmp_path, preset, tta):
    net = load_model(run if preset == "mul-dml" else tiny_checkpoint(tmp_path, preset)).net
    views = torch.stack([tta_transform(32, None, tta)(face) for face in faces()])
    assert views.shape == (6, TTA_VIEWS[tta], 3, 30, 30)
    probs, preds, embedding = classify_views(net, views)
    with torch.no_grad():  # one view at a time
        outs = [net(views[:, v]) for v in range(views.shape[1])]
    expected = torch.stack([o.logits.softmax(-1) for o in outs]).mean(0)  # (B, C) or (N, B, C)
    if expected.dim() == 3:  # per-slice classifiers: each slice averaged over views, then over slices
        slice_votes = expected.argmax(-1)  # (N, B)
        majority = torch.stack([torch.bincount(slice_votes[:, b], minlength=len(CLASSES)) for b in range(6)])
        assert (majority.gather(1, preds[:, None]) == majority.max(1, keepdim=True).values).all()
        expected = expected.mean(0)
    else:
        assert torch.equal(preds, expected.argmax(1))
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.allclose(embedding, torch.stack([o.embedding for o in outs]).mean(0), atol=1e-5)
    # The views disagree on these faces: averaging over them is not the centre crop's answer.
    centre, _, _ = classify_views(net, views[:, :1] if tta == "flip" else views[:, 4:5])
    assert not torch.allclose(probs, centre, rtol=0, atol=2e-5)


def test_flip_on_a_mirror_symmetric_face_equals_no_tta(run):
    plain = load_model(run, tta="none")
    flipped = load_model(run, tta="flip")
    symmetric = faces(symmetric=True)
    p_none, c_none, _ = plain.classify(symmetric)
    p_flip, c_flip, _ = flipped.classify(symmetric)
    assert torch.allclose(p_flip, p_none, atol=1e-6) and torch.equal(c_flip, c_none)
    asymmetric = faces(seed=1)
    assert not torch.allclose(flipped.classify(asymmetric)[0], plain.classify(asymmetric)[0], atol=1e-3)


def test_predict_and_evaluate_say_which_tta_was_used(run, tmp_path, capsys):
    data = tmp_path / "data"
    for i, face in enumerate(faces(12, size=32, edges=True)):
        (data / CLASSES[i % 3]).mkdir(parents=True, exist_ok=True)
        face.save(data / CLASSES[i % 3] / f"S{i:03d}_{i}.png")
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(data), "--out", str(out), "--split", "all", "--tta", "ten-crop",
                 "--device", "cpu", "--quiet"]) == 0
    assert "test-time augmentation ten-crop" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["tta"] == "ten-crop"
    assert "Test-time augmentation: ten-crop." in (out / "report.md").read_text()
    # evaluate's predictions are the ten-crop averages' classes
    from muldml.data.folder import load_image, scan_folder
    from muldml.evaluate import evaluate

    samples, _ = scan_folder(data, CLASSES)
    model = load_model(run)
    result = evaluate((model.net, model.config), samples, device="cpu", tta="ten-crop")
    views = torch.stack([tta_transform(32, None, "ten-crop")(load_image(s.path)) for s in samples])
    assert result.predictions.tolist() == classify_views(model.net, views)[1].tolist()
    assert result.predictions.tolist() != evaluate((model.net, model.config), samples, device="cpu").predictions.tolist()
    assert result.metrics["tta"] == "ten-crop"

    pred = tmp_path / "pred"
    assert main(["predict", str(data), "--checkpoint", str(run), "--out", str(pred), "--no-detect", "--tta", "flip",
                 "--face-size", "32", "--device", "cpu", "--quiet"]) == 0
    records = [json.loads(line) for line in (pred / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {r["tta"] for r in records} == {"flip"}
    # the records' probabilities are the flip average of each face
    model = load_model(run, tta="flip")
    model.face_size = 32
    expected = model.predict([Image.open(r["source"]) for r in records], detect=False)
    for r, e in zip(records, expected):
        assert r["probabilities"] == pytest.approx(e.probabilities, abs=1e-6)
