"""`muldml predict` on folders of photos: one record per face, annotations, every image counted."""
import csv
import io
import json

import numpy as np
import pytest
from inference_fixtures import CLASSES, tiny_checkpoint
from PIL import Image
from skimage import data

from muldml.cli import main
from muldml.predict import collect_inputs, open_photo


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def astronaut():
    return Image.fromarray(data.astronaut())


def jpeg_bytes(img):
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut):
    """astronaut.jpg, sub/deeper/astronaut.png (found recursively), blank.png (no face),
    broken.jpg and truncated.jpg (unreadable), plus files that are not data."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "astronaut.jpg").write_bytes(jpeg_bytes(astronaut))
    astronaut.save(root / "sub" / "deeper" / "astronaut.png")
    Image.new("RGB", (90, 70), (128, 128, 128)).save(root / "blank.png")
    (root / "broken.jpg").write_bytes(b"this is not a JPEG")
    (root / "truncated.jpg").write_bytes(jpeg_bytes(astronaut)[:3000])
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "._astronaut.jpg").write_bytes(b"\0\5\26\7")
    return root


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_of_photos_gives_a_record_per_face_and_annotated_copies(run, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(photos), "--checkpoint", str(run), "--out", str(out), "--annotate",
                 "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "5 image(s): 2 face(s), 1 with no face, 2 unreadable" in printed
    assert "1 file(s) ignored: not images" in printed  # notes.txt; metadata files are not even counted
    records = {(r["source"], r["face"]): r for r in read_jsonl(out / "predictions.jsonl")}
    assert len(records) == 5
    faces = [r for r in records.values() if r["status"] == "ok"]
    assert sorted(r["source"] for r in faces) == [str(photos / "astronaut.jpg"),
                                                  str(photos / "sub" / "deeper" / "astronaut.png")]
    for r in faces:
        assert r["face"] == 0 and r["detector_probability"] > 0.99 and len(r["landmarks"]) == 5
        assert 150 < r["box"][0] < r["box"][2] < 300 and list(r["probabilities"]) == CLASSES
        assert r["expression"] == max(r["probabilities"], key=r["probabilities"].get)
        assert r["embedding"] is None
    assert records[(str(photos / "blank.png"), -1)]["status"] == "no_face"
    for name in ("broken.jpg", "truncated.jpg"):
        r = records[(str(photos / name), -1)]
        assert r["status"] == "unreadable" and r["reason"].startswith("unreadable image:") and r["expression"] is None
    # One annotated copy per readable image; the box is drawn in red where the face is.
    drawn = sorted(p.name for p in (out / "annotated").iterdir())
    assert drawn == ["astronaut.png", "blank.png", "sub__deeper__astronaut.png"]
    annotated = np.asarray(Image.open(out / "annotated" / "sub__deeper__astronaut.png")).astype(int)
    x0, y0, x1, y1 = (round(v) for v in records[(str(photos / "sub" / "deeper" / "astronaut.png"), 0)]["box"])
    edge = annotated[(y0 + y1) // 2, x0 - 1 : x0 + 2]
    assert (edge[:, 0] > 200).any() and (edge[:, 1] < 80).any()
    assert not [p for p in out.rglob("*.tmp")]


def odd_images(astronaut):
    """The same small face crop as grey, RGBA, 16-bit grey, CMYK, palette and EXIF-rotated files."""
    crop = astronaut.crop((160, 40, 290, 190)).resize((64, 80))
    grey16 = Image.fromarray(np.asarray(crop.convert("L")).astype(np.uint16) * 257)
    turned = crop.transpose(Image.Transpose.ROTATE_90)  # stored sideways; EXIF orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    return {"grey.png": (crop.convert("L"), {}), "rgba.png": (crop.convert("RGBA"), {}),
            "grey16.png": (grey16, {}), "cmyk.jpg": (crop.convert("CMYK"), {}),
            "palette.gif": (crop.convert("P"), {}), "upright.png": (crop, {}),
            "exif.png": (turned, {"exif": exif})}


def test_no_detect_csv_with_embeddings_reads_every_mode(run, astronaut, tmp_path, capsys):
    folder = tmp_path / "crops"
    folder.mkdir()
    for name, (img, options) in odd_images(astronaut).items():
        img.save(folder / name, **options)
    assert open_photo(folder / "exif.png")[0].size == (64, 80)  # upright, as prepare reads it
    assert Image.open(folder / "grey16.png").mode.startswith("I")
    out = tmp_path / "out"
    assert main(["predict", str(folder / "*.*"), "--checkpoint", str(run), "--out", str(out), "--no-detect",
                 "--format", "csv", "--embeddings", "--batch-size", "3", "--device", "cpu", "--quiet"]) == 0
    assert "7 image(s): 7 face(s), 0 with no face, 0 unreadable" in capsys.readouterr().out
    with open(out / "predictions.csv", newline="") as f:
        rows = {row["source"].rsplit("/", 1)[1]: row for row in csv.DictReader(f)}
    assert set(rows) == set(odd_images(astronaut))
    for row in rows.values():
        assert row["status"] == "ok" and row["face"] == "0" and row["box_x0"] == ""
        probs = [float(row[f"p_{c}"]) for c in CLASSES]
        assert abs(sum(probs) - 1) < 1e-5 and row["expression"] == CLASSES[int(np.argmax(probs))]
        assert len(row["embedding"].split()) == 3 * 8
    # EXIF orientation is applied before anything else: the turned file reads as the upright one.
    upright, exif = (np.array(rows[n]["embedding"].split(), dtype=float) for n in ("upright.png", "exif.png"))
    other = np.array(rows["grey.png"]["embedding"].split(), dtype=float)  # a different picture
    assert np.abs(exif - upright).max() < 1e-5 < np.abs(other - upright).max()


def test_inputs_files_folders_and_globs(photos):
    files, ignored = collect_inputs([str(photos / "*.jpg"), str(photos / "sub"), str(photos / "blank.png"),
                                     str(photos / "astronaut.jpg")])
    assert [f.name for f in files] == ["astronaut.jpg", "broken.jpg", "truncated.jpg", "astronaut.png", "blank.png"]
    assert ignored == 0  # the glob leaves out ._astronaut.jpg, a macOS resource fork


def test_bad_input_gives_one_line_and_exit_2(run, photos, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02not a checkpoint")
    done = tmp_path / "done"
    done.mkdir()
    (done / "predictions.jsonl").write_text("")
    blank = str(photos / "blank.png")
    cases = [
        ([str(tmp_path / "missing.jpg")], "input not found"),
        ([str(tmp_path / "*.webp")], "no file matches"),
        ([blank, "--checkpoint", str(tmp_path / "junk.pt")], "not a muldml checkpoint"),
        ([blank, "--out", str(tmp_path / "file" / "out")], "not writable"),
        ([blank, "--out", str(done)], "exists; pass --overwrite"),
        ([blank, "--batch-size", "0"], "--batch-size must be >= 1"),
        ([blank, "--device", "cuda:9"], "device"),
    ]
    for args, words in cases:
        extra = [] if "--checkpoint" in args else ["--checkpoint", str(run)]
        outs = [] if "--out" in args else ["--out", str(tmp_path / "out")]
        assert main(["predict", *args, *extra, *outs, "--quiet"]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("muldml: error:") and words in err and "\n" not in err, err
    assert main(["predict", blank, "--checkpoint", str(run), "--out", str(done), "--overwrite", "--quiet",
                 "--device", "cpu"]) == 0
    assert read_jsonl(done / "predictions.jsonl")[0]["status"] == "no_face"


def test_interrupted_run_resumes_to_the_same_file(run, astronaut, tmp_path, monkeypatch, capsys):
    from muldml.inference import FERModel

    folder = tmp_path / "crops"
    folder.mkdir()
    for name, (img, options) in odd_images(astronaut).items():
        img.save(folder / name, **options)
    common = [str(folder), "--checkpoint", str(run), "--no-detect", "--batch-size", "2", "--device", "cpu", "--quiet"]
    assert main(["predict", *common, "--out", str(tmp_path / "whole")]) == 0
    whole = (tmp_path / "whole" / "predictions.jsonl").read_text()

    calls, real = [], FERModel.predict

    def interrupted(self, *args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kw)

    monkeypatch.setattr(FERModel, "predict", interrupted)
    cut = tmp_path / "cut"
    assert main(["predict", *common, "--out", str(cut)]) == 130
    monkeypatch.setattr(FERModel, "predict", real)
    assert not (cut / "predictions.jsonl").exists()
    with open(cut / ".predictions.partial.jsonl", "a") as log:
        log.write('{"source": "torn')  # a line cut short by the interruption
    capsys.readouterr()
    assert main(["predict", *common, "--out", str(cut)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["predict", *common, "--out", str(cut), "--resume", "--embeddings"]) == 2
    assert "settings differ" in capsys.readouterr().err
    assert main(["predict", *common, "--out", str(cut), "--resume"]) == 0
    assert "resumed: 4 image(s)" in capsys.readouterr().out
    assert (cut / "predictions.jsonl").read_text() == whole
    assert not (cut / ".predictions.partial.jsonl").exists()


def test_a_link_loop_is_walked_once(run, astronaut, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    crop = astronaut.resize((48, 48))
    crop.save(folder / "a.png")
    crop.save(folder / "sub" / "b.png")
    (folder / "sub" / "again").symlink_to("..")  # a loop: sub/again/sub/again/...
    (folder / "also_b.png").symlink_to(folder / "sub" / "b.png")  # a second name for one file
    files, ignored = collect_inputs([str(folder), str(folder / "sub"), str(folder / "**" / "*.png")])
    # Each real file once, under the first name the walk meets it by.
    assert [f.name for f in files] == ["a.png", "also_b.png"] and ignored == 0
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--checkpoint", str(run), "--out", str(out), "--no-detect",
                 "--device", "cpu", "--quiet"]) == 0
    assert "2 image(s): 2 face(s)" in capsys.readouterr().out
    assert len(read_jsonl(out / "predictions.jsonl")) == 2


def test_the_output_folder_is_never_read_back(run, astronaut, tmp_path, monkeypatch, capsys):
    """predict . --annotate twice, the default output folder ./predictions inside the input."""
    monkeypatch.chdir(tmp_path)
    astronaut.resize((48, 48)).save(tmp_path / "a.png")
    astronaut.resize((40, 40)).save(tmp_path / "b.png")
    command = ["predict", ".", "--checkpoint", str(run), "--annotate", "--no-detect", "--device", "cpu", "--quiet"]
    assert main(command) == 0
    first = capsys.readouterr().out
    assert main(command + ["--overwrite"]) == 0
    second = capsys.readouterr().out
    for printed in (first, second):
        assert "2 image(s): 2 face(s)" in printed and "ignored" not in printed, printed
    assert sorted(r["source"] for r in read_jsonl(tmp_path / "predictions" / "predictions.jsonl")) == ["a.png", "b.png"]
    assert sorted(p.name for p in (tmp_path / "predictions" / "annotated").iterdir()) == ["a.png", "b.png"]
    # Naming the output folder's files as input is refused in one line.
    assert main(["predict", "predictions/annotated/a.png", "--checkpoint", str(run), "--out", "predictions",
                 "--overwrite", "--quiet"]) == 2
    assert "lies in the output folder" in capsys.readouterr().err
