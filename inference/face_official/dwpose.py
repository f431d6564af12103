"""DWPose whole-body keypoints (RTMPose-l, 133 points) via onnxruntime; the 68 face landmarks.

Runs the ONNX export ``dw-ll_ucoco_384.onnx`` (HF ``yzd-v/DWPose``): input (1, 3, 384, 288)
normalised RGB, outputs ``simcc_x`` (1, 133, 576) and ``simcc_y`` (1, 133, 768). Pre- and
post-processing reproduce mmpose's ``inference_topdown`` as MuseTalk calls it (spec §6.1):

* no person box: the whole frame ``[0, 0, W, H]`` is the box; centre = its middle, scale =
  its size x 1.25, then widened or heightened to the model's 3:4 (w:h) aspect;
* affine warp (no rotation) of the BGR frame to 288x384 (bilinear, black border), BGR -> RGB,
  ImageNet mean/std on the 0..255 scale;
* flip test (mmpose ``test_cfg.flip_test=True``): the warped input is also run mirrored; its
  SimCC vectors are re-indexed with the mirror pairs and reversed along x, then averaged with
  the plain ones. Only the face rows are needed, and face points mirror onto face points;
* SimCC decoding: per keypoint the argmax bin over x and over y divided by the split ratio
  2.0; a keypoint whose smaller maximum is <= 0 is placed at bin -1 (mmpose's rule);
* back to frame pixels: ``k / input_size * scale + center - scale / 2``; rows 23..90 are the
  68 iBUG landmarks, truncated like upstream's ``astype(np.int32)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inference.errors import InferenceError

logger = logging.getLogger(__name__)

INPUT_W, INPUT_H = 288, 384
SPLIT_RATIO = 2.0
BOX_PADDING = 1.25
NUM_KEYPOINTS = 133
FACE_FIRST = 23  # COCO-WholeBody: 17 body + 6 feet, then 68 face, 21 + 21 hands
PIXEL_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 scale
PIXEL_STD = (58.395, 57.12, 57.375)
SIMCC_X_BINS, SIMCC_Y_BINS = int(INPUT_W * SPLIT_RATIO), int(INPUT_H * SPLIT_RATIO)

# iBUG 68 mirror pairs (COCO-WholeBody "swap" entries of face-0..face-67); unlisted points
# (nose bridge 27-30, nostril 33, lip midpoints 51, 57, 62, 66, chin 8) mirror onto themselves.
_FACE_PAIRS = (
    *((i, 16 - i) for i in range(8)),
    *((17 + i, 26 - i) for i in range(5)),
    (31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67),
)  # fmt: skip


def face_mirror_indices() -> np.ndarray:
    """(68,) int: the face point each face point becomes in a mirrored image."""
    mirror = np.arange(68)
    for a, b in _FACE_PAIRS:
        mirror[a], mirror[b] = b, a
    return mirror


def box_center_scale(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre (2,) and scale (2,) of the whole-frame box, padded 1.25x and fixed to 3:4."""
    center = np.array([width * 0.5, height * 0.5], dtype=np.float64)
    w, h = width * BOX_PADDING, height * BOX_PADDING
    aspect = INPUT_W / INPUT_H
    scale = np.array([w, w / aspect] if w > h * aspect else [h * aspect, h], dtype=np.float64)
    return center, scale


def warp_matrix(center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(2, 3) affine from frame pixels to model-input pixels (mmpose ``get_warp_matrix``,
    rotation 0): the box centre goes to the input centre, the box width to the input width."""
    k = INPUT_W / scale[0]
    return np.array(
        [[k, 0.0, INPUT_W * 0.5 - k * center[0]], [0.0, k, INPUT_H * 0.5 - k * center[1]]]
    )


def preprocess(frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(H, W, 3)`` uint8 BGR -> input (1, 3, 384, 288) float32, centre (2,), scale (2,)."""
    height, width = frame_bgr.shape[:2]
    center, scale = box_center_scale(width, height)
    warped = cv2.warpAffine(
        frame_bgr, warp_matrix(center, scale), (INPUT_W, INPUT_H), flags=cv2.INTER_LINEAR
    )
    rgb = warped[..., ::-1].astype(np.float32)
    normalised = (rgb - np.array(PIXEL_MEAN, np.float32)) / np.array(PIXEL_STD, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None]), center, scale


def flip_average(
    simcc_x: np.ndarray, simcc_y: np.ndarray, flip_x: np.ndarray, flip_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Average face SimCC vectors (68, bins) with those of the mirrored input.

    mmpose ``flip_vectors``: the mirrored run's rows are swapped to their mirror partner and
    its x vectors reversed (no half-pixel shift), then both runs are averaged.
    """
    mirror = face_mirror_indices()
    return (simcc_x + flip_x[mirror, ::-1]) * 0.5, (simcc_y + flip_y[mirror]) * 0.5


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, X) and (K, Y) SimCC vectors -> keypoints (K, 2) in input pixels and scores (K,).

    Argmax per axis over split-ratio bins; a keypoint whose weaker axis maximum is <= 0 gets
    bin -1 on both axes, as mmpose's ``get_simcc_maximal`` does.
    """
    locs = np.stack([simcc_x.argmax(axis=1), simcc_y.argmax(axis=1)], axis=1).astype(np.float32)
    scores = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1))
    locs[scores <= 0] = -1
    return locs / SPLIT_RATIO, scores


def to_frame(keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(K, 2) input-pixel keypoints -> frame pixels (mmpose ``add_pred_to_datasample``)."""
    size = np.array([INPUT_W, INPUT_H], dtype=np.float64)
    return keypoints / size * scale + center - 0.5 * scale


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise InferenceError(
            "the official face backend needs the 'onnxruntime' package to run DWPose "
            "(dwpose/dw-ll_ucoco_384.onnx); install onnxruntime or remove the official face "
            "weights to use the offline backend",
            permanent=True,
        ) from exc
    return onnxruntime


class DWPoseLandmarker:
    """68 face landmarks from DWPose (ONNX) on the whole frame; one session per instance."""

    def __init__(self, onnx_path: Path, device: str = "cpu", *, flip_test: bool = True) -> None:
        ort = _import_onnxruntime()
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise InferenceError(f"DWPose ONNX model not found at {onnx_path}", permanent=True)
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(onnx_path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceError(
                f"DWPose ONNX model at {onnx_path} cannot be loaded: {exc}", permanent=True
            ) from exc
        self.input_name = self._check_input(onnx_path)
        self.output_names = self._output_names(onnx_path)
        self.flip_test = flip_test
        logger.info("DWPose loaded from %s (providers %s)", onnx_path, providers)

    def _check_input(self, path: Path) -> str:
        inputs = self.session.get_inputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        expected = (1, 3, INPUT_H, INPUT_W)
        # Dynamic dimensions come back as names or None; only fixed ones can disagree.
        fixed = [dim if isinstance(dim, int) else want for dim, want in zip(shape, expected)]
        if len(shape) != 4 or tuple(fixed) != expected:
            raise InferenceError(
                f"DWPose ONNX model at {path} takes {shape}; expected one input "
                f"(1, 3, {INPUT_H}, {INPUT_W})",
                permanent=True,
            )
        return inputs[0].name

    def _output_names(self, path: Path) -> list[str]:
        names = [output.name for output in self.session.get_outputs()]
        if {"simcc_x", "simcc_y"} <= set(names):
            return ["simcc_x", "simcc_y"]
        if len(names) == 2:  # an export with generic names: x first, as mmdeploy orders them
            return names
        raise InferenceError(
            f"DWPose ONNX model at {path} has outputs {names}; expected simcc_x and simcc_y",
            permanent=True,
        )

    def _face_simcc(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run once; face rows of simcc_x (68, 576) and simcc_y (68, 768)."""
        simcc_x, simcc_y = self.session.run(self.output_names, {self.input_name: tensor})
        expected = ((1, NUM_KEYPOINTS, SIMCC_X_BINS), (1, NUM_KEYPOINTS, SIMCC_Y_BINS))
        if (simcc_x.shape, simcc_y.shape) != expected:
            raise InferenceError(
                f"DWPose returned shapes {simcc_x.shape} and {simcc_y.shape}; expected "
                f"{expected[0]} and {expected[1]}",
                permanent=True,
            )
        face = slice(FACE_FIRST, FACE_FIRST + 68)
        return simcc_x[0, face].astype(np.float32), simcc_y[0, face].astype(np.float32)

    def landmarks(self, frame_bgr: np.ndarray) -> np.ndarray:
        """The 68 face landmarks of a ``(H, W, 3)`` uint8 BGR frame, (68, 2) float32 (x, y),
        truncated toward zero like upstream's int32 cast."""
        tensor, center, scale = preprocess(frame_bgr)
        simcc_x, simcc_y = self._face_simcc(tensor)
        if self.flip_test:
            flip_x, flip_y = self._face_simcc(np.ascontiguousarray(tensor[..., ::-1]))
            simcc_x, simcc_y = flip_average(simcc_x, simcc_y, flip_x, flip_y)
        keypoints, _ = decode_simcc(simcc_x, simcc_y)
        return np.trunc(to_frame(keypoints, center, scale)).astype(np.float32)
