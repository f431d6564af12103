"""``OfficialFaceBackend``: S3FD decides that a face exists, DWPose places the 68 landmarks,
BiSeNet parses the face crop (spec §6.1, §7.4)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from inference.errors import InferenceError
from inference.face_official import OFFICIAL_FILES
from inference.face_official.bisenet import FaceParser
from inference.face_official.dwpose import DWPoseLandmarker
from inference.face_official.s3fd import S3FDDetector
from inference.faces import FaceDetection

logger = logging.getLogger(__name__)


def official_file_paths(models_dir: Path) -> dict[str, Path]:
    """The first existing accepted file of each official face model.

    Raises a permanent InferenceError naming every model that has none of its files.
    """
    found: dict[str, Path] = {}
    missing: list[str] = []
    for model, candidates in OFFICIAL_FILES.items():
        paths = [Path(models_dir) / rel for rel in candidates]
        existing = [path for path in paths if path.is_file()]
        if existing:
            found[model] = existing[0]
        else:
            missing.append(f"{model} ({' or '.join(candidates)})")
    if missing:
        raise InferenceError(
            f"official face models missing from {models_dir}: {'; '.join(missing)}",
            permanent=True,
        )
    return found


class OfficialFaceBackend:
    """The upstream face stack, loaded once from ``models_dir`` onto ``device``.

    ``detect`` runs S3FD first and returns None without running DWPose when it finds no face;
    otherwise the box is S3FD's (used by preparation only as the fallback crop box) and the
    landmarks are DWPose's. ``parse`` ignores landmarks: BiSeNet segments from pixels. Not
    safe to share between threads; build one per worker.
    """

    name = "official-dwpose-s3fd-bisenet"

    def __init__(self, models_dir: Path, device: str = "cpu", *, flip_test: bool = True) -> None:
        paths = official_file_paths(Path(models_dir))
        torch_device = torch.device(device)
        self.detector = S3FDDetector.from_file(paths["s3fd"], torch_device)
        self.landmarker = DWPoseLandmarker(paths["dwpose"], device, flip_test=flip_test)
        self.parser = FaceParser.from_file(paths["face-parse-bisent"], torch_device)
        logger.info(
            "official face backend ready on %s (%s)",
            device,
            ", ".join(str(path) for path in paths.values()),
        )

    def detect(self, frame_bgr: np.ndarray) -> FaceDetection | None:
        """The first S3FD face of a ``(H, W, 3)`` uint8 BGR frame with DWPose's 68 landmarks
        (68, 2) float32 in frame pixels, or None when S3FD finds no face."""
        box = self.detector.detect(frame_bgr)
        if box is None:
            return None
        return FaceDetection(box, self.landmarker.landmarks(frame_bgr), "s3fd+dwpose")

    def parse(
        self, face_large_rgb: np.ndarray, *, landmarks: np.ndarray | None = None
    ) -> np.ndarray:
        """BiSeNet's ``(512, 512)`` uint8 class map (0..18) of a ``(H, W, 3)`` RGB crop."""
        return self.parser.parse(face_large_rgb)
