"""Face detection, 68-point landmarks and face parsing behind one small protocol.

Two kinds of backend are meant to exist:

* the official one (DWPose 68 landmarks + S3FD box + BiSeNet parsing, spec §6.1 and §7.4),
  :class:`inference.face_official.backend.OfficialFaceBackend`, chosen by
  :func:`select_backend` when the weights listed in :data:`OFFICIAL_FACE_FILES` are present
  (DWPose runs as ONNX through onnxruntime; no mmpose), and
* :class:`OfflineFaceBackend`, built only from what ships inside registry packages: OpenCV's
  bundled Haar cascades find the face box, a fixed mean-shape 68-point model is fitted to that
  box, and ``parse`` rasterises a CelebAMask-HQ class map from those landmarks. Its landmarks
  follow the face box, not the real mouth or eyes: good enough for the crop box and the jaw-mode
  blend mask, not for anything that needs the true mouth shape.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from inference.face_official import OFFICIAL_FILES

logger = logging.getLogger(__name__)

PARSE_SIZE = 512  # BiSeNet's working resolution; jaw-mode kernels are sized for it (spec §7.4)

# CelebAMask-HQ classes (spec §7.4). "l_"/"r_" are taken as the subject's left/right, i.e.
# l_brow/l_eye lie on the image's right-hand side (iBUG points 22-26 and 42-47).
BACKGROUND, SKIN, L_BROW, R_BROW, L_EYE, R_EYE = 0, 1, 2, 3, 4, 5
NOSE, MOUTH, UPPER_LIP, LOWER_LIP, NECK = 10, 11, 12, 13, 14

# Official face-model files, relative to MODELS_DIR (see inference.face_official): DWPose as
# the ONNX export, S3FD as named by face-alignment's download, BiSeNet's 79999_iter.pth.
OFFICIAL_FACE_FILES: dict[str, tuple[str, ...]] = OFFICIAL_FILES

# Mean 68-point face (iBUG order, 0-based) in coordinates normalised to the Haar face box:
# (0, 0) is the box's top-left corner and (1, 1) its bottom-right corner. Derived for this
# project (not copied from any dataset) from typical adult facial proportions, checked by eye
# against the Haar boxes OpenCV returns on scikit-image's astronaut and on the MuseTalk demo
# clip sun.mp4: eyes at ~0.37 of the box height and ~0.28/0.72 of its width, nose tip at
# ~0.62, mouth at ~0.80, chin slightly below the box (1.06). The jaw (0-16) is a superellipse
# (exponent 2.4) centred at (0.5, 0.40) with half-axes 0.44 x 0.66, sampled every 11.25
# degrees from the subject's right ear level (image left) to the left one.
MEAN_SHAPE_68: tuple[tuple[float, float], ...] = (
    # 0-16 jaw, image left -> chin (8) -> image right
    (0.060, 0.400), (0.067, 0.569), (0.088, 0.696), (0.123, 0.804), (0.170, 0.894),
    (0.230, 0.966), (0.302, 1.018), (0.387, 1.049), (0.500, 1.060), (0.613, 1.049),
    (0.698, 1.018), (0.770, 0.966), (0.830, 0.894), (0.877, 0.804), (0.912, 0.696),
    (0.933, 0.569), (0.940, 0.400),
    # 17-21 brow on the image left (outer -> inner), 22-26 brow on the image right (inner -> outer)
    (0.150, 0.285), (0.210, 0.255), (0.280, 0.245), (0.350, 0.255), (0.420, 0.275),
    (0.580, 0.275), (0.650, 0.255), (0.720, 0.245), (0.790, 0.255), (0.850, 0.285),
    # 27-30 nose bridge, top -> tip (29 is the crop-box anchor, spec §6.2)
    (0.500, 0.370), (0.500, 0.450), (0.500, 0.530), (0.500, 0.610),
    # 31-35 nostrils, image left -> right
    (0.420, 0.655), (0.460, 0.670), (0.500, 0.680), (0.540, 0.670), (0.580, 0.655),
    # 36-41 eye on the image left: outer corner, top x2, inner corner, bottom x2
    (0.200, 0.375), (0.245, 0.350), (0.305, 0.350), (0.355, 0.380), (0.305, 0.395), (0.245, 0.395),
    # 42-47 eye on the image right: inner corner, top x2, outer corner, bottom x2
    (0.645, 0.380), (0.695, 0.350), (0.755, 0.350), (0.800, 0.375), (0.755, 0.395), (0.695, 0.395),
    # 48-59 outer lips: left corner, upper lip -> right corner (54), lower lip back
    (0.350, 0.800), (0.395, 0.770), (0.450, 0.755), (0.500, 0.762), (0.550, 0.755), (0.605, 0.770),
    (0.650, 0.800), (0.605, 0.840), (0.550, 0.860), (0.500, 0.865), (0.450, 0.860), (0.395, 0.840),
    # 60-67 inner lips: left corner, upper inner -> right corner (64), lower inner back
    (0.370, 0.800), (0.450, 0.790), (0.500, 0.792), (0.550, 0.790), (0.630, 0.800),
    (0.550, 0.810), (0.500, 0.812), (0.450, 0.810),
)  # fmt: skip


@dataclass(frozen=True)
class FaceDetection:
    """One face: ``box`` (x1, y1, x2, y2) in pixels and ``landmarks`` (68, 2) float32 (x, y)."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    detector: str


class FaceBackend(Protocol):
    """What preparation needs from a face model stack."""

    name: str

    def detect(self, frame_bgr: np.ndarray) -> FaceDetection | None:
        """The most prominent face in a ``(H, W, 3)`` uint8 BGR frame, or None."""
        ...

    def parse(
        self, face_large_rgb: np.ndarray, *, landmarks: np.ndarray | None = None
    ) -> np.ndarray:
        """A ``(512, 512)`` uint8 CelebAMask-HQ class map of a ``(H, W, 3)`` RGB face crop.

        ``landmarks`` (68, 2) in the crop's pixel coordinates may be given; backends that
        segment from pixels (BiSeNet) ignore them, geometric backends need them.
        """
        ...


def mean_shape_landmarks(box: tuple[int, int, int, int]) -> np.ndarray:
    """Fit :data:`MEAN_SHAPE_68` to a face box; returns (68, 2) float32 pixel coordinates."""
    x1, y1, x2, y2 = box
    shape = np.asarray(MEAN_SHAPE_68, dtype=np.float32)
    scale = np.array([x2 - x1, y2 - y1], dtype=np.float32)
    return shape * scale + np.array([x1, y1], dtype=np.float32)


class OfflineFaceBackend:
    """Haar-cascade face box + mean-shape landmarks + rasterised parsing (OpenCV only).

    Detection tries OpenCV's ``frontalface_default`` cascade, then ``frontalface_alt2``, then
    ``profileface`` on the frame and on its mirror image; the largest face of the first cascade
    that finds one wins. Frames are processed independently (no temporal smoothing): each frame
    is cropped and later pasted back with its own box, so box jitter does not move the face in
    the output, and smoothing would pull boxes off a moving head. Preparation carries the last
    box over frames where nothing is found. Not safe to share between threads (OpenCV
    cascades keep scratch state); build one per worker.
    """

    name = "offline-opencv-haar"

    def __init__(self, *, max_side: int = 640, min_face_fraction: float = 0.08) -> None:
        self._loaded: list[tuple[str, cv2.CascadeClassifier]] = []
        self.max_side = max_side
        self.min_face_fraction = min_face_fraction

    @property
    def _cascades(self) -> list[tuple[str, cv2.CascadeClassifier]]:
        """The cascades, loaded on first use: an engine that only generates never needs them
        (and an OpenCV build without the objdetect module can still generate)."""
        if not self._loaded:
            import cv2.data  # the wheel's cascade folder; imported here to keep it lazy, as before

            root = Path(cv2.data.haarcascades)
            loaded = []
            for label in ("frontalface_default", "frontalface_alt2", "profileface"):
                cascade = cv2.CascadeClassifier(str(root / f"haarcascade_{label}.xml"))
                if cascade.empty():
                    raise RuntimeError(f"OpenCV's bundled cascade {label} could not be loaded")
                loaded.append((label, cascade))
            self._loaded = loaded
        return self._loaded

    def detect(self, frame_bgr: np.ndarray) -> FaceDetection | None:
        """The largest face in a ``(H, W, 3)`` uint8 BGR frame, or None."""
        gray, scale = self._prepare_gray(frame_bgr)
        min_side = max(20, int(min(gray.shape) * self.min_face_fraction))
        for label, cascade in self._cascades:
            boxes = self._run_cascade(label, cascade, gray, min_side)
            if boxes:
                x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
                box = _scaled_box((x, y, x + w, y + h), 1.0 / scale)
                return FaceDetection(box, mean_shape_landmarks(box), label)
        return None

    def _prepare_gray(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """Grayscale, histogram-equalised, downscaled so the longer side is <= max_side."""
        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        scale = min(1.0, self.max_side / max(gray.shape))
        if scale < 1.0:
            size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        return cv2.equalizeHist(gray), scale

    @staticmethod
    def _run_cascade(
        label: str, cascade: cv2.CascadeClassifier, gray: np.ndarray, min_side: int
    ) -> list[tuple[int, int, int, int]]:
        """(x, y, w, h) boxes; the profile cascade also runs mirrored for the other side."""

        def run(image: np.ndarray) -> Sequence[Sequence[int]]:
            return cascade.detectMultiScale(
                image, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
            )

        boxes = [(int(x), int(y), int(w), int(h)) for x, y, w, h in run(gray)]
        if label == "profileface":
            width = gray.shape[1]
            for x, y, w, h in run(cv2.flip(gray, 1)):
                boxes.append((int(width - x - w), int(y), int(w), int(h)))
        return boxes

    def parse(
        self, face_large_rgb: np.ndarray, *, landmarks: np.ndarray | None = None
    ) -> np.ndarray:
        """Rasterise a ``(512, 512)`` uint8 class map from landmarks in crop pixels.

        Without landmarks the face is detected in the crop itself; a crop without a face
        parses as all background.
        """
        height, width = face_large_rgb.shape[:2]
        if landmarks is None:
            found = self.detect(cv2.cvtColor(face_large_rgb, cv2.COLOR_RGB2BGR))
            if found is None:
                return np.zeros((PARSE_SIZE, PARSE_SIZE), dtype=np.uint8)
            landmarks = found.landmarks
        scale = np.array([PARSE_SIZE / width, PARSE_SIZE / height], dtype=np.float32)
        return rasterise_face_classes(np.asarray(landmarks, dtype=np.float32) * scale)


def _scaled_box(box: tuple[int, int, int, int], factor: float) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return (round(x1 * factor), round(y1 * factor), round(x2 * factor), round(y2 * factor))


def _poly(points: np.ndarray) -> list[np.ndarray]:
    return [np.round(points).astype(np.int32).reshape(-1, 1, 2)]


def _forehead_arc(lm: np.ndarray) -> np.ndarray:
    """Upper half-ellipse from jaw point 16 over the brows to jaw point 0 (12 points)."""
    left, right = lm[0], lm[16]
    center = (left + right) / 2
    half_width = float(np.linalg.norm(right - left)) / 2
    rise = (center[1] - lm[17:27, 1].min()) + 0.45 * half_width
    angles = np.linspace(0.0, np.pi, 12)
    xs = center[0] + half_width * np.cos(angles)
    ys = center[1] - rise * np.sin(angles)
    return np.stack([xs, ys], axis=1)


def _nose_polygon(lm: np.ndarray) -> np.ndarray:
    """Bridge top (narrow) widening to the nostril wings."""
    nose_width = float(lm[35, 0] - lm[31, 0])
    top = lm[27]
    flare = np.array([0.15 * nose_width, 0.0], dtype=np.float32)
    narrow = np.array([0.18 * nose_width, 0.0], dtype=np.float32)
    return np.stack(
        [top - narrow, top + narrow, lm[35] + flare, lm[34], lm[33], lm[32], lm[31] - flare]
    )


def _neck_polygon(lm: np.ndarray, size: int) -> np.ndarray:
    """Below the jaw between points 4 and 12, down to the bottom edge."""
    jaw = lm[4:13]
    return np.concatenate([jaw, [[lm[12, 0], size], [lm[4, 0], size]]])


def rasterise_face_classes(landmarks: np.ndarray, size: int = PARSE_SIZE) -> np.ndarray:
    """Draw a CelebAMask-HQ class map ``(size, size)`` uint8 from 68 landmarks in map pixels.

    Painted back to front: neck, skin (jaw contour + forehead ellipse), nose, brows, eyes,
    lips and mouth interior (spec §7.4 class ids).
    """
    lm = np.asarray(landmarks, dtype=np.float32)
    classes = np.zeros((size, size), dtype=np.uint8)
    cv2.fillPoly(classes, _poly(_neck_polygon(lm, size)), NECK)
    cv2.fillPoly(classes, _poly(np.concatenate([lm[0:17], _forehead_arc(lm)])), SKIN)
    cv2.fillPoly(classes, _poly(_nose_polygon(lm)), NOSE)
    brow_thickness = max(1, round(0.04 * float(lm[16, 0] - lm[0, 0])))
    cv2.polylines(classes, _poly(lm[17:22]), False, R_BROW, thickness=brow_thickness)
    cv2.polylines(classes, _poly(lm[22:27]), False, L_BROW, thickness=brow_thickness)
    cv2.fillPoly(classes, _poly(lm[36:42]), R_EYE)
    cv2.fillPoly(classes, _poly(lm[42:48]), L_EYE)
    cv2.fillPoly(classes, _poly(np.concatenate([lm[48:55], lm[64:59:-1]])), UPPER_LIP)
    lower = np.concatenate([lm[54:60], lm[48:49], lm[60:61], lm[67:63:-1]])
    cv2.fillPoly(classes, _poly(lower), LOWER_LIP)
    cv2.fillPoly(classes, _poly(lm[60:68]), MOUTH)
    return classes


def missing_official_face_files(models_dir: Path) -> list[str]:
    """Official face models with none of their accepted files in ``models_dir``."""
    missing = []
    for model, candidates in OFFICIAL_FACE_FILES.items():
        if not any((Path(models_dir) / rel).is_file() for rel in candidates):
            missing.append(f"{model} ({' or '.join(candidates)})")
    return missing


def select_backend(models_dir: Path, device: str = "cpu") -> FaceBackend:
    """The official backend (DWPose + S3FD + BiSeNet) on ``device`` when all of its weights
    are in ``models_dir``, else :class:`OfflineFaceBackend`; logs which one and why."""
    missing = missing_official_face_files(models_dir)
    if missing:
        logger.warning(
            "official face models not found in %s (missing: %s); using the offline OpenCV "
            "backend (Haar cascade box + mean-shape landmarks + geometric parsing)",
            models_dir,
            "; ".join(missing),
        )
        return OfflineFaceBackend()
    # Imported here: the backend module imports FaceDetection from this module.
    from inference.face_official.backend import OfficialFaceBackend

    backend = OfficialFaceBackend(Path(models_dir), device)
    logger.info("face backend: %s (weights in %s, device %s)", backend.name, models_dir, device)
    return backend
