"""The dataset readers, on tiny copies of each distributed layout made here (no real dataset file)."""
from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from muldml.data.classes import CANONICAL_CLASSES, EXPRESSIONS
from muldml.data.sources import LOADERS, RawItem, SourceDataset, canonical_label, load_source
from muldml.data.synthetic import render_face, sample_identity
from muldml.errors import UserError

FACE = 24  # side of the square test images


@lru_cache
def _face(size: int) -> Image.Image:
    rng = np.random.default_rng(size)
    return render_face(sample_identity(rng), "happiness", rng, size)


def _write(path: Path, size: tuple[int, int] = (FACE, FACE)) -> Path:
    """An image file: a demo face when square, noise otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    if width == height:
        image = _face(width)
    else:
        image = Image.fromarray(np.random.default_rng(width * height).integers(0, 256, (height, width, 3), np.uint8))
    image.save(path)
    return path


def _text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _by_key(data: SourceDataset) -> dict[str, RawItem]:
    return {item.key: item for item in data.items}


def _labelled(data: SourceDataset) -> list[RawItem]:
    return [item for item in data.items if item.label is not None]


def _size(item: RawItem) -> tuple[int, int]:
    with item.load() as image:
        assert isinstance(image, Image.Image)
        image.load()
        return image.size


def _assert_loads(data: SourceDataset, size: tuple[int, int] = (FACE, FACE)) -> None:
    for item in _labelled(data):
        assert _size(item) == size, item.key


# ---------------------------------------------------------------------------------------------------------------------


def test_canonical_label_maps_common_spellings():
    assert canonical_label("Happy") == "happiness" and canonical_label(" sad ") == "sadness"
    assert canonical_label("angry") == "anger" and canonical_label("Surprised") == "surprise"
    assert canonical_label("disgusted") == "disgust" and canonical_label("fearful") == "fear"
    assert all(canonical_label(name) == name for name in CANONICAL_CLASSES)
    assert canonical_label("pain") is None


def test_an_item_has_a_label_or_a_reason():
    with pytest.raises(ValueError):
        RawItem("x.png", lambda: None, None)
    with pytest.raises(ValueError):
        RawItem("x.png", lambda: None, "anger", skip_reason="both")


# CK+ -----------------------------------------------------------------------------------------------------------------


def _ck_plus(root: Path) -> Path:
    """Six sequences: two labelled, one unlabelled, three with bad emotion files."""
    sequences = {  # (subject, sequence): (frames, emotion file text or None)
        ("S005", "001"): (5, "   3.0000000e+00\n"),
        ("S005", "002"): (4, None),
        ("S010", "001"): (4, "   7.0000000e+00"),
        ("S010", "002"): (3, "three"),
        ("S011", "001"): (3, "0.0000000e+00"),
        ("S011", "002"): (3, "9"),
    }
    for (subject, sequence), (frames, emotion) in sequences.items():
        for k in range(1, frames + 1):
            _write(root / "cohn-kanade-images" / subject / sequence / f"{subject}_{sequence}_{k:08d}.png")
        folder = root / "Emotion" / subject / sequence
        folder.mkdir(parents=True)
        if emotion is not None:
            _text(folder / f"{subject}_{sequence}_{frames:08d}_emotion.txt", emotion)
    (root / "cohn-kanade-images" / "S005" / "001" / ".DS_Store").write_text("")
    return root


def test_ck_plus_takes_the_last_three_frames_of_labelled_sequences(tmp_path):
    data = load_source("ck+", _ck_plus(tmp_path))
    assert data.name == "ck+"
    assert data.classes == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "contempt"]
    labelled = _labelled(data)
    assert [(item.key.rsplit("/", 1)[1], item.label, item.subject) for item in labelled] == [
        ("S005_001_00000003.png", "disgust", "S005"),
        ("S005_001_00000004.png", "disgust", "S005"),
        ("S005_001_00000005.png", "disgust", "S005"),
        ("S010_001_00000002.png", "surprise", "S010"),
        ("S010_001_00000003.png", "surprise", "S010"),
        ("S010_001_00000004.png", "surprise", "S010"),
    ]
    assert labelled[0].key == "cohn-kanade-images/S005/001/S005_001_00000003.png"
    assert all(item.split is None for item in data.items)
    _assert_loads(data)


def test_ck_plus_lists_frames_of_bad_emotion_files_as_skipped(tmp_path):
    data = load_source("ck+", _ck_plus(tmp_path))
    skipped = [item for item in data.items if item.label is None]
    assert len(data.items) == 15 and len(skipped) == 9
    reasons = {item.key.split("/")[1] + "/" + item.key.split("/")[2]: item.skip_reason for item in skipped}
    assert "malformed" in reasons["S010/002"]
    assert "neutral" in reasons["S011/001"]
    assert "out of range" in reasons["S011/002"]
    assert len(data.warnings) == 3 and all("_emotion.txt" in line for line in data.warnings)
    assert not any("S005/002" in item.key for item in data.items)  # unlabelled: not part of the protocol


def test_ck_plus_can_add_first_frames_as_neutral(tmp_path):
    data = load_source("ck+", _ck_plus(tmp_path), include_neutral=True)
    assert data.classes == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral", "contempt"]
    neutral = [item.key.rsplit("/", 1)[1] for item in data.items if item.label == "neutral"]
    assert neutral == ["S005_001_00000001.png", "S010_001_00000001.png"]


def test_ck_plus_needs_its_emotion_folder(tmp_path):
    _write(tmp_path / "cohn-kanade-images" / "S005" / "001" / "S005_001_00000001.png")
    with pytest.raises(UserError, match="Emotion"):
        load_source("ck+", tmp_path)


def test_ck_plus_folders_map_spellings_and_skip_unknown_folders(tmp_path):
    for path in ("anger/S005_001_00000010.png", "anger/S010_002_00000014.png", "happy/S011_004_00000019.png",
                 "sad/S022_001_00000030.png", "smirk/S026_003_00000015.png"):
        _write(tmp_path / path)
    data = load_source("ck+-folders", tmp_path)
    assert data.classes == ["anger", "happiness", "sadness"]
    assert [(item.label, item.subject) for item in data.items] == [
        ("anger", "S005"), ("anger", "S010"), ("happiness", "S011"), ("sadness", "S022"), (None, "S026")]
    assert data.items[-1].skip_reason == "unknown class folder 'smirk'"
    assert len(data.warnings) == 1 and "smirk" in data.warnings[0]
    _assert_loads(data)


# MMI -----------------------------------------------------------------------------------------------------------------


def test_mmi_takes_the_peak_or_middle_frames(tmp_path):
    for subject, sequence, frames in (("1", "s1", 10), ("1", "s2", 5), ("2", "s3", 4), ("2", "s4", 6)):
        for k in range(1, frames + 1):
            _write(tmp_path / subject / sequence / f"frame{k}.png")
    _text(tmp_path / "labels.csv", "subject,sequence,emotion,peak\n"
          "1,s1,happy,\n"  # no peak: the middle three of ten (frame4-6, in natural order)
          "1,s2,2,0\n"  # code 2 = disgust, peak at the first frame: the window stays inside
          "2,s3,neutral,\n"  # not one of MMI's classes
          "2,s4,sadness,99\n"  # peak past the end
          "2,s5,anger,\n")  # no frames
    data = load_source("mmi", tmp_path)
    assert data.classes == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    assert [(item.key, item.label, item.subject) for item in _labelled(data)] == [
        ("1/s1/frame4.png", "happiness", "1"), ("1/s1/frame5.png", "happiness", "1"),
        ("1/s1/frame6.png", "happiness", "1"), ("1/s2/frame1.png", "disgust", "1"),
        ("1/s2/frame2.png", "disgust", "1"), ("1/s2/frame3.png", "disgust", "1")]
    skipped = {item.key: item.skip_reason for item in data.items if item.label is None}
    assert sorted(skipped) == ["2/s3/frame1.png", "2/s3/frame2.png", "2/s3/frame3.png",
                               "2/s4/frame2.png", "2/s4/frame3.png", "2/s4/frame4.png"]
    assert "MMI" in skipped["2/s3/frame1.png"] and "out of range" in skipped["2/s4/frame3.png"]
    assert len(data.warnings) == 3 and "no frames in 2/s5" in data.warnings[-1]
    _assert_loads(data)


def test_mmi_needs_its_label_file_and_columns(tmp_path):
    _write(tmp_path / "1" / "s1" / "frame1.png")
    with pytest.raises(UserError, match="labels.csv"):
        load_source("mmi", tmp_path)
    _text(tmp_path / "labels.csv", "subject,sequence\n1,s1\n")
    with pytest.raises(UserError, match="missing column.*emotion"):
        load_source("mmi", tmp_path)


# SFEW, RAF-DB --------------------------------------------------------------------------------------------------------


def test_sfew_reads_train_and_val_class_folders(tmp_path):
    for path in ("Train/Angry/a1.png", "Train/Angry/a2.png", "Train/Happy/h1.png", "Val/Sad/s1.png",
                 "Val/Contemptuous/c1.png", "Val/Bored/b1.png"):
        _write(tmp_path / path)
    data = load_source("sfew", tmp_path)
    assert data.classes == list(EXPRESSIONS)
    assert [(item.key, item.label, item.split, item.subject) for item in data.items] == [
        ("Train/Angry/a1.png", "anger", "train", None), ("Train/Angry/a2.png", "anger", "train", None),
        ("Train/Happy/h1.png", "happiness", "train", None), ("Val/Bored/b1.png", None, "val", None),
        ("Val/Contemptuous/c1.png", None, "val", None), ("Val/Sad/s1.png", "sadness", "val", None)]
    assert len(data.warnings) == 2 and "Bored" in data.warnings[0]  # SFEW has no contempt class
    _assert_loads(data)
    with pytest.raises(UserError, match="Train"):
        load_source("sfew", tmp_path / "Train" / "Angry")


def _raf_db(root: Path) -> Path:
    _text(root / "EmoLabel" / "list_patition_label.txt",
          "train_00001.jpg 5\ntrain_00002.jpg 4\ntest_0001.jpg 7\n\n"
          "train_00003.jpg 9\nthis line is wrong\ntrain_00004.jpg x\ntest_0002.jpg 1\n")
    for name in ("train_00001", "train_00002", "test_0001", "train_00003", "train_00004"):
        _write(root / "Image" / "aligned" / f"{name}_aligned.jpg")
        _write(root / "Image" / "original" / f"{name}.jpg", (40, 30))
    return root


def test_raf_db_labels_splits_and_bad_lines(tmp_path):
    data = load_source("raf-db", _raf_db(tmp_path))
    assert data.classes == list(EXPRESSIONS)
    items = _by_key(data)
    assert [(key, item.label, item.split) for key, item in items.items() if item.label] == [
        ("Image/aligned/test_0001_aligned.jpg", "neutral", "test"),
        ("Image/aligned/train_00001_aligned.jpg", "sadness", "train"),
        ("Image/aligned/train_00002_aligned.jpg", "happiness", "train")]
    assert "out of range" in items["Image/aligned/train_00003_aligned.jpg"].skip_reason
    assert "malformed" in items["Image/aligned/train_00004_aligned.jpg"].skip_reason
    assert items["Image/aligned/test_0002_aligned.jpg"].skip_reason == "missing file"
    assert len(data.items) == 6 and len(data.warnings) == 4
    assert any("line 6" in line and "this line is wrong" in line for line in data.warnings)
    _assert_loads(data)


def test_raf_db_original_images(tmp_path):
    data = load_source("raf-db", _raf_db(tmp_path), aligned=False)
    assert _labelled(data)[0].key == "Image/original/test_0001.jpg"
    _assert_loads(data, (40, 30))
    (tmp_path / "EmoLabel" / "list_patition_label.txt").unlink()
    with pytest.raises(UserError, match="list_patition_label.txt"):
        load_source("raf-db", tmp_path)


def test_raf_db_keeps_the_first_of_repeated_lines(tmp_path):
    _text(tmp_path / "EmoLabel" / "list_patition_label.txt", "train_00001.jpg 5\ntrain_00001.jpg 1\n")
    _write(tmp_path / "Image" / "aligned" / "train_00001_aligned.jpg")
    data = load_source("raf-db", tmp_path)
    assert [item.label for item in data.items] == ["sadness"]
    assert data.warnings == ["Image/aligned/train_00001_aligned.jpg: listed more than once; the first entry is kept"]


def test_raf_db_names_a_missing_image_folder(tmp_path):
    _text(tmp_path / "EmoLabel" / "list_patition_label.txt", "train_00001.jpg 5\n")
    with pytest.raises(UserError, match="Image/aligned"):
        load_source("raf-db", tmp_path)


# FER2013, FERPlus ----------------------------------------------------------------------------------------------------


def _pixels(seed: int, count: int = 48 * 48) -> str:
    return " ".join(map(str, np.random.default_rng(seed).integers(0, 256, count)))


def _fer2013(root: Path) -> Path:
    rows = [(3, _pixels(0), "Training"), (6, _pixels(1), "PublicTest"), (0, _pixels(2), "PrivateTest"),
            (2, _pixels(3, 100), "Training"), (9, _pixels(4), "Training"), (1, "1 2 x " + _pixels(5, 2301), "Training")]
    rows += [(k % 7, _pixels(k), "Training") for k in range(6, 12)]
    _text(root / "fer2013.csv", "emotion,pixels,Usage\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows))
    return root


def test_fer2013_rows_labels_splits_and_pixels(tmp_path):
    data = load_source("fer2013", _fer2013(tmp_path))
    assert data.classes == list(EXPRESSIONS)
    assert [item.key for item in data.items] == [f"fer2013.csv#row={i}" for i in range(12)]
    assert [(item.label, item.split) for item in data.items[:3]] == [
        ("happiness", "train"), ("neutral", "val"), ("anger", "test")]
    image = data.items[0].load()
    assert image.size == (48, 48) and image.mode == "L"
    expected = np.random.default_rng(0).integers(0, 256, 48 * 48).reshape(48, 48)
    assert np.array_equal(np.asarray(image), expected)
    _assert_loads(data, (48, 48))


def test_fer2013_skips_bad_rows(tmp_path):
    data = load_source("fer2013", _fer2013(tmp_path))
    assert data.items[3].skip_reason == "100 pixel values, expected 2304"
    assert "out of range" in data.items[4].skip_reason
    assert data.items[5].skip_reason == "non-numeric pixel values"
    assert [item.label is None for item in data.items] == [False] * 3 + [True] * 3 + [False] * 6
    assert len(data.warnings) == 3
    with pytest.raises(ValueError):
        data.items[3].load()
    assert pickle.loads(pickle.dumps(data.items))[3].skip_reason == data.items[3].skip_reason  # for worker processes


def _votes(**counts: int) -> str:
    columns = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
    return ",".join(str(counts.get(column, 0)) for column in columns)


def _ferplus(path: Path, rows: int = 12) -> Path:
    votes = [_votes(happiness=8, neutral=2), _votes(neutral=5, sadness=5), _votes(unknown=6, fear=4),
             _votes(neutral=10), _votes(contempt=7, anger=3), _votes(neutral=10), _votes(NF=10),
             "1,x,0,0,0,0,0,0,0,0", _votes()]
    votes += [_votes(surprise=10)] * (rows - len(votes))
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    return _text(path, header + "".join(f"Training,fer{i:07d}.png,{v}\n" for i, v in enumerate(votes)))


def test_ferplus_takes_the_majority_vote(tmp_path):
    root = _fer2013(tmp_path)
    data = load_source("fer2013", root, ferplus=_ferplus(tmp_path / "elsewhere" / "fer2013new.csv"))
    assert data.classes == list(CANONICAL_CLASSES)
    assert [(item.label, item.skip_reason) for item in data.items[:10]] == [
        ("happiness", None), (None, "tied FERPlus vote"), (None, "FERPlus majority unknown"),
        (None, "100 pixel values, expected 2304"), ("contempt", None), (None, "non-numeric pixel values"),
        (None, "FERPlus majority not a face"), (None, "malformed FERPlus vote happiness='x'"),
        (None, "no FERPlus votes"), ("surprise", None)]
    assert data.items[0].split == "train" and data.items[1].split == "val"  # the split comes from fer2013.csv
    assert len(data.warnings) == 3  # two rows of bad pixels and a bad vote; ties and "unknown" are expected
    _ferplus(root / "fer2013new.csv")
    assert [item.label for item in load_source("ferplus", root).items] == [item.label for item in data.items]


def test_ferplus_needs_its_file_with_matching_rows(tmp_path):
    root = _fer2013(tmp_path)
    with pytest.raises(UserError, match="fer2013new.csv"):
        load_source("ferplus", root)
    _ferplus(root / "fer2013new.csv", rows=11)
    with pytest.raises(UserError, match="fewer rows"):
        load_source("ferplus", root)
    (root / "fer2013.csv").unlink()
    with pytest.raises(UserError, match="fer2013.csv not found"):
        load_source("fer2013", root)


# AffectNet -----------------------------------------------------------------------------------------------------------


def _affectnet(root: Path) -> Path:
    images = root / "Manually_Annotated_Images"
    for name in ("1/a.jpg", "1/b.jpg", "1/c.jpg", "1/d.jpg", "1/e.jpg", "1/f.jpg", "1/g.jpg", "2/h.png"):
        _write(images / name, (60, 40))
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    _text(root / "training.csv", header +
          '1/a.jpg,10,5,20,30,"1;2",1,0.5,0.1\n'  # happiness, face box 20x30
          "1/b.jpg,,,,,,6,0,0\n"  # anger, no box: the whole image
          "1/c.jpg,50,30,40,40,,7,0,0\n"  # contempt; the box reaches past the corner: 10x10
          "1/d.jpg,0,0,10,10,,8,0,0\n1/e.jpg,0,0,10,10,,9,0,0\n1/f.jpg,0,0,10,10,,10,0,0\n"  # none, uncertain, non-face
          "1/g.jpg,0,0,10,10,,12,0,0\n"  # out of range
          "1/missing.jpg,0,0,10,10,,0,0,0\n"
          ",0,0,10,10,,0,0,0\n")  # no path
    _text(root / "validation.csv", header + "2/h.png,0,0,-5,10,,0,0,0\n")  # neutral; an invalid box is ignored
    return root


def test_affectnet_seven_classes(tmp_path):
    data = load_source("affectnet", _affectnet(tmp_path))
    assert data.classes == list(EXPRESSIONS)
    items = {item.key.removeprefix("Manually_Annotated_Images/"): item for item in data.items}
    assert {key: (item.label, item.split) for key, item in items.items() if item.label} == {
        "1/a.jpg": ("happiness", "train"), "1/b.jpg": ("anger", "train"), "2/h.png": ("neutral", "val")}
    assert "contempt" in items["1/c.jpg"].skip_reason
    assert [k for k in ("1/d.jpg", "1/e.jpg", "1/f.jpg") if "AffectNet code" in items[k].skip_reason] == [
        "1/d.jpg", "1/e.jpg", "1/f.jpg"]
    assert "out of range" in items["1/g.jpg"].skip_reason and items["1/missing.jpg"].skip_reason == "missing file"
    assert len(data.items) == 9 and len(data.warnings) == 3  # out of range, missing file, no path
    assert _size(items["1/a.jpg"]) == (20, 30)
    assert _size(items["1/b.jpg"]) == (60, 40) and _size(items["2/h.png"]) == (60, 40)


def test_affectnet_eight_classes_keep_contempt(tmp_path):
    data = load_source("affectnet", _affectnet(tmp_path), classes=8)
    assert data.classes == list(CANONICAL_CLASSES)
    contempt = _by_key(data)["Manually_Annotated_Images/1/c.jpg"]
    assert contempt.label == "contempt" and _size(contempt) == (10, 10)
    assert sum(item.label is None for item in data.items) == 5
    with pytest.raises(UserError, match="7 or 8"):
        load_source("affectnet", tmp_path, classes=10)


def test_affectnet_needs_a_label_file(tmp_path):
    (tmp_path / "Manually_Annotated_Images").mkdir()
    with pytest.raises(UserError, match="training.csv"):
        load_source("affectnet", tmp_path)


# JAFFE, generic folder -----------------------------------------------------------------------------------------------


def test_jaffe_names_give_subject_and_expression(tmp_path):
    for name in ("KA.AN1.39.tiff", "KA.HA2.30.tiff", "YM.SU1.58.tiff", "YM.NE3.51.tiff", "KA.XX1.41.tiff",
                 "photo.tiff"):
        _write(tmp_path / name)
    _text(tmp_path / "README.txt", "not an image")
    data = load_source("jaffe", tmp_path)
    assert data.classes == list(EXPRESSIONS)
    assert [(item.key, item.label, item.subject) for item in data.items] == [
        ("KA.AN1.39.tiff", "anger", "KA"), ("KA.HA2.30.tiff", "happiness", "KA"), ("KA.XX1.41.tiff", None, "KA"),
        ("YM.NE3.51.tiff", "neutral", "YM"), ("YM.SU1.58.tiff", "surprise", "YM"), ("photo.tiff", None, None)]
    assert "'XX'" in data.items[2].skip_reason and "KA.AN1.39.tiff" in data.items[-1].skip_reason
    assert len(data.warnings) == 2
    _assert_loads(data)


def test_folder_maps_spellings_and_extracts_subjects(tmp_path):
    for path in ("Happy/P01_1.png", "Happy/P02_1.png", "angry/P01_2.png", "neutral/x.png"):
        _write(tmp_path / path)
    data = load_source("folder", tmp_path, subject_regex=r"^(P\d+)_")
    assert data.classes == ["anger", "happiness", "neutral"]
    assert [(item.key, item.label, item.subject) for item in data.items] == [
        ("Happy/P01_1.png", "happiness", "P01"), ("Happy/P02_1.png", "happiness", "P02"),
        ("angry/P01_2.png", "anger", "P01"), ("neutral/x.png", "neutral", None)]
    _assert_loads(data)


def test_folder_unknown_classes(tmp_path):
    for path in ("happy/1.png", "Pain/2.png", "bored/3.png"):
        _write(tmp_path / path)
    with pytest.raises(UserError, match="Pain, bored"):
        load_source("folder", tmp_path)
    data = load_source("folder", tmp_path, any_classes=True)
    assert data.classes == ["happiness", "bored", "pain"]
    assert [item.label for item in data.items] == ["pain", "bored", "happiness"]
    with pytest.raises(UserError, match="group"):
        load_source("folder", tmp_path, subject_regex=r"^S\d+")


# Registry ------------------------------------------------------------------------------------------------------------


def test_registry_and_its_errors(tmp_path):
    assert set(LOADERS) == {"ck+", "ck+-folders", "mmi", "sfew", "raf-db", "fer2013", "ferplus", "affectnet", "jaffe",
                            "folder"}
    with pytest.raises(UserError, match="unknown dataset 'ckplus'"):
        load_source("ckplus", tmp_path)
    for name in LOADERS:
        with pytest.raises(UserError, match="not found"):
            load_source(name, tmp_path / "missing")
    with pytest.raises(UserError, match="include_neutral"):
        load_source("CK+", tmp_path, neutral=True)
