"""The Python inference API: load_model → predict (photos or aligned crops) and embed."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from inference_fixtures import CLASSES, tiny_checkpoint
from PIL import Image
from skimage import data

from muldml import load_model
from muldml.data.folder import load_image, scan_folder
from muldml.errors import UserError
from muldml.evaluate import predict as evaluate_predict
from muldml.inference import as_pil
from muldml.model import vote
from muldml.prepare import to_rgb
from muldml.training.checkpoint import CHECKPOINT_FORMAT


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(tiny_checkpoint(tmp_path_factory.mktemp("run")), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def astronaut():
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def crops():
    """Varied 48-px 'aligned faces' (noisy colour ramps): predictions differ between them."""
    def crop(seed):
        rng = np.random.default_rng(seed)
        ramp = np.linspace(0, 1, 48)[:, None, None] * rng.integers(-128, 128, 3)
        pixels = rng.integers(0, 256, 3) + ramp + rng.normal(0, 20, (48, 48, 3))
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    return [crop(seed) for seed in range(6)]


def test_settings_come_from_the_checkpoint(model):
    assert model.classes == CLASSES and model.image_size == 32 and model.crop == 30
    assert model.mean == [0.5] * 3 and model.std == [0.5] * 3
    assert model.device == torch.device("cpu") and not model.net.training


def test_every_face_of_a_photo_gets_a_record(model, astronaut):
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut, (0, 0))
    pair.paste(astronaut.transpose(Image.FLIP_LEFT_RIGHT), (512, 0))
    blank = Image.new("RGB", (120, 90), (128, 128, 128))
    records = model.predict([pair, blank], sources=["pair", "blank"])
    assert [(r.source, r.face, r.status) for r in records] == [("pair", 0, "ok"), ("pair", 1, "ok"),
                                                                ("blank", -1, "no_face")]
    lefts = sorted(r.box[0] for r in records[:2])
    assert 150 < lefts[0] < 300 and 700 < lefts[1] < 850  # one face in each half
    for r in records[:2]:
        assert r.detector_probability > 0.99 and np.asarray(r.landmarks).shape == (5, 2)
        assert list(r.probabilities) == CLASSES and abs(sum(r.probabilities.values()) - 1) < 1e-5
        assert r.expression == max(r.probabilities, key=r.probabilities.get)
        assert r.embedding is None
    assert "no face" in records[2].reason and records[2].expression is None


def test_faces_are_aligned_as_prepare_aligns_training_faces(model, astronaut, tmp_path):
    from muldml.data.sources import load_source
    from muldml.prepare import prepare

    (tmp_path / "src" / "happiness").mkdir(parents=True)
    astronaut.save(tmp_path / "src" / "happiness" / "astronaut.png")
    prepare(load_source("folder", tmp_path / "src"), tmp_path / "prepared", size=model.face_size,
            rotations=(0,), progress=False)
    (prepared,) = (tmp_path / "prepared" / "happiness").glob("*.png")
    (record,) = model.predict(astronaut, embeddings=True)
    probs, _, embedding = model.classify([load_image(prepared)])
    # The same pixels reach the network: identical, not merely close.
    assert torch.equal(torch.tensor(list(record.probabilities.values())), probs[0])
    assert torch.equal(torch.tensor(record.embedding), embedding[0])


def test_aligned_crops_are_classified_as_evaluation_classifies_them(model, crops, tmp_path):
    for i, crop in enumerate(crops):
        (tmp_path / CLASSES[i % 3]).mkdir(exist_ok=True)
        crop.save(tmp_path / CLASSES[i % 3] / f"S{i:03d}_{i}.png")
    samples, _ = scan_folder(tmp_path, CLASSES)
    expected = evaluate_predict(model.net, samples, model.config, torch.device("cpu"))
    assert len(set(expected.tolist())) > 1, "the fixture should give varied predictions"
    model.face_size = 48  # the crops' own size: prepare --no-detect would leave them as they are
    try:
        records = model.predict([load_image(s.path) for s in samples], detect=False)
    finally:
        model.face_size = 236
    assert [CLASSES.index(r.expression) for r in records] == expected.tolist()
    assert [r.face for r in records] == [0] * len(samples) and all(r.box is None for r in records)


def test_pil_arrays_and_tensors_give_the_same_prediction(model, crops):
    crop = crops[0]
    pixels = np.array(crop)
    forms = [crop, pixels, pixels.astype(np.float32) / 255, torch.from_numpy(pixels).permute(2, 0, 1),
             torch.from_numpy(pixels).permute(2, 0, 1).float() / 255]
    probs = [model.classify([form])[0] for form in forms]
    for p in probs[1:]:
        assert torch.allclose(p, probs[0], atol=1e-6)
    # A 16-bit grey array is read as a 16-bit file is, by prepare's conversion to 8-bit RGB.
    grey = np.array(crop.convert("L"))
    grey[0, 0] = 255
    converted = np.asarray(to_rgb(as_pil(grey.astype(np.uint16) * 257))[0]).astype(int)
    assert converted.shape == (48, 48, 3) and np.abs(converted - grey[:, :, None]).max() <= 1
    with pytest.raises(UserError):
        as_pil(np.zeros((4, 4, 2)))
    with pytest.raises(UserError):
        as_pil("face.png")


def test_embed_returns_the_embedding_and_its_unit_slices(model, crops):
    out = model.embed(crops[:3])
    assert out.embedding.shape == (3, 3 * 8) and out.slices.shape == (3, 3, 8)
    assert torch.allclose(out.slices.norm(dim=2), torch.ones(3, 3), atol=1e-6)
    with torch.no_grad():
        direct = model.net(model.tensors(crops[:3])).embedding
    assert torch.allclose(out.embedding, direct, atol=1e-6)
    assert torch.allclose(out.slices, F.normalize(direct.view(3, 3, 8), dim=2), atol=1e-6)
    batch = torch.stack([torch.from_numpy(np.array(c)).permute(2, 0, 1) for c in crops[:3]])
    assert torch.allclose(model.embed(batch).embedding, out.embedding, atol=1e-6)
    assert model.embed([]).embedding.shape == (0, 24)


def test_multitask_probabilities_average_the_slices_and_the_class_is_their_vote(tmp_path, crops):
    model = load_model(tiny_checkpoint(tmp_path / "run", "mul-dml-multask-same", num_slices=3))
    probs, preds, _ = model.classify(crops)
    with torch.no_grad():
        logits = model.net(model.tensors(crops)).logits
    assert logits.shape == (3, len(crops), 3)
    assert torch.allclose(probs, logits.softmax(-1).mean(0), atol=1e-6)
    assert torch.equal(preds, vote(logits))
    records = model.predict(crops, detect=False)
    assert [r.expression for r in records] == [CLASSES[int(k)] for k in preds]


def test_foreign_and_newer_checkpoints_are_refused_in_one_line(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    run = tiny_checkpoint(tmp_path / "run")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save(state | {"format": CHECKPOINT_FORMAT + 1}, tmp_path / "newer.pt")
    (tmp_path / "empty").mkdir()
    for path, words in [(tmp_path / "other.pt", "not a muldml checkpoint"), (tmp_path / "newer.pt", "newer"),
                        (tmp_path / "empty", "not found")]:
        with pytest.raises(UserError, match=words) as error:
            load_model(path)
        assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="device"):
        load_model(run, device="tpu:7")


def test_class_names_are_canonical_in_predictions_and_export_metadata(tmp_path):
    """A model trained on folders spelt angry/happy/surprised names its classes canonically."""
    from muldml.export import InferenceNet, metadata
    from muldml.training.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(tiny_checkpoint(tmp_path / "run"))
    state["config"]["classes"] = ["angry", "Happy", "surprised"]
    (tmp_path / "old").mkdir()
    save_checkpoint(tmp_path / "old", state)
    model = load_model(tmp_path / "old")
    assert model.classes == CLASSES
    record = model.predict([np.full((40, 40, 3), 128, np.uint8)], detect=False)[0]
    assert list(record.probabilities) == CLASSES and record.expression in CLASSES
    assert metadata(model, InferenceNet(model.net))["classes"] == CLASSES
