"""MTCNN on a real photo that ships with scikit-image (one face, five landmarks)."""
import numpy as np
import pytest
from PIL import Image
from skimage import data

from muldml.data.faces import FaceDetector, align_face, center_square, eye_angle, rotate_points


@pytest.fixture(scope="module")
def detector():
    return FaceDetector("cpu")


@pytest.fixture(scope="module")
def astronaut():
    return Image.fromarray(data.astronaut())


def test_detects_the_one_face_with_five_landmarks(detector, astronaut):
    found = detector.detect_faces([astronaut])[0].best
    assert found.probability > 0.99 and found.landmarks.shape == (5, 2)
    x0, y0, x1, y1 = found.box
    assert 150 < x0 < x1 < 300 and 40 < y0 < y1 < 200  # her face, upper middle of the photo
    left_eye, right_eye, nose, mouth_left, mouth_right = found.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and nose[1] < mouth_left[1]


@pytest.mark.parametrize("tilt", [0, 15, -12])
def test_alignment_levels_the_eyes(detector, astronaut, tilt):
    tilted = astronaut.rotate(tilt, resample=Image.BICUBIC)
    found = detector.detect_faces([tilted])[0].best
    assert abs(eye_angle(found.landmarks)) > abs(tilt) / 2 - 3  # the tilt is really there
    aligned = align_face(tilted, found.landmarks, 236)
    assert aligned.size == (236, 236)
    again = detector.detect_faces([aligned])[0].best
    assert again is not None and again.probability > 0.99
    assert abs(eye_angle(again.landmarks)) < 3.0, eye_angle(again.landmarks)
    # The face fills the crop: its box covers most of the image, centred.
    x0, y0, x1, y1 = again.box
    assert (x1 - x0) > 0.5 * 236 and abs((x0 + x1) / 2 - 118) < 30


def test_offline_rotation_turns_the_aligned_face(detector, astronaut):
    found = detector.detect_faces([astronaut])[0].best
    turned = align_face(astronaut, found.landmarks, 236, rotation=10)
    again = detector.detect_faces([turned])[0].best
    # PIL turns counter-clockwise: the right eye (image right) rises.
    assert -14 < eye_angle(again.landmarks) < -6
    assert np.asarray(turned)[:8, :8].mean() > 20  # corners are image, not black fill


def test_no_face_found_and_centre_fallback(detector):
    blank = Image.new("RGB", (120, 80), (128, 128, 128))
    assert detector.detect_faces([blank])[0].faces == ()
    assert center_square(blank, 50).size == (50, 50)


def test_rotate_points_matches_pil():
    img = Image.new("L", (101, 101))
    img.putpixel((80, 50), 255)
    turned = img.rotate(90, center=(50, 50))
    y, x = np.unravel_index(np.argmax(np.asarray(turned)), (101, 101))
    (px, py), = rotate_points(np.array([[80.0, 50.0]]), (50, 50), 90)
    assert abs(px - x) <= 1 and abs(py - y) <= 1


def _white_square(side=100, canvas=300):
    img = Image.new("RGB", (canvas, canvas))
    lo = (canvas - side) // 2
    img.paste((255, 255, 255), (lo, lo, lo + side, lo + side))
    return img


def _white_area(img):
    return (np.asarray(img.convert("L")) > 127).sum()


@pytest.mark.parametrize("angle", [-10, -5, 5, 10, 30])
def test_no_face_fallback_keeps_the_scale_when_rotating(angle):
    # A 100-px square in a 300-px image, cropped to 90 px: 30 px wide at 0°; a turned copy was zoomed 1.5×.
    img = _white_square()
    upright = center_square(img, 90)
    columns = np.flatnonzero((np.asarray(upright.convert("L")) > 127).any(axis=0))
    assert columns[-1] - columns[0] + 1 == 30
    turned = center_square(img, 90, angle)
    assert abs(_white_area(turned) / _white_area(upright) - 1) < 0.03  # turning keeps area
    assert turned.size == (90, 90)


@pytest.mark.parametrize("angle", [-10, 5, 10])
def test_aligned_face_keeps_the_scale_when_rotating(angle):
    img = _white_square(side=50)
    # Level eyes 40 px apart, the mouth 40 px lower: a 100-px region centred on the 50-px square.
    landmarks = np.array([[130.0, 130.0], [170.0, 130.0], [150.0, 150.0], [135.0, 170.0], [165.0, 170.0]])
    upright = align_face(img, landmarks, 100)
    turned = align_face(img, landmarks, 100, rotation=angle)
    assert abs(_white_area(turned) / _white_area(upright) - 1) < 0.03


def test_detection_takes_any_image_mode_and_isolates_failures(detector, astronaut):
    # A grey photo beside colour ones (MTCNN itself needs 3 channels), a photo too small for
    # any face, and one that makes MTCNN raise: each gets its own answer.
    grey = astronaut.convert("L")
    tiny = astronaut.resize((18, 18))
    results = detector.detect_faces([grey, tiny, astronaut])
    assert results[0].best is not None and results[0].best.probability > 0.99 and results[0].error is None
    assert results[1].faces == () and results[1].error is None
    assert results[2].best is not None
    assert all(a.probability >= b.probability for a, b in zip(results[2].faces, results[2].faces[1:]))

    broken = FaceDetector.__new__(FaceDetector)  # MTCNN stand-in that raises on a red image
    broken.min_face_size = detector.min_face_size
    calls = []

    def detect(batch, landmarks):
        calls.append(len(batch))
        if any(img.size == (100, 100) and img.getpixel((0, 0)) == (255, 0, 0) for img in batch):
            raise ValueError("bad image")
        return detector.mtcnn.detect(batch, landmarks=landmarks)

    broken.mtcnn = type("M", (), {"detect": staticmethod(detect)})()
    red = Image.new("RGB", (100, 100), (255, 0, 0))
    plain = Image.new("RGB", (100, 100), (90, 90, 90))
    out = broken.detect_faces([red, plain])
    assert out[0].error == "face detection failed: ValueError: bad image" and out[1].error is None
    assert calls == [2, 1, 1]  # the batch, then each image alone
