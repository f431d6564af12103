"""A face backend for tests on machines whose OpenCV lacks face detection (OpenCV 5 moved the
Haar cascades out of the main module; GPU machines may carry such a build): a face box in the
middle of every frame and the offline backend's geometric parsing. Detection is not what the
tests that use it check."""

from __future__ import annotations

import numpy as np

from inference.faces import FaceDetection, OfflineFaceBackend, mean_shape_landmarks


class CentredFace:
    name = "test-centred"

    def __init__(self) -> None:
        self._parser = OfflineFaceBackend()  # its parsing needs no cascade

    def detect(self, frame_bgr: np.ndarray) -> FaceDetection | None:
        height, width = frame_bgr.shape[:2]
        side = width // 2
        x, y = (width - side) // 2, (height - side) // 2
        box = (x, y, x + side, y + side)
        return FaceDetection(box, mean_shape_landmarks(box), self.name)

    def parse(
        self, face_large_rgb: np.ndarray, *, landmarks: np.ndarray | None = None
    ) -> np.ndarray:
        return self._parser.parse(face_large_rgb, landmarks=landmarks)
