"""The generic <class>/<image> folder."""
import pytest
from source_layouts import assert_loads, by_key, face, folder, size_of, write

from muldml.data.sources import load_source
from muldml.errors import UserError


def test_folder_maps_spellings_and_extracts_subjects(tmp_path):
    folder(tmp_path)
    data = load_source("folder", tmp_path, subject_regex=r"^(P\d+)_")
    assert data.classes == ["anger", "happiness", "neutral"]
    assert [(item.key, item.label, item.subject) for item in data.items] == [
        ("Happy/P01_1.png", "happiness", "P01"), ("Happy/P02_1.png", "happiness", "P02"),
        ("angry/P01_2.png", "anger", "P01"), ("neutral/x.png", "neutral", None)]
    assert_loads(data)


def test_folder_unknown_classes(tmp_path):
    for path in ("happy/1.png", "Pain/2.png", "bored/3.png"):
        write(tmp_path / path)
    with pytest.raises(UserError, match="Pain, bored"):
        load_source("folder", tmp_path)
    data = load_source("folder", tmp_path, any_classes=True)
    assert data.classes == ["happiness", "bored", "pain"]
    assert [item.label for item in data.items] == ["pain", "bored", "happiness"]
    with pytest.raises(UserError, match="group"):
        load_source("folder", tmp_path, subject_regex=r"^S\d+")


def test_folder_reads_every_format_pillow_decodes_and_counts_other_files(tmp_path):
    folder(tmp_path)
    face(24).save(tmp_path / "Happy" / "P03_1.jfif", format="JPEG")  # a JPEG by another name
    face(24).save(tmp_path / "Happy" / "P04_1.gif", format="GIF")
    (tmp_path / "Happy" / "P05_1.svg").write_text("<svg/>")  # vector: Pillow has no decoder
    (tmp_path / "Happy" / "notes").write_text("no extension")
    data = load_source("folder", tmp_path, subject_regex=r"^(P\d+)_")
    items = by_key(data)
    assert items["Happy/P03_1.jfif"].label == "happiness" and items["Happy/P04_1.gif"].label == "happiness"
    assert size_of(items["Happy/P03_1.jfif"]) == (24, 24)
    assert items["Happy/P05_1.svg"].label is None and ".svg" in items["Happy/P05_1.svg"].skip_reason
    assert items["Happy/notes"].label is None and "no extension" in items["Happy/notes"].skip_reason
    with pytest.raises(ValueError):
        items["Happy/P05_1.svg"].load()
    assert len(data.items) == 8
