"""`muldml prepare` end to end on generated fixtures, bad files included, then `muldml cv` on its output."""
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from muldml.cli import main
from muldml.data.classes import EXPRESSIONS
from muldml.data.faces import FaceDetector
from muldml.data.synthetic import render_face, sample_identity
from muldml.prepare import to_rgb


def face(subject, expression, size=64):
    identity = sample_identity(np.random.default_rng([3, subject]))
    return render_face(identity, expression, np.random.default_rng([3, subject, expression]), size)


def exif_rotated_jpeg(img):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it 90° clockwise
    buffer = io.BytesIO()
    img.transpose(Image.Transpose.ROTATE_90).save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


@pytest.fixture()
def source(tmp_path):
    """A folder dataset: demo faces of 4 subjects × 3 classes, a real photo, and bad files."""
    root = tmp_path / "src"
    classes = ["anger", "happiness", "surprise"]
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for s in range(4):
            face(s, EXPRESSIONS.index(name)).save(root / name / f"S{s:03d}_{name}.png")
    Image.fromarray(data.astronaut()).resize((256, 256)).save(root / "happiness" / "S009_photo.png")
    bad = root / "anger"
    (bad / "S010_zero.png").write_bytes(b"")
    full = (root / "anger" / "S000_anger.png").read_bytes()
    (bad / "S010_truncated.png").write_bytes(full[: len(full) // 2])
    (bad / "S010_text.png").write_text("not an image")
    Image.new("RGB", (8, 8)).save(bad / "S010_tiny.png")
    (bad / "S011_copy.png").write_bytes(full)  # the same pixels as S000_anger.png
    converted = root / "surprise"
    face(5, 5).convert("CMYK").save(converted / "S005_cmyk.jpg")
    face(6, 5).convert("P").save(converted / "S006_palette.png", transparency=0)
    Image.fromarray((np.asarray(face(7, 5).convert("L"), dtype=np.uint16) * 257)).save(converted / "S007_16bit.png")
    rgba = face(8, 5).convert("RGBA")
    rgba.putalpha(200)
    rgba.save(converted / "S008_alpha.png")
    (converted / "S012_exif.jpg").write_bytes(exif_rotated_jpeg(face(12, 5)))
    return root


def read_manifest(out):
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_prepare_then_cross_validate(source, tmp_path, capsys):
    out = tmp_path / "prepared"
    args = ["prepare", str(source), str(out), "--dataset", "folder", "--subject-regex", r"^(S\d+)_",
            "--size", "48", "--rotations=-5,0,5", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    rows = read_manifest(out)
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    status = {key.split("/")[-1]: rs[0]["status"] for key, rs in by_source.items()}
    reason = {key.split("/")[-1]: rs[0]["reason"] for key, rs in by_source.items()}
    # The real photo is found and aligned; drawn faces fall back to the centred crop.
    assert status["S009_photo.png"] == "ok" and float(by_source["happiness/S009_photo.png"][0]["probability"]) > 0.9
    assert status["S000_anger.png"] in ("ok", "no_face")
    for bad in ("S010_zero.png", "S010_truncated.png", "S010_text.png", "S010_tiny.png", "S011_copy.png"):
        assert status[bad] == "skipped", bad
    assert "unreadable" in reason["S010_zero.png"] and "unreadable" in reason["S010_truncated.png"]
    assert "too small" in reason["S010_tiny.png"] and reason["S011_copy.png"] == "duplicate of anger/S000_anger.png"
    assert "CMYK converted" in reason["S005_cmyk.jpg"] and "alpha" in reason["S006_palette.png"]
    assert "16-bit" in reason["S007_16bit.png"] and "alpha" in reason["S008_alpha.png"]
    assert "EXIF rotation applied" in reason["S012_exif.jpg"]
    # Each usable image: the original and two rotations, 48×48 RGB, subject kept.
    kept = [r for r in rows if r["status"] != "skipped"]
    assert len(kept) == 3 * 18 and {r["rotation"] for r in kept} == {"-5", "0", "5"}
    for r in kept:
        img = Image.open(out / r["path"])
        assert img.size == (48, 48) and img.mode == "RGB" and r["subject"].startswith("S")
    assert "5 source image(s) skipped" in printed and "duplicate image" in printed

    # A rerun is a no-op; an interrupted one (log cut short, manifest gone) finishes the rest.
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes
    log = out / ".prepare-log.csv"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:10]) + lines[10][:7])  # and a torn last line
    (out / "manifest.csv").unlink()
    assert main(args) == 0
    assert read_manifest(out) == rows
    assert not list(out.rglob("*.tmp"))

    # Cross-validation on what prepare wrote (rotations train, originals test).
    cv_out = tmp_path / "cv"
    assert main(["cv", "--data", str(out), "--preset", "mul-dml", "--folds", "2", "--out", str(cv_out),
                 "--epochs", "1", "--batch-size", "16", "--image-size", "48", "--slice-dim", "8",
                 "--tau-min", "0.25", "--tau-max", "0.45", "--lr", "0.001", "--quiet"]) == 0
    summary = json.loads((cv_out / "cv.json").read_text())
    assert sum(map(sum, summary["confusion"])) == 18  # every original tested once


def test_fer2013_official_split_gets_rotations_on_training_images_only(tmp_path, capsys):
    root = tmp_path / "fer"
    root.mkdir()
    pixels = lambda s: " ".join(map(str, np.asarray(face(s, 3, 48).convert("L")).ravel()))  # noqa: E731
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + f"3,{pixels(0)},Training\n"
                                      f"4,{pixels(1)},PublicTest\n" + f"0,{pixels(2)},PrivateTest\n" + "9,1 2 3,Training\n")
    out = tmp_path / "out"
    assert main(["prepare", str(root), str(out), "--dataset", "fer2013", "--no-detect", "--size", "48", "--quiet"]) == 0
    rows = read_manifest(out)
    per_split = {}
    for r in rows:
        per_split.setdefault(r["split"], []).append(r)
    assert len(per_split["train"]) == 5 + 1  # five rotations of the good row + the skipped one
    assert len(per_split["val"]) == 1 and len(per_split["test"]) == 1
    assert {r["label"] for r in per_split["val"]} == {"sadness"}


def test_to_rgb_keeps_plain_images_untouched():
    img = Image.new("RGB", (20, 20), (10, 20, 30))
    rgb, notes = to_rgb(img)
    assert notes == [] and rgb.getpixel((0, 0)) == (10, 20, 30)


def test_prepare_bad_arguments(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "none"), str(tmp_path / "o"), "--dataset", "ck+"]) == 2
    assert "muldml: error:" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path), str(tmp_path / "o"), "--dataset", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def _fer_row(img):
    return " ".join(map(str, np.asarray(img.convert("L")).ravel()))


def test_fer2013_every_row_gets_its_own_file(tmp_path, capsys):
    # Four rows: two Training and one PublicTest happiness, one PrivateTest anger. All rows used
    # to share one output per class, so training files held the PublicTest row's pixels.
    root = tmp_path / "fer"
    root.mkdir()
    faces = [face(s, 3, 48).convert("L") for s in range(3)] + [face(3, 0, 48).convert("L")]
    usage = ["Training", "Training", "PublicTest", "PrivateTest"]
    emotion = [3, 3, 3, 0]
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "".join(
        f"{e},{_fer_row(f)},{u}\n" for e, f, u in zip(emotion, faces, usage)))
    out = tmp_path / "out"
    assert main(["prepare", str(root), str(out), "--dataset", "fer2013", "--no-detect", "--size", "48",
                 "--rotations=0", "--quiet"]) == 0
    rows = read_manifest(out)
    assert len(rows) == 4 and len({r["path"] for r in rows}) == 4
    for r in rows:
        row = int(r["source"].split("=")[1])
        written = np.asarray(Image.open(out / r["path"]).convert("L"))
        assert np.array_equal(written, np.asarray(faces[row])), r["path"]  # its own row's pixels, no other's
    assert len(list(out.rglob("*.png"))) == 4 and "4 image file(s) written" in capsys.readouterr().out


def test_sources_whose_names_clash_get_distinct_files(tmp_path, capsys):
    root = tmp_path / "src"
    (root / "anger").mkdir(parents=True)
    pictures = {"S004_d.png": face(4, 0), "S004_d.jpg": face(5, 0), "S006_a b.png": face(6, 0),
                "S006_a_b.png": face(7, 0), "S008_X.png": face(8, 0), "S008_x.png": face(9, 0),
                "S010.jfif": face(10, 0), "S011_r-5.png": face(11, 0), "S011.png": face(12, 0)}
    for name, img in pictures.items():
        img.save(root / "anger" / name, format="JPEG" if name.endswith((".jpg", ".jfif")) else "PNG")
    (root / "anger" / "S013.svg").write_text("<svg/>")  # Pillow has no decoder for it
    out = tmp_path / "out"
    args = ["prepare", str(root), str(out), "--dataset", "folder", "--no-detect", "--size", "64", "--rotations=-5,0,5",
            "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    rows = read_manifest(out)
    kept = [r for r in rows if r["status"] != "skipped"]
    assert len(kept) == 3 * len(pictures)
    assert len({r["path"].casefold() for r in kept}) == len(kept)  # distinct, even on a case-insensitive disk
    on_disk = [p for p in out.rglob("*.png")]
    assert len(on_disk) == len(kept) and f"{len(kept)} image file(s) written" in printed
    for r in kept:
        if r["rotation"] == "0":
            written = np.asarray(Image.open(out / r["path"]))
            assert np.array_equal(written, np.asarray(Image.open(root / r["source"]).convert("RGB"))), r["source"]
    svg = [r for r in rows if r["source"] == "anger/S013.svg"]
    assert svg[0]["status"] == "skipped" and ".svg" in svg[0]["reason"]
    assert "1 source image(s) skipped" in printed and "4× output name shared with another source" in printed
    # Resuming keeps every source's files where they are.
    mtimes = {p: p.stat().st_mtime_ns for p in on_disk}
    assert main(args) == 0
    assert read_manifest(out) == rows and {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes


def test_an_image_below_mtcnns_smallest_face_does_not_stop_prepare(tmp_path, capsys):
    root = tmp_path / "src"
    (root / "anger").mkdir(parents=True)
    face(0, 0, 18).save(root / "anger" / "S001_tiny.png")  # 18×18: below MTCNN's 20-px minimum face
    face(1, 0, 64).save(root / "anger" / "S002_face.png")
    out = tmp_path / "out"
    assert main(["prepare", str(root), str(out), "--dataset", "folder", "--size", "32", "--rotations=0",
                 "--quiet"]) == 0
    rows = {r["source"]: r for r in read_manifest(out)}
    assert rows["anger/S001_tiny.png"]["status"] == "no_face"
    assert "smallest face" in rows["anger/S001_tiny.png"]["reason"]
    normal = rows["anger/S002_face.png"]
    assert normal["status"] in {"ok", "no_face"} and (out / normal["path"]).is_file()
    assert "skipped" not in capsys.readouterr().out


def test_a_detection_failure_on_one_image_is_counted_not_fatal(tmp_path, capsys, monkeypatch):
    from muldml.data import faces

    real = faces.FaceDetector._detect

    def fails_on_red(self, batch):
        if any(img.getpixel((0, 0)) == (255, 0, 0) for img in batch):
            raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
        return real(self, batch)

    monkeypatch.setattr(faces.FaceDetector, "_detect", fails_on_red)
    root = tmp_path / "src"
    (root / "anger").mkdir(parents=True)
    for s in range(3):  # same size: one batch, which fails as a whole and is retried image by image
        img = face(s, 0, 40)
        if s == 1:
            img.putpixel((0, 0), (255, 0, 0))
        img.save(root / "anger" / f"S00{s}.png")
    out = tmp_path / "out"
    assert main(["prepare", str(root), str(out), "--dataset", "folder", "--size", "32", "--rotations=0",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    rows = {r["source"]: r for r in read_manifest(out)}
    assert rows["anger/S001.png"]["status"] == "skipped"
    assert rows["anger/S001.png"]["reason"].startswith("face detection failed: RuntimeError: torch.cat()")
    assert {rows[k]["status"] for k in ("anger/S000.png", "anger/S002.png")} <= {"ok", "no_face"}
    assert all((out / rows[k]["path"]).is_file() for k in ("anger/S000.png", "anger/S002.png"))
    assert "1 source image(s) skipped" in printed and "1× face detection failed" in printed


def test_outputs_shared_by_an_earlier_run_are_prepared_again(tmp_path, monkeypatch, capsys):
    # An output folder written before names were made distinct: the FER2013 rows of a class share one file.
    import muldml.prepare

    root = tmp_path / "fer"
    root.mkdir()
    faces = [face(s, 3, 48).convert("L") for s in range(3)]
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "".join(f"3,{_fer_row(f)},Training\n" for f in faces))
    out = tmp_path / "out"
    args = ["prepare", str(root), str(out), "--dataset", "fer2013", "--no-detect", "--size", "48", "--rotations=0",
            "--quiet"]
    with monkeypatch.context() as patch:
        patch.setattr(muldml.prepare, "_redo_shared_outputs", lambda *a: None)
        patch.setattr(muldml.prepare._Outputs, "paths", lambda self, item, angles, summary: [
            f"{item.label}/fer2013.png" for _ in angles])
        assert main(args) == 0
    assert [p.name for p in out.rglob("*.png")] == ["fer2013.png"]
    capsys.readouterr()
    assert main(args) == 0
    rows = read_manifest(out)
    assert len({r["path"] for r in rows}) == 3 and len(list(out.rglob("*.png"))) == 3
    for r in rows:
        row = int(r["source"].split("=")[1])
        assert np.array_equal(np.asarray(Image.open(out / r["path"]).convert("L")), np.asarray(faces[row]))
    assert "3× written to a file shared with another source" in capsys.readouterr().out


def test_kaggle_fer2013_folders_prepared_into_a_folder_inside_them_twice(tmp_path, capsys):
    """train|test/<class>/ read as an official split; the output folder inside the source is
    never read back (a second run finds the same sources, nothing new)."""
    src = tmp_path / "fer"
    for split, names in (("train", ("angry", "happy")), ("test", ("angry", "happy"))):
        for s, name in enumerate(names):
            (src / split / name).mkdir(parents=True)
            face(s + (4 if split == "test" else 0), 0 if name == "angry" else 3, 48).save(src / split / name / f"{s}.png")
    out = src / "prepared"
    command = ["prepare", str(src), str(out), "--dataset", "folder", "--no-detect", "--size", "48", "--quiet"]
    for _ in range(2):
        assert main(command) == 0, capsys.readouterr().err
        printed = capsys.readouterr().out
        assert "4 source image(s) ok" in printed and "skipped" not in printed, printed
    rows = read_manifest(out)
    assert sorted({(r["source"], r["label"], r["split"]) for r in rows}) == [
        ("test/angry/0.png", "anger", "test"), ("test/happy/1.png", "happiness", "test"),
        ("train/angry/0.png", "anger", "train"), ("train/happy/1.png", "happiness", "train")]
