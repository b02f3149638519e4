"""SFEW 2.0 class folders."""
import pytest
from source_layouts import assert_loads, sfew

from muldml.data.classes import EXPRESSIONS
from muldml.data.sources import load_source
from muldml.errors import UserError


def test_sfew_reads_train_and_val_class_folders(tmp_path):
    sfew(tmp_path)
    data = load_source("sfew", tmp_path)
    assert data.classes == list(EXPRESSIONS)
    assert [(item.key, item.label, item.split, item.subject) for item in data.items] == [
        ("Train/Angry/a1.png", "anger", "train", None), ("Train/Angry/a2.png", "anger", "train", None),
        ("Train/Happy/h1.png", "happiness", "train", None), ("Val/Bored/b1.png", None, "val", None),
        ("Val/Contemptuous/c1.png", None, "val", None), ("Val/Sad/s1.png", "sadness", "val", None)]
    assert len(data.warnings) == 2 and "Bored" in data.warnings[0]  # SFEW has no contempt class
    assert_loads(data)
    with pytest.raises(UserError, match="Train"):
        load_source("sfew", tmp_path / "Train" / "Angry")
