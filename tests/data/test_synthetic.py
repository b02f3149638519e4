"""The built-in demo faces: deterministic, identity-dominated, expressive, any size, written safely."""
import csv
import json
import re
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from muldml.data.synthetic import (EXPRESSIONS, Identity, generate_faces, render_face, sample_identity,
                                   write_demo_dataset)

NEUTRAL = EXPRESSIONS.index("neutral")


def pixels(faces) -> np.ndarray:
    """(N, H, W, 3) float32 from generate_faces' (image, label, subject) triples."""
    return np.stack([np.asarray(image, dtype=np.float32) for image, _, _ in faces])


def canonical(subject: int, expression: int, size: int = 32) -> np.ndarray:
    """A face in the canonical pose, full intensity, no light gradient or noise, flattened."""
    identity = sample_identity(np.random.default_rng([11, subject]))
    image = render_face(identity, expression, np.random.default_rng(0), size, jitter=False)
    return np.asarray(image, dtype=np.float32).ravel()


def test_expressions_are_the_seven_basic_ones_in_canonical_order():
    assert EXPRESSIONS == ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def test_same_seed_same_bytes_other_seed_other_faces():
    first = list(generate_faces(3, 2, 48, seed=5))
    again = list(generate_faces(3, 2, 48, seed=5))
    assert [image.tobytes() for image, _, _ in first] == [image.tobytes() for image, _, _ in again]
    assert [(label, subject) for _, label, subject in first] == [(label, subject) for _, label, subject in again]
    assert not np.array_equal(pixels(first), pixels(generate_faces(3, 2, 48, seed=6)))
    # An image depends on (seed, subject, expression, k) only, not on how many are asked for.
    more = list(generate_faces(4, 3, 48, seed=5))
    assert more[1][0].tobytes() == first[1][0].tobytes()  # S000, anger, k=1
    assert more[3][0].tobytes() == first[2][0].tobytes()  # S000, disgust, k=0
    assert [s for _, _, s in more[::21]]  # 7 expressions x 3 images each == ["S000", "S001", "S002", "S003"]


def test_identity_dominates_pixel_distance():
    """The paper's Fig. 1: the same person with another expression is nearer in pixels than
    another person with the same expression."""
    n = 12
    x = pixels(generate_faces(n, 1, 64, seed=1)).reshape(n, 7, -1)
    same_person = np.mean([np.linalg.norm(x[s, a] - x[s, b]) for s in range(n) for a, b in combinations(range(7), 2)])
    same_expression = np.mean([np.linalg.norm(x[s, e] - x[t, e]) for e in range(7) for s, t in combinations(range(n), 2)])
    assert same_person < 0.8 * same_expression, (
        f"same person, other expression: {same_person:.0f}; other person, same expression: {same_expression:.0f}")

    # So a pixel nearest neighbour finds the person, hardly ever the expression.
    flat = x.reshape(n * 7, -1).astype(np.float64)
    squared = (flat**2).sum(1)
    dist = squared[:, None] + squared[None] - 2 * flat @ flat.T
    np.fill_diagonal(dist, np.inf)
    nearest = dist.argmin(1)
    person, expression = np.arange(n * 7) // 7, np.arange(n * 7) % 7
    assert np.mean(person[nearest] == person) > 0.9
    assert np.mean(expression[nearest] == expression) < 0.3


def test_expressions_differ_and_are_recognisable_on_unseen_people():
    """With pose, light and noise held out, the difference to the person's own neutral face
    carries the expression: class means of those differences (pooled 2x2, as faces differ
    in shape) over 25 people label the expressions of 15 other people far above chance (1/6)."""
    others = [e for e in range(7) if e != NEUTRAL]
    diffs = np.stack([[canonical(s, e) - canonical(s, NEUTRAL) for e in others] for s in range(40)])
    diffs = diffs.reshape(40, 6, 16, 2, 16, 2, 3).mean((3, 5)).reshape(40, 6, -1)
    means = diffs[:25].mean(0)
    guesses = np.linalg.norm(diffs[25:, :, None] - means[None, None], axis=-1).argmin(-1)
    accuracy = np.mean(guesses == np.arange(6))
    assert accuracy > 0.75, accuracy

    # Every pair of expressions differs visibly on every person, and only the face changes.
    for s in range(3):
        faces = [canonical(s, e).reshape(32, 32, 3) for e in range(7)]
        for a, b in combinations(range(7), 2):
            change = np.abs(faces[a] - faces[b])
            assert change.mean() > 0.4 and change.max() > 25, (s, EXPRESSIONS[a], EXPRESSIONS[b])
            assert np.array_equal(faces[a][:4, :4], faces[b][:4, :4])  # background corner


@pytest.mark.parametrize("size", [17, 48, 96])
def test_any_size(size):
    rng = np.random.default_rng(3)
    identity = sample_identity(rng)
    assert isinstance(identity, Identity)
    for expression in (*EXPRESSIONS, 0, 6):
        for jitter in (True, False):
            image = render_face(identity, expression, rng, size, jitter=jitter)
            array = np.asarray(image)
            assert image.mode == "RGB" and array.shape == (size, size, 3) and array.dtype == np.uint8
    image, _, _ = next(generate_faces(1, 1, size))
    assert image.size == (size, size)


def test_expression_by_name_or_index():
    identity = sample_identity(np.random.default_rng(0))
    by_name = render_face(identity, "happiness", np.random.default_rng(1))
    by_index = render_face(identity, EXPRESSIONS.index("happiness"), np.random.default_rng(1))
    assert by_name.tobytes() == by_index.tobytes()
    for bad in ("joy", 7, -1):
        with pytest.raises(ValueError):
            render_face(identity, bad, np.random.default_rng(1))


def test_written_folder_manifest_subjects_and_idempotence(tmp_path):
    out = tmp_path / "demo"
    assert write_demo_dataset(out, num_subjects=3, images_per_expression=2, size=32, seed=4, progress=False) == out

    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["path", "label", "subject"]
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert sorted(r["path"] for r in rows) == sorted(on_disk) and len(on_disk) == 3 * 7 * 2
    assert {p.name for p in out.iterdir() if p.is_dir()} == set(EXPRESSIONS)
    for row in rows:
        folder, name = row["path"].split("/")
        assert folder == row["label"] and row["label"] in EXPRESSIONS
        assert re.match(r"^(S\d+)_", name).group(1) == row["subject"]
        assert re.fullmatch(rf"{row['subject']}_{row['label']}_[01]\.png", name)
    assert {r["subject"] for r in rows} == {"S000", "S001", "S002"}
    with Image.open(out / rows[0]["path"]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    # The files hold exactly what generate_faces yields.
    first = next(generate_faces(1, 1, 32, seed=4))[0]
    with Image.open(out / "anger" / "S000_anger_0.png") as image:
        assert image.tobytes() == first.tobytes()
    assert json.loads((out / "demo.json").read_text())["num_subjects"] == 3

    def snapshot():
        return {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    before = snapshot()
    write_demo_dataset(out, num_subjects=3, images_per_expression=2, size=32, seed=4, progress=False)
    assert snapshot() == before
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]

    # Other parameters rewrite the folder; images of the larger run do not linger.
    write_demo_dataset(out, num_subjects=2, images_per_expression=1, size=32, seed=4, progress=False)
    with open(out / "manifest.csv", newline="") as f:
        paths = sorted(r["path"] for r in csv.DictReader(f))
    assert paths == sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) and len(paths) == 14

    # A folder with an image missing is not complete, so it is written again.
    (out / "fear" / "S001_fear_0.png").unlink()
    write_demo_dataset(out, num_subjects=2, images_per_expression=1, size=32, seed=4, progress=False)
    assert (out / "fear" / "S001_fear_0.png").is_file()
