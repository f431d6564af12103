"""The official MuseTalk face models: DWPose landmarks, S3FD boxes, BiSeNet parsing (spec §6.1,
§7.4), used when their weights are in MODELS_DIR.

Modules: :mod:`.s3fd`, :mod:`.bisenet` (torch, official state_dict key names), :mod:`.dwpose`
(onnxruntime, imported only when a model is built) and :mod:`.backend`
(``OfficialFaceBackend``). This package module deliberately imports none of them, so
``inference.faces`` can read :data:`OFFICIAL_FILES` without an import cycle.
"""

from __future__ import annotations

# Accepted files per model, relative to MODELS_DIR, in order of preference. DWPose must be the
# ONNX export from HF yzd-v/DWPose (the mmpose .pth needs mmcv/mmpose, which are not used);
# S3FD is named as in face-alignment's download or as upstream's local fallback. BiSeNet needs
# only 79999_iter.pth: it holds every tensor, including the ResNet-18 backbone that upstream
# first initialises from resnet18-5c106cde.pth and then overwrites.
OFFICIAL_FILES: dict[str, tuple[str, ...]] = {
    "dwpose": ("dwpose/dw-ll_ucoco_384.onnx",),
    "face-parse-bisent": ("face-parse-bisent/79999_iter.pth",),
    "s3fd": ("s3fd/s3fd-619a316812.pth", "s3fd/s3fd.pth"),
}
