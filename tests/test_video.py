"""`muldml predict VIDEO` and `--camera` (muldml.video): sampled frames, tracks, smoothed
probabilities, the annotated video, the timeline, resume and bad input."""
import json
import sys
import types

import av
import numpy as np
import pytest
from inference_fixtures import CLASSES, tiny_checkpoint
from PIL import Image

from muldml.cli import main
from muldml.data.synthetic_video import face_video_frames, write_face_video
from muldml.inference import FERModel
from muldml.video import IoUTracker, iou, plot_timeline

# Two generated people, 240×120, 1 s at 10 frames/s, expressions changing every 0.4 s, no
# face from 0.8 s on; seed 7's people are found by MTCNN in every frame.
VIDEO = dict(width=240, height=120, seconds=1.0, rate=10, seed=7, change_every=0.4, blank_after=0.8)
EMA = 0.5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_face_video(tmp_path_factory.mktemp("video") / "two people.mp4", **VIDEO)


def predict(run, inputs, out, *extra):
    return main(["predict", *map(str, inputs), "--checkpoint", str(run), "--out", str(out), "--fps", "5",
                 "--ema", str(EMA), "--face-size", "64", "--device", "cpu", "--quiet", *extra])


@pytest.fixture(scope="module")
def result(run, video, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    assert predict(run, [video], out, "--annotate") == 0
    return out, [json.loads(line) for line in (out / "two_people.jsonl").read_text().splitlines()]


def check_smoothing(records):
    """Each track's smoothed probabilities are the moving average of its probabilities."""
    previous = {}
    for r in records:
        if r["track"] is None:
            continue
        p = np.array([r["probabilities"][c] for c in CLASSES])
        expected = p if r["track"] not in previous else EMA * p + (1 - EMA) * previous[r["track"]]
        assert np.allclose([r["smoothed"][c] for c in CLASSES], expected, atol=1e-12)
        assert r["smoothed_expression"] == CLASSES[int(np.argmax(expected))]
        previous[r["track"]] = expected


def test_video_gives_a_tracked_smoothed_record_per_frame_and_face(result, video, capsys):
    out, records = result
    assert sorted({r["frame"] for r in records}) == [0, 2, 4, 6, 8]  # 10 frames/s sampled at 5
    assert all(r["time"] == pytest.approx(r["frame"] / 10) for r in records)
    assert {r["source"] for r in records} == {str(video)}
    for frame in (0, 2, 4, 6):
        faces = [r for r in records if r["frame"] == frame]
        assert [r["status"] for r in faces] == ["ok", "ok"] and {r["track"] for r in faces} == {1, 2}
        left = min(faces, key=lambda r: r["box"][0])
        # the person on the left keeps the left track, whichever face MTCNN lists first
        assert left["track"] == next(r["track"] for r in records if r["frame"] == 0 and r["box"][0] < 120)
        assert left["box"][2] < 120 < max(r["box"][0] for r in faces)
        for r in faces:
            assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-5) and len(r["landmarks"]) == 5
    empty = [r for r in records if r["frame"] == 8]
    assert len(empty) == 1 and empty[0]["status"] == "no_face" and empty[0]["track"] is None
    check_smoothing(records)
    # smoothing changes something: the tracks' probabilities vary from frame to frame
    assert any(r["smoothed"] != r["probabilities"] for r in records if r["track"] is not None)
    assert not list(out.glob(".*"))  # no log or temporary file left


def test_annotated_video_and_timeline(result):
    out, records = result
    with av.open(str(out / "two_people.annotated.mp4")) as container:
        frames = [(float(f.time), np.asarray(f.to_image()).astype(int)) for f in container.decode(video=0)]
    assert [t for t, _ in frames] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    assert frames[0][1].shape == (120, 240, 3)
    plain = dict(face_video_frames(**VIDEO))
    for (t, drawn), frame in zip(frames[:4], (0, 2, 4, 6)):
        for r in (r for r in records if r["frame"] == frame):
            x0, y0, x1, y1 = (round(v) for v in r["box"])
            edge = drawn[(y0 + y1) // 2, x0 - 1 : x0 + 2]  # the box's left side, drawn in red
            original = np.asarray(plain[frame / 10]).astype(int)[(y0 + y1) // 2, x0 - 1 : x0 + 2]
            assert (edge[:, 0] - edge[:, 1]).max() > 80 > (original[:, 0] - original[:, 1]).max()
    timeline = np.asarray(Image.open(out / "two_people.timeline.png").convert("RGB"))
    assert timeline.shape[0] > 300 and timeline.std() > 10  # two panels drawn, not an empty canvas


def test_timeline_of_a_video_without_faces_and_of_many_tracks(tmp_path):
    path = plot_timeline([{"track": None}], CLASSES, tmp_path / "empty.png")
    assert Image.open(path).size[0] > 100
    records = [{"track": k, "time": t, "probabilities": dict.fromkeys(CLASSES, 1 / 3),
                "smoothed": dict.fromkeys(CLASSES, 1 / 3)} for k in range(1, 11) for t in range(k)]
    tall = Image.open(plot_timeline(records, CLASSES, tmp_path / "ten.png", max_tracks=8)).size[1]
    assert tall > 4 * Image.open(path).size[1]


def test_tracker_associates_by_overlap_and_smooths():
    tracker = IoUTracker(ema=0.25, max_missed=1)
    a, b = [0, 0, 10, 10], [50, 0, 60, 10]
    p, q = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert [t.id for t in tracker.update([a, b], [p, q])] == [1, 2]
    moved = [[52, 1, 62, 11], [1, 0, 11, 10]]  # listed the other way round
    tracks = tracker.update(moved, [p, p])
    assert [t.id for t in tracks] == [2, 1]
    assert np.allclose(tracks[0].smoothed, 0.25 * p + 0.75 * q) and np.allclose(tracks[1].smoothed, p)
    assert [t.id for t in tracker.update([[100, 100, 110, 110]], [q])] == [3]  # no overlap: a new face
    tracker.update([], [])  # 1 and 2 now missing twice: ended
    assert [t.id for t in tracker.update([[1, 0, 11, 10]], [p])] == [4]
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3) and iou(a, b) == 0
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        IoUTracker(ema=0)


def test_resume_after_an_interruption_ends_with_the_uninterrupted_files(run, video, tmp_path, monkeypatch, capsys):
    whole = tmp_path / "whole"
    assert predict(run, [video], whole, "--batch-size", "2", "--annotate") == 0
    calls, original = [], FERModel.predict

    def stop_on_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(FERModel, "predict", stop_on_second_batch)
    assert predict(run, [video], out, "--batch-size", "2", "--annotate") == 130
    assert not (out / "two_people.jsonl").exists() and not list(out.glob("*.mp4"))
    assert len((out / ".two_people.partial.jsonl").read_text().splitlines()) == 3  # settings + 2 frames
    assert predict(run, [video], out, "--batch-size", "2") == 2  # neither --resume nor --overwrite
    assert "pass --resume" in capsys.readouterr().err
    monkeypatch.setattr(FERModel, "predict", original)
    assert predict(run, [video], out, "--batch-size", "2", "--annotate", "--resume") == 0
    assert "(2 read from the interrupted run)" in capsys.readouterr().out
    assert (out / "two_people.jsonl").read_bytes() == (whole / "two_people.jsonl").read_bytes()
    assert (out / "two_people.annotated.mp4").exists() and not list(out.glob(".*"))
    # finished: --resume keeps it, a new run needs --overwrite
    assert predict(run, [video], out, "--resume") == 0 and "kept 1 video(s)" in capsys.readouterr().out
    assert predict(run, [video], out) == 2 and "exists; pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["not a video", "photo and video", "csv", "ema", "fps", "missing", "nothing"])
def test_bad_video_input_is_one_line_and_exit_2(run, video, tmp_path, capsys, case):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    photo = tmp_path / "face.png"
    Image.new("RGB", (32, 32)).save(photo)
    inputs, extra, message = {
        "not a video": ([fake], [], "cannot read video"),
        "photo and video": ([video, photo], [], "is not a video"),
        "csv": ([video], ["--format", "csv"], "JSON lines"),
        "ema": ([video], ["--ema", "0"], "--ema must be in (0, 1]"),
        "fps": ([video], ["--fps", "-1"], "--fps must be > 0"),
        "missing": ([tmp_path / "gone.mp4"], [], "video not found"),
        "nothing": ([], [], "no input given"),
    }[case]
    assert predict(run, inputs, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


class FakeCapture:
    """cv2.VideoCapture serving the test video's frames (BGR), then nothing (or Ctrl-C)."""

    opened, interrupt = True, False

    def __init__(self, number):
        self.frames = [np.asarray(f)[:, :, ::-1] for _, f in face_video_frames(**VIDEO)]

    def isOpened(self):
        return self.opened

    def get(self, prop):
        return {0: 10.0, 1: 240, 2: 120}[prop]

    def read(self):
        if not self.frames and self.interrupt:
            raise KeyboardInterrupt
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self):
        pass


def fake_cv2(opened=True, interrupt=False):
    capture = type("Capture", (FakeCapture,), {"opened": opened, "interrupt": interrupt})
    return types.SimpleNamespace(VideoCapture=capture, CAP_PROP_FPS=0, CAP_PROP_FRAME_WIDTH=1,
                                 CAP_PROP_FRAME_HEIGHT=2, COLOR_BGR2RGB=4,
                                 cvtColor=lambda image, code: np.ascontiguousarray(image[:, :, ::-1]))


@pytest.mark.parametrize("stop", ["end", "ctrl-c"])
def test_camera_gives_the_same_records(run, tmp_path, monkeypatch, capsys, stop):
    monkeypatch.setitem(sys.modules, "cv2", fake_cv2(interrupt=stop == "ctrl-c"))
    out = tmp_path / "out"
    # the fake camera serves its frames at once: sample them all
    assert main(["predict", "--camera", "0", "--checkpoint", str(run), "--out", str(out), "--fps", "100000",
                 "--ema", str(EMA), "--face-size", "64", "--device", "cpu", "--quiet", "--annotate"]) == 0
    # Ctrl-C is how a live run ends: the records so far are written, as when the camera stops
    assert ("camera 0 stopped sending frames" in capsys.readouterr().out) == (stop == "end")
    records = [json.loads(line) for line in (out / "camera0.jsonl").read_text().splitlines()]
    assert sorted({r["frame"] for r in records}) == list(range(10)) and {r["source"] for r in records} == {"camera 0"}
    assert {r["track"] for r in records if r["frame"] < 8} == {1, 2}
    assert all(r["status"] == "no_face" for r in records if r["frame"] >= 8)
    check_smoothing(records)
    assert (out / "camera0.timeline.png").exists() and (out / "camera0.annotated.mp4").exists()


@pytest.mark.parametrize("cv2, message", [(None, "--camera needs OpenCV: pip install"),
                                          (fake_cv2(opened=False), "no camera 3")])
def test_camera_missing_is_one_line_and_exit_2(run, tmp_path, monkeypatch, capsys, cv2, message):
    monkeypatch.setitem(sys.modules, "cv2", cv2)  # None: as if OpenCV were not installed
    assert main(["predict", "--camera", "3", "--checkpoint", str(run), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
