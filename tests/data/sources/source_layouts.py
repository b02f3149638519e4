"""Tiny copies of each distributed dataset layout, made here (no real dataset file), shared by the reader tests."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from muldml.data.sources import RawItem, SourceDataset
from muldml.data.synthetic import render_face, sample_identity

FACE = 24  # side of the square test images


@lru_cache
def face(size: int) -> Image.Image:
    rng = np.random.default_rng(size)
    return render_face(sample_identity(rng), "happiness", rng, size)


def write(path: Path, size: tuple[int, int] = (FACE, FACE)) -> Path:
    """An image file: a demo face when square, noise otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    if width == height:
        image = face(width)
    else:
        image = Image.fromarray(np.random.default_rng(width * height).integers(0, 256, (height, width, 3), np.uint8))
    image.save(path)
    return path


def text_file(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def by_key(data: SourceDataset) -> dict[str, RawItem]:
    return {item.key: item for item in data.items}


def labelled(data: SourceDataset) -> list[RawItem]:
    return [item for item in data.items if item.label is not None]


def size_of(item: RawItem) -> tuple[int, int]:
    with item.load() as image:
        assert isinstance(image, Image.Image)
        image.load()
        return image.size


def assert_loads(data: SourceDataset, size: tuple[int, int] = (FACE, FACE)) -> None:
    for item in labelled(data):
        assert size_of(item) == size, item.key


# Each builder writes one layout under ``root`` and returns the folder to read and the loader's options.


def ck_plus(root: Path) -> Path:
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
            write(root / "cohn-kanade-images" / subject / sequence / f"{subject}_{sequence}_{k:08d}.png")
        folder = root / "Emotion" / subject / sequence
        folder.mkdir(parents=True)
        if emotion is not None:
            text_file(folder / f"{subject}_{sequence}_{frames:08d}_emotion.txt", emotion)
    return root


def ck_plus_folders(root: Path) -> Path:
    for path in ("anger/S005_001_00000010.png", "anger/S010_002_00000014.png", "happy/S011_004_00000019.png",
                 "sad/S022_001_00000030.png", "smirk/S026_003_00000015.png"):
        write(root / path)
    return root


def mmi(root: Path) -> Path:
    for subject, sequence, frames in (("1", "s1", 10), ("1", "s2", 5), ("2", "s3", 4), ("2", "s4", 6)):
        for k in range(1, frames + 1):
            write(root / subject / sequence / f"frame{k}.png")
    text_file(root / "labels.csv", "subject,sequence,emotion,peak\n"
              "1,s1,happy,\n"  # no peak: the middle three of ten (frame4-6, in natural order)
              "1,s2,2,0\n"  # code 2 = disgust, peak at the first frame: the window stays inside
              "2,s3,neutral,\n"  # not one of MMI's classes
              "2,s4,sadness,99\n"  # peak past the end
              "2,s5,anger,\n")  # no frames
    return root


def sfew(root: Path) -> Path:
    for path in ("Train/Angry/a1.png", "Train/Angry/a2.png", "Train/Happy/h1.png", "Val/Sad/s1.png",
                 "Val/Contemptuous/c1.png", "Val/Bored/b1.png"):
        write(root / path)
    return root


def raf_db(root: Path) -> Path:
    text_file(root / "EmoLabel" / "list_patition_label.txt",
              "train_00001.jpg 5\ntrain_00002.jpg 4\ntest_0001.jpg 7\n\n"
              "train_00003.jpg 9\nthis line is wrong\ntrain_00004.jpg x\ntest_0002.jpg 1\n")
    for name in ("train_00001", "train_00002", "test_0001", "train_00003", "train_00004"):
        write(root / "Image" / "aligned" / f"{name}_aligned.jpg")
        write(root / "Image" / "original" / f"{name}.jpg", (40, 30))
    return root


def pixels(seed: int, count: int = 48 * 48) -> str:
    """FER2013's pixel column: ``count`` random grey values."""
    return " ".join(map(str, np.random.default_rng(seed).integers(0, 256, count)))


def fer2013(root: Path) -> Path:
    rows = [(3, pixels(0), "Training"), (6, pixels(1), "PublicTest"), (0, pixels(2), "PrivateTest"),
            (2, pixels(3, 100), "Training"), (9, pixels(4), "Training"), (1, "1 2 x " + pixels(5, 2301), "Training")]
    rows += [(k % 7, pixels(k), "Training") for k in range(6, 12)]
    text_file(root / "fer2013.csv", "emotion,pixels,Usage\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows))
    return root


def votes(**counts: int) -> str:
    columns = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
    return ",".join(str(counts.get(column, 0)) for column in columns)


def ferplus(path: Path, rows: int = 12) -> Path:
    """A fer2013new.csv for `fer2013`'s rows."""
    table = [votes(happiness=8, neutral=2), votes(neutral=5, sadness=5), votes(unknown=6, fear=4),
             votes(neutral=10), votes(contempt=7, anger=3), votes(neutral=10), votes(NF=10),
             "1,x,0,0,0,0,0,0,0,0", votes()]
    table += [votes(surprise=10)] * (rows - len(table))
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    return text_file(path, header + "".join(f"Training,fer{i:07d}.png,{v}\n" for i, v in enumerate(table)))


def affectnet(root: Path) -> Path:
    images = root / "Manually_Annotated_Images"
    for name in ("1/a.jpg", "1/b.jpg", "1/c.jpg", "1/d.jpg", "1/e.jpg", "1/f.jpg", "1/g.jpg", "2/h.png"):
        write(images / name, (60, 40))
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    text_file(root / "training.csv", header +
              '1/a.jpg,10,5,20,30,"1;2",1,0.5,0.1\n'  # happiness, face box 20x30
              "1/b.jpg,,,,,,6,0,0\n"  # anger, no box: the whole image
              "1/c.jpg,50,30,40,40,,7,0,0\n"  # contempt; the box reaches past the corner: 10x10
              "1/d.jpg,0,0,10,10,,8,0,0\n1/e.jpg,0,0,10,10,,9,0,0\n1/f.jpg,0,0,10,10,,10,0,0\n"  # none, uncertain, NF
              "1/g.jpg,0,0,10,10,,12,0,0\n"  # out of range
              "1/missing.jpg,0,0,10,10,,0,0,0\n"
              ",0,0,10,10,,0,0,0\n")  # no path
    text_file(root / "validation.csv", header + "2/h.png,0,0,-5,10,,0,0,0\n")  # neutral; an invalid box is ignored
    return root


def jaffe(root: Path) -> Path:
    for name in ("KA.AN1.39.tiff", "KA.HA2.30.tiff", "YM.SU1.58.tiff", "YM.NE3.51.tiff", "KA.XX1.41.tiff",
                 "photo.tiff"):
        write(root / name)
    text_file(root / "README.txt", "not an image")
    return root


def folder(root: Path) -> Path:
    for path in ("Happy/P01_1.png", "Happy/P02_1.png", "angry/P01_2.png", "neutral/x.png"):
        write(root / path)
    return root


#: Registry name → (builder, loader options): one layout per reader.
LAYOUTS = {
    "ck+": (ck_plus, {}),
    "ck+-folders": (ck_plus_folders, {}),
    "mmi": (mmi, {}),
    "sfew": (sfew, {}),
    "raf-db": (raf_db, {}),
    "fer2013": (fer2013, {}),
    "ferplus": (lambda root: ferplus(fer2013(root) / "fer2013new.csv").parent, {}),
    "affectnet": (affectnet, {}),
    "jaffe": (jaffe, {}),
    "folder": (folder, {"subject_regex": r"^(P\d+)_"}),
}
