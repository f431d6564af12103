from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.errors import InferenceError
from inference.faces import (
    BACKGROUND,
    L_BROW,
    L_EYE,
    LOWER_LIP,
    MEAN_SHAPE_68,
    MOUTH,
    NECK,
    NOSE,
    PARSE_SIZE,
    R_BROW,
    R_EYE,
    SKIN,
    UPPER_LIP,
    OfflineFaceBackend,
    mean_shape_landmarks,
    missing_official_face_files,
    rasterise_face_classes,
    select_backend,
)
from inference.media import read_video
from tests.media import SHARED_MEDIA, astronaut_bgr, noface_frame

SUN = SHARED_MEDIA / "sun.mp4"


@pytest.fixture(scope="module")
def backend() -> OfflineFaceBackend:
    return OfflineFaceBackend()


def test_it_finds_the_astronaut_face(backend: OfflineFaceBackend) -> None:
    detection = backend.detect(astronaut_bgr())

    assert detection is not None
    x1, y1, x2, y2 = detection.box
    # The face spans about x 180-270, y 65-165 in the 512x512 photo.
    assert 165 <= x1 <= 195 and 255 <= x2 <= 285
    assert 50 <= y1 <= 80 and 145 <= y2 <= 175
    assert detection.landmarks.shape == (68, 2)
    assert detection.landmarks.dtype == np.float32


def test_it_maps_a_downscaled_detection_back_to_frame_pixels(backend: OfflineFaceBackend) -> None:
    small = backend.detect(astronaut_bgr())
    large = backend.detect(cv2.resize(astronaut_bgr(), (1024, 1024)))  # over max_side=640

    assert small is not None and large is not None
    np.testing.assert_allclose(np.array(large.box), 2 * np.array(small.box), atol=12)


def test_it_finds_no_face_in_abstract_frames(backend: OfflineFaceBackend) -> None:
    for t in (0.0, 0.5, 1.0):
        assert backend.detect(noface_frame(t, (256, 320))) is None
    assert backend.detect(np.full((240, 320, 3), 128, dtype=np.uint8)) is None


@pytest.mark.skipif(not SUN.exists(), reason="shared demo media not available")
def test_it_puts_landmarks_on_the_real_face_in_sun_mp4(backend: OfflineFaceBackend) -> None:
    frame = read_video(SUN, max_frames=1).frames[0]

    detection = backend.detect(frame)

    assert detection is not None
    lm = detection.landmarks
    # Hand-measured on frame 0 (576x768): eyes ~(243, 215)/(301, 214), mouth ~(276, 272),
    # chin ~(276, 305); the mean-shape fit should land within a fraction of the face size.
    assert np.linalg.norm(lm[36:42].mean(0) - (243, 215)) < 20
    assert np.linalg.norm(lm[42:48].mean(0) - (301, 214)) < 20
    assert np.linalg.norm(lm[48:68].mean(0) - (276, 272)) < 15
    assert np.linalg.norm(lm[8] - (276, 305)) < 20


def test_it_lays_out_the_mean_shape_in_ibug_order() -> None:
    lm = np.asarray(MEAN_SHAPE_68)

    assert lm.shape == (68, 2)
    jaw = lm[0:17]
    assert np.all(np.diff(jaw[:, 0]) > 0)  # image left -> right
    assert np.argmax(jaw[:, 1]) == 8  # the chin is the lowest jaw point
    assert lm[17:22, 1].max() < lm[36:48, 1].min()  # brows above eyes
    assert lm[36:42, 0].max() < lm[27, 0] < lm[42:48, 0].min()  # eyes either side of the bridge
    assert lm[27, 1] < lm[28, 1] < lm[29, 1] < lm[30, 1] < lm[33, 1]  # nose top -> bottom
    assert lm[33, 1] < lm[51, 1] < lm[62, 1] < lm[66, 1] < lm[57, 1] < lm[8, 1]
    assert lm[48, 0] < lm[60, 0] < lm[64, 0] < lm[54, 0]  # inner lip corners inside outer


def test_it_fits_the_mean_shape_to_a_box() -> None:
    landmarks = mean_shape_landmarks((100, 50, 300, 250))

    np.testing.assert_allclose(landmarks[8], (100 + 0.5 * 200, 50 + 1.06 * 200), atol=1e-3)
    np.testing.assert_allclose(landmarks[0], (100 + 0.06 * 200, 50 + 0.4 * 200), atol=1e-3)


def test_it_rasterises_every_class_jaw_mode_needs() -> None:
    lm = mean_shape_landmarks((128, 96, 384, 352))  # a 256 px face in 512 parse space

    classes = rasterise_face_classes(lm)

    def at(point: np.ndarray) -> int:
        return int(classes[int(round(point[1])), int(round(point[0]))])

    assert classes.shape == (PARSE_SIZE, PARSE_SIZE) and classes.dtype == np.uint8
    assert at(lm[30]) == NOSE
    assert at((lm[62] + lm[66]) / 2) == MOUTH
    assert at((lm[51] + lm[62]) / 2) == UPPER_LIP
    assert at((lm[57] + lm[66]) / 2) == LOWER_LIP
    assert at(lm[36:42].mean(0)) == R_EYE and at(lm[42:48].mean(0)) == L_EYE
    assert at(lm[19]) == R_BROW and at(lm[24]) == L_BROW
    assert at((lm[3] + lm[48]) / 2) == SKIN  # cheek
    assert at((lm[19] + lm[24]) / 2 - (0, 30)) == SKIN  # forehead
    assert at(lm[8] + (0, 40)) == NECK
    assert classes[5, 5] == BACKGROUND and classes[300, 10] == BACKGROUND


def test_it_parses_a_crop_from_landmarks_in_crop_pixels(backend: OfflineFaceBackend) -> None:
    crop = np.zeros((300, 300, 3), dtype=np.uint8)
    lm = mean_shape_landmarks((75, 60, 225, 210))

    classes = backend.parse(crop, landmarks=lm)

    nose = lm[30] * (PARSE_SIZE / 300)
    assert classes[int(nose[1]), int(nose[0])] == NOSE


def test_it_parses_without_landmarks_by_detecting_in_the_crop(
    backend: OfflineFaceBackend,
) -> None:
    face_rgb = cv2.cvtColor(astronaut_bgr()[20:220, 120:330], cv2.COLOR_BGR2RGB)

    classes = backend.parse(face_rgb)
    empty = backend.parse(noface_frame(0.0, (200, 200)))

    assert (classes == SKIN).mean() > 0.1
    assert not empty.any()


def test_it_selects_the_offline_backend_and_says_what_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="inference.faces"):
        chosen = select_backend(tmp_path)

    assert isinstance(chosen, OfflineFaceBackend)
    assert chosen.name == "offline-opencv-haar"
    assert "dwpose/dw-ll_ucoco_384.onnx" in caplog.text
    assert "face-parse-bisent/79999_iter.pth" in caplog.text
    assert "offline" in caplog.text


def test_it_refuses_corrupt_official_weights_instead_of_falling_back(tmp_path: Path) -> None:
    for rel in ("dwpose/dw-ll_ucoco_384.onnx", "face-parse-bisent/79999_iter.pth", "s3fd/s3fd.pth"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"weights")

    assert missing_official_face_files(tmp_path) == []
    with pytest.raises(InferenceError) as caught:
        select_backend(tmp_path)
    assert caught.value.permanent


def test_it_lists_only_the_official_models_that_are_missing(tmp_path: Path) -> None:
    (tmp_path / "face-parse-bisent").mkdir()
    (tmp_path / "face-parse-bisent" / "79999_iter.pth").write_bytes(b"weights")

    missing = missing_official_face_files(tmp_path)

    assert [entry.split(" ")[0] for entry in missing] == ["dwpose", "s3fd"]
