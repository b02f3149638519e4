"""AffectNet: label tables, face boxes, 7 or 8 classes."""
import pytest
from source_layouts import affectnet, by_key, size_of

from muldml.data.classes import CANONICAL_CLASSES, EXPRESSIONS
from muldml.data.sources import load_source
from muldml.errors import UserError


def test_affectnet_seven_classes(tmp_path):
    data = load_source("affectnet", affectnet(tmp_path))
    assert data.classes == list(EXPRESSIONS)
    items = {item.key.removeprefix("Manually_Annotated_Images/"): item for item in data.items}
    assert {key: (item.label, item.split) for key, item in items.items() if item.label} == {
        "1/a.jpg": ("happiness", "train"), "1/b.jpg": ("anger", "train"), "2/h.png": ("neutral", "val")}
    assert "contempt" in items["1/c.jpg"].skip_reason
    assert [k for k in ("1/d.jpg", "1/e.jpg", "1/f.jpg") if "AffectNet code" in items[k].skip_reason] == [
        "1/d.jpg", "1/e.jpg", "1/f.jpg"]
    assert "out of range" in items["1/g.jpg"].skip_reason and items["1/missing.jpg"].skip_reason == "missing file"
    assert len(data.items) == 9 and len(data.warnings) == 3  # out of range, missing file, no path
    assert size_of(items["1/a.jpg"]) == (20, 30)
    assert size_of(items["1/b.jpg"]) == (60, 40) and size_of(items["2/h.png"]) == (60, 40)


def test_affectnet_eight_classes_keep_contempt(tmp_path):
    data = load_source("affectnet", affectnet(tmp_path), classes=8)
    assert data.classes == list(CANONICAL_CLASSES)
    contempt = by_key(data)["Manually_Annotated_Images/1/c.jpg"]
    assert contempt.label == "contempt" and size_of(contempt) == (10, 10)
    assert sum(item.label is None for item in data.items) == 5
    with pytest.raises(UserError, match="7 or 8"):
        load_source("affectnet", tmp_path, classes=10)


def test_affectnet_needs_a_label_file(tmp_path):
    (tmp_path / "Manually_Annotated_Images").mkdir()
    with pytest.raises(UserError, match="training.csv"):
        load_source("affectnet", tmp_path)
