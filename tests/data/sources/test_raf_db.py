"""RAF-DB basic: label list, splits, aligned and original images."""
import pytest
from source_layouts import assert_loads, by_key, labelled, raf_db, text_file, write

from muldml.data.classes import EXPRESSIONS
from muldml.data.sources import load_source
from muldml.errors import UserError


def test_raf_db_labels_splits_and_bad_lines(tmp_path):
    data = load_source("raf-db", raf_db(tmp_path))
    assert data.classes == list(EXPRESSIONS)
    items = by_key(data)
    assert [(key, item.label, item.split) for key, item in items.items() if item.label] == [
        ("Image/aligned/test_0001_aligned.jpg", "neutral", "test"),
        ("Image/aligned/train_00001_aligned.jpg", "sadness", "train"),
        ("Image/aligned/train_00002_aligned.jpg", "happiness", "train")]
    assert "out of range" in items["Image/aligned/train_00003_aligned.jpg"].skip_reason
    assert "malformed" in items["Image/aligned/train_00004_aligned.jpg"].skip_reason
    assert items["Image/aligned/test_0002_aligned.jpg"].skip_reason == "missing file"
    assert len(data.items) == 6 and len(data.warnings) == 4
    assert any("line 6" in line and "this line is wrong" in line for line in data.warnings)
    assert_loads(data)


def test_raf_db_original_images(tmp_path):
    data = load_source("raf-db", raf_db(tmp_path), aligned=False)
    assert labelled(data)[0].key == "Image/original/test_0001.jpg"
    assert_loads(data, (40, 30))
    (tmp_path / "EmoLabel" / "list_patition_label.txt").unlink()
    with pytest.raises(UserError, match="list_patition_label.txt"):
        load_source("raf-db", tmp_path)


def test_raf_db_keeps_the_first_of_repeated_lines(tmp_path):
    text_file(tmp_path / "EmoLabel" / "list_patition_label.txt", "train_00001.jpg 5\ntrain_00001.jpg 1\n")
    write(tmp_path / "Image" / "aligned" / "train_00001_aligned.jpg")
    data = load_source("raf-db", tmp_path)
    assert [item.label for item in data.items] == ["sadness"]
    assert data.warnings == ["Image/aligned/train_00001_aligned.jpg: listed more than once; the first entry is kept"]


def test_raf_db_names_a_missing_image_folder(tmp_path):
    text_file(tmp_path / "EmoLabel" / "list_patition_label.txt", "train_00001.jpg 5\n")
    with pytest.raises(UserError, match="Image/aligned"):
        load_source("raf-db", tmp_path)
