"""FER2013 rows and the FERPlus majority vote."""
import pickle

import numpy as np
import pytest
from source_layouts import assert_loads, fer2013, ferplus

from muldml.data.classes import CANONICAL_CLASSES, EXPRESSIONS
from muldml.data.sources import load_source
from muldml.errors import UserError


def test_fer2013_rows_labels_splits_and_pixels(tmp_path):
    data = load_source("fer2013", fer2013(tmp_path))
    assert data.classes == list(EXPRESSIONS)
    assert [item.key for item in data.items] == [f"fer2013.csv#row={i}" for i in range(12)]
    assert [(item.label, item.split) for item in data.items[:3]] == [
        ("happiness", "train"), ("neutral", "val"), ("anger", "test")]
    image = data.items[0].load()
    assert image.size == (48, 48) and image.mode == "L"
    expected = np.random.default_rng(0).integers(0, 256, 48 * 48).reshape(48, 48)
    assert np.array_equal(np.asarray(image), expected)
    assert_loads(data, (48, 48))


def test_fer2013_skips_bad_rows(tmp_path):
    data = load_source("fer2013", fer2013(tmp_path))
    assert data.items[3].skip_reason == "100 pixel values, expected 2304"
    assert "out of range" in data.items[4].skip_reason
    assert data.items[5].skip_reason == "non-numeric pixel values"
    assert [item.label is None for item in data.items] == [False] * 3 + [True] * 3 + [False] * 6
    assert len(data.warnings) == 3
    with pytest.raises(ValueError):
        data.items[3].load()
    assert pickle.loads(pickle.dumps(data.items))[3].skip_reason == data.items[3].skip_reason  # for worker processes



def test_ferplus_takes_the_majority_vote(tmp_path):
    root = fer2013(tmp_path)
    data = load_source("fer2013", root, ferplus=ferplus(tmp_path / "elsewhere" / "fer2013new.csv"))
    assert data.classes == list(CANONICAL_CLASSES)
    assert [(item.label, item.skip_reason) for item in data.items[:10]] == [
        ("happiness", None), (None, "tied FERPlus vote"), (None, "FERPlus majority unknown"),
        (None, "100 pixel values, expected 2304"), ("contempt", None), (None, "non-numeric pixel values"),
        (None, "FERPlus majority not a face"), (None, "malformed FERPlus vote happiness='x'"),
        (None, "no FERPlus votes"), ("surprise", None)]
    assert data.items[0].split == "train" and data.items[1].split == "val"  # the split comes from fer2013.csv
    assert len(data.warnings) == 3  # two rows of bad pixels and a bad vote; ties and "unknown" are expected
    ferplus(root / "fer2013new.csv")
    assert [item.label for item in load_source("ferplus", root).items] == [item.label for item in data.items]


def test_ferplus_needs_its_file_with_matching_rows(tmp_path):
    root = fer2013(tmp_path)
    with pytest.raises(UserError, match="fer2013new.csv"):
        load_source("ferplus", root)
    ferplus(root / "fer2013new.csv", rows=11)
    with pytest.raises(UserError, match="fewer rows"):
        load_source("ferplus", root)
    (root / "fer2013.csv").unlink()
    with pytest.raises(UserError, match="fer2013.csv not found"):
        load_source("fer2013", root)


def test_ferplus_image_folders(tmp_path):
    """FERPlus as its own script writes it: FER2013Train|Valid|Test/ with PNGs and label.csv."""
    from source_layouts import by_key, votes, write

    rows = {"FER2013Train": [("fer0000000.png", votes(happiness=8, neutral=2)), ("fer0000001.png", votes(contempt=6)),
                             ("fer0000002.png", votes(neutral=5, sadness=5))],
            "FER2013Valid": [("fer0000003.png", votes(surprise=9, NF=1)), ("fer0000099.png", votes(anger=10))],
            "FER2013Test": [("fer0000004.png", votes(unknown=10))]}
    for folder, entries in rows.items():
        for image, _ in entries:
            if image != "fer0000099.png":  # listed but missing
                write(tmp_path / folder / image)
        (tmp_path / folder / "label.csv").write_text("".join(f'{image},"(0, 0, 48, 48)",{v}\n' for image, v in entries))
    write(tmp_path / "FER2013Test" / "fer0000005.png")  # not in label.csv
    data = load_source("ferplus", tmp_path)
    assert data.classes == list(CANONICAL_CLASSES)
    assert [(item.key, item.label, item.split, item.skip_reason) for item in data.items] == [
        ("FER2013Test/fer0000004.png", None, "test", "FERPlus majority unknown"),
        ("FER2013Test/fer0000005.png", None, "test", "not in label.csv"),
        ("FER2013Train/fer0000000.png", "happiness", "train", None),
        ("FER2013Train/fer0000001.png", "contempt", "train", None),
        ("FER2013Train/fer0000002.png", None, "train", "tied FERPlus vote"),
        ("FER2013Valid/fer0000003.png", "surprise", "val", None)]
    assert data.warnings == ["FER2013Valid/label.csv: fer0000099.png not found"]
    (tmp_path / "FER2013Test" / "label.csv").write_text(f"fer0000004.png,(0, 0, 48, 48),{votes(fear=3)}\n")
    assert by_key(load_source("ferplus", tmp_path))["FER2013Test/fer0000004.png"].label == "fear"  # box unquoted
