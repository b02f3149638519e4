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
