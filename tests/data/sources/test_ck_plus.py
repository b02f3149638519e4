"""CK+ as distributed and as class folders."""
import pytest
from source_layouts import assert_loads, ck_plus, ck_plus_folders, labelled, write

from muldml.data.sources import load_source
from muldml.errors import UserError


def test_ck_plus_takes_the_last_three_frames_of_labelled_sequences(tmp_path):
    data = load_source("ck+", ck_plus(tmp_path))
    assert data.name == "ck+"
    assert data.classes == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "contempt"]
    kept = labelled(data)
    assert [(item.key.rsplit("/", 1)[1], item.label, item.subject) for item in kept] == [
        ("S005_001_00000003.png", "disgust", "S005"),
        ("S005_001_00000004.png", "disgust", "S005"),
        ("S005_001_00000005.png", "disgust", "S005"),
        ("S010_001_00000002.png", "surprise", "S010"),
        ("S010_001_00000003.png", "surprise", "S010"),
        ("S010_001_00000004.png", "surprise", "S010"),
    ]
    assert kept[0].key == "cohn-kanade-images/S005/001/S005_001_00000003.png"
    assert all(item.split is None for item in data.items)
    assert_loads(data)


def test_ck_plus_lists_frames_of_bad_emotion_files_as_skipped(tmp_path):
    data = load_source("ck+", ck_plus(tmp_path))
    skipped = [item for item in data.items if item.label is None]
    assert len(data.items) == 15 and len(skipped) == 9
    reasons = {item.key.split("/")[1] + "/" + item.key.split("/")[2]: item.skip_reason for item in skipped}
    assert "malformed" in reasons["S010/002"]
    assert "neutral" in reasons["S011/001"]
    assert "out of range" in reasons["S011/002"]
    assert len(data.warnings) == 3 and all("_emotion.txt" in line for line in data.warnings)
    assert not any("S005/002" in item.key for item in data.items)  # unlabelled: not part of the protocol


def test_ck_plus_can_add_first_frames_as_neutral(tmp_path):
    data = load_source("ck+", ck_plus(tmp_path), include_neutral=True)
    assert data.classes == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral", "contempt"]
    neutral = [item.key.rsplit("/", 1)[1] for item in data.items if item.label == "neutral"]
    assert neutral == ["S005_001_00000001.png", "S010_001_00000001.png"]


def test_ck_plus_needs_its_emotion_folder(tmp_path):
    write(tmp_path / "cohn-kanade-images" / "S005" / "001" / "S005_001_00000001.png")
    with pytest.raises(UserError, match="Emotion"):
        load_source("ck+", tmp_path)


def test_ck_plus_folders_map_spellings_and_skip_unknown_folders(tmp_path):
    ck_plus_folders(tmp_path)
    data = load_source("ck+-folders", tmp_path)
    assert data.classes == ["anger", "happiness", "sadness"]
    assert [(item.label, item.subject) for item in data.items] == [
        ("anger", "S005"), ("anger", "S010"), ("happiness", "S011"), ("sadness", "S022"), (None, "S026")]
    assert data.items[-1].skip_reason == "unknown class folder 'smirk'"
    assert len(data.warnings) == 1 and "smirk" in data.warnings[0]
    assert_loads(data)
