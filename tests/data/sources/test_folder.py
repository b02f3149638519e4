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


def test_split_folders_above_class_folders_are_an_official_split(tmp_path):
    """FER2013's image-folder copy (train|test/<class>) and FERPlus's (train|validation|test, with contempt)."""
    for path in ("train/angry/1.jpg", "train/happy/2.jpg", "train/happy/3.jpg", "test/angry/4.jpg", "test/happy/5.jpg"):
        write(tmp_path / "fer" / path)
    data = load_source("folder", tmp_path / "fer")
    assert data.classes == ["anger", "happiness"]
    assert [(item.key, item.label, item.split) for item in data.items] == [
        ("test/angry/4.jpg", "anger", "test"), ("test/happy/5.jpg", "happiness", "test"),
        ("train/angry/1.jpg", "anger", "train"), ("train/happy/2.jpg", "happiness", "train"),
        ("train/happy/3.jpg", "happiness", "train")]
    for path in ("train/contempt/1.png", "train/neutral/2.png", "Validation/surprise/3.png", "test/sadness/4.png"):
        write(tmp_path / "ferplus" / path)
    data = load_source("folder", tmp_path / "ferplus")
    assert data.classes == ["sadness", "surprise", "neutral", "contempt"]
    assert {item.key: item.split for item in data.items}["Validation/surprise/3.png"] == "val"
    write(tmp_path / "ferplus" / "happy" / "5.png")  # a class folder beside the split folders
    with pytest.raises(UserError, match="split folders .* beside other folders .*happy"):
        load_source("folder", tmp_path / "ferplus")


def test_raf_db_image_folder_copy(tmp_path):
    for path in ("train/1/train_00001_aligned.jpg", "train/4/train_00002_aligned.jpg", "test/7/test_0001_aligned.jpg",
                 "test/9/test_0002_aligned.jpg"):
        write(tmp_path / path)
    data = load_source("raf-db", tmp_path)
    assert [(item.key, item.label, item.split) for item in data.items if item.label] == [
        ("test/7/test_0001_aligned.jpg", "neutral", "test"), ("train/1/train_00001_aligned.jpg", "surprise", "train"),
        ("train/4/train_00002_aligned.jpg", "happiness", "train")]
    assert "unknown class folder '9'" in by_key(data)["test/9/test_0002_aligned.jpg"].skip_reason


def test_each_real_file_is_data_once_whatever_links_lead_to_it(tmp_path):
    folder(tmp_path)
    (tmp_path / "Happy" / "again").symlink_to("..")  # a loop back to the root
    (tmp_path / "happiness").symlink_to(tmp_path / "Happy")  # the same class folder by another name
    (tmp_path / "angry" / "copy.png").symlink_to(tmp_path / "angry" / "P01_2.png")
    data = load_source("folder", tmp_path)
    labelled = [item.key for item in data.items if item.label]
    assert labelled == ["Happy/P01_1.png", "Happy/P02_1.png", "angry/P01_2.png", "neutral/x.png"]
    skipped = {item.key: item.skip_reason for item in data.items if not item.label}
    assert skipped == {"angry/copy.png": "same file as angry/P01_2.png (a link)",
                       "happiness/P01_1.png": "same file as Happy/P01_1.png (a link)",
                       "happiness/P02_1.png": "same file as Happy/P02_1.png (a link)"}
