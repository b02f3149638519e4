import pytest
from PIL import Image
from fixtures import make_image_folder

from muldml.data.folder import FaceDataset, scan_folder
from muldml.data.augment import eval_transform
from muldml.errors import UserError


def test_scan_folder_classes_subjects_and_loading(tmp_path):
    root = make_image_folder(tmp_path / "d", subjects=3, per_subject=2)
    samples, classes = scan_folder(root, subject_regex=r"^(S\d+)_")
    assert classes == ["anger", "happiness", "surprise"] and len(samples) == 18
    assert {s.subject for s in samples} == {"S000", "S001", "S002"}
    assert all(classes[s.label] in s.path.name for s in samples)
    image, label = FaceDataset(samples, eval_transform(32))[0]
    assert image.shape == (3, 30, 30) and image.min() >= -1 and image.max() <= 1 and label == samples[0].label


def test_manifest_is_authoritative(tmp_path):
    root = make_image_folder(tmp_path / "d", subjects=2, per_subject=1)
    (root / "manifest.csv").write_text("path,label,subject,split\nanger/S000_anger_0.png,anger,A,train\n"
                                       "happiness/S001_happiness_0.png,happiness,B,test\n")
    samples, classes = scan_folder(root)
    assert [(s.subject, s.split) for s in samples] == [("A", "train"), ("B", "test")]
    assert classes == ["anger", "happiness"]


def test_bad_folders_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="data folder not found"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "empty" / "anger").mkdir(parents=True)
    with pytest.raises(UserError, match="no images found"):
        scan_folder(tmp_path / "empty")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.csv").write_text("file,label\nx.png,anger\n")
    with pytest.raises(UserError, match="missing column"):
        scan_folder(tmp_path / "m")


def test_scan_folder_ignores_os_metadata_and_reads_every_pillow_format(tmp_path):
    root = make_image_folder(tmp_path / "d", subjects=2, per_subject=1)
    (root / "anger" / "._S000_anger_0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / "anger" / "Thumbs.db").write_bytes(b"thumbnails")
    (root / "__MACOSX" / "anger").mkdir(parents=True)
    (root / "__MACOSX" / "anger" / "._S000_anger_0.png").write_bytes(b"\x00\x05\x16\x07")
    Image.open(root / "anger" / "S000_anger_0.png").convert("RGB").save(root / "anger" / "S002_anger_0.jfif", "JPEG")
    samples, classes = scan_folder(root, subject_regex=r"^(S\d+)_")
    assert classes == ["anger", "happiness", "surprise"]
    assert sorted(s.path.name for s in samples if s.label == 0) == ["S000_anger_0.png", "S001_anger_0.png",
                                                                    "S002_anger_0.jfif"]
    assert len(samples) == 7


def test_kaggle_fer2013_layout_is_read_with_its_split_and_canonical_names(tmp_path):
    """train|test/<class>/*.jpg, class folders spelt angry, happy: the same names prepare gives."""
    from muldml.protocol import train_val_split

    face = Image.new("L", (12, 12), 90)
    for split, count in (("train", 3), ("test", 2)):
        for name in ("angry", "happy", "neutral"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                face.point(lambda v, k=i + 10 * count: (v + k) % 256).save(tmp_path / split / name / f"{i}.jpg")
    (tmp_path / "train" / "happy" / "again").symlink_to("../..")  # a link loop adds nothing
    samples, classes = scan_folder(tmp_path)
    assert classes == ["anger", "happiness", "neutral"]
    assert len(samples) == 15 and {s.split for s in samples} == {"train", "test"}
    assert sorted(classes[s.label] for s in samples if s.split == "test") == ["anger"] * 2 + ["happiness"] * 2 + ["neutral"] * 2
    train, val, _ = train_val_split(samples, val_fraction=0.2, seed=0)
    assert len(train) == 9 and all(s.split == "train" for s in train) and val == []


def test_manifest_labels_are_canonical(tmp_path):
    root = make_image_folder(tmp_path / "d", subjects=2, per_subject=1)
    (root / "manifest.csv").write_text("path,label,subject,split\nanger/S000_anger_0.png,Angry,A,train\n"
                                       "happiness/S001_happiness_0.png,happy,B,test\n")
    assert scan_folder(root)[1] == ["anger", "happiness"]
