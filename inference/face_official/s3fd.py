"""S3FD face detector (face-alignment's ``s3fd``), as MuseTalk uses it (spec §6.1).

The network keeps the official attribute names so that ``s3fd-619a316812.pth`` loads with a
strict key match. Detection follows the upstream batch path
(``FaceAlignment.get_detections_for_batch`` -> ``batch_detect`` -> ``nms``):

1. the BGR frame is flipped to RGB and [104, 117, 123] is subtracted [quirk: these are Caffe's
   BGR means, applied upstream to RGB];
2. the full-resolution frame goes through the network once; the 6 heads have strides
   4, 8, ..., 128 and square priors of side 4x the stride, centred at ``stride/2 + i*stride``;
3. head scores are a softmax over (background, face), the first head's background being the
   max of its 3 background maps ("max-out"); priors scoring > 0.05 are decoded with variances
   (0.1, 0.2);
4. NMS at IoU 0.3, then boxes scoring > 0.5 are kept and the first (highest) one is taken,
   clipped at 0 and truncated to int. Right and bottom edges are not clipped.

Unlike upstream, nothing is downloaded and ``cudnn.benchmark`` is not switched on globally.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inference.face_official.checkpoints import load_strict

S3FD_MEAN = (104.0, 117.0, 123.0)
VARIANCES = (0.1, 0.2)
CANDIDATE_SCORE = 0.05  # priors below this never reach NMS (upstream pre-filter)
NMS_THRESHOLD = 0.3
SCORE_THRESHOLD = 0.5
HEAD_STRIDES = (4, 8, 16, 32, 64, 128)

Box = tuple[int, int, int, int]


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (``weight``)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = 1e-10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W) -> same shape, each pixel's channel vector scaled to ``weight``."""
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=kernel, stride=stride, padding=padding)


class S3FDNet(nn.Module):
    """VGG-16 trunk + 2 extra stages + 6 (conf, loc) heads; official key names."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1_1, self.conv1_2 = _conv(3, 64), _conv(64, 64)
        self.conv2_1, self.conv2_2 = _conv(64, 128), _conv(128, 128)
        self.conv3_1, self.conv3_2, self.conv3_3 = _conv(128, 256), _conv(256, 256), _conv(256, 256)
        self.conv4_1, self.conv4_2, self.conv4_3 = _conv(256, 512), _conv(512, 512), _conv(512, 512)
        self.conv5_1, self.conv5_2, self.conv5_3 = _conv(512, 512), _conv(512, 512), _conv(512, 512)
        self.fc6 = _conv(512, 1024, padding=3)
        self.fc7 = _conv(1024, 1024, kernel=1, padding=0)
        self.conv6_1 = _conv(1024, 256, kernel=1, padding=0)
        self.conv6_2 = _conv(256, 512, stride=2)
        self.conv7_1 = _conv(512, 128, kernel=1, padding=0)
        self.conv7_2 = _conv(128, 256, stride=2)
        self.conv3_3_norm = L2Norm(256, scale=10)
        self.conv4_3_norm = L2Norm(512, scale=8)
        self.conv5_3_norm = L2Norm(512, scale=5)
        self.conv3_3_norm_mbox_conf = _conv(256, 4)  # 3 background maps (max-out) + face
        self.conv3_3_norm_mbox_loc = _conv(256, 4)
        self.conv4_3_norm_mbox_conf, self.conv4_3_norm_mbox_loc = _conv(512, 2), _conv(512, 4)
        self.conv5_3_norm_mbox_conf, self.conv5_3_norm_mbox_loc = _conv(512, 2), _conv(512, 4)
        self.fc7_mbox_conf, self.fc7_mbox_loc = _conv(1024, 2), _conv(1024, 4)
        self.conv6_2_mbox_conf, self.conv6_2_mbox_loc = _conv(512, 2), _conv(512, 4)
        self.conv7_2_mbox_conf, self.conv7_2_mbox_loc = _conv(256, 2), _conv(256, 4)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 6 feature maps the heads read, strides 4 to 128."""
        h = F.max_pool2d(F.relu(self.conv1_2(F.relu(self.conv1_1(x)))), 2, 2)
        h = F.max_pool2d(F.relu(self.conv2_2(F.relu(self.conv2_1(h)))), 2, 2)
        f3 = F.relu(self.conv3_3(F.relu(self.conv3_2(F.relu(self.conv3_1(h))))))
        f4 = F.relu(self.conv4_3(F.relu(self.conv4_2(F.relu(self.conv4_1(F.max_pool2d(f3, 2)))))))
        f5 = F.relu(self.conv5_3(F.relu(self.conv5_2(F.relu(self.conv5_1(F.max_pool2d(f4, 2)))))))
        f7 = F.relu(self.fc7(F.relu(self.fc6(F.max_pool2d(f5, 2, 2)))))
        f6_2 = F.relu(self.conv6_2(F.relu(self.conv6_1(f7))))
        f7_2 = F.relu(self.conv7_2(F.relu(self.conv7_1(f6_2))))
        return [self.conv3_3_norm(f3), self.conv4_3_norm(f4), self.conv5_3_norm(f5), f7, f6_2, f7_2]

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``x`` (B, 3, H, W) mean-subtracted -> 6 (conf (B, 2, h, w), loc (B, 4, h, w)) pairs."""
        heads = [
            (self.conv3_3_norm_mbox_conf, self.conv3_3_norm_mbox_loc),
            (self.conv4_3_norm_mbox_conf, self.conv4_3_norm_mbox_loc),
            (self.conv5_3_norm_mbox_conf, self.conv5_3_norm_mbox_loc),
            (self.fc7_mbox_conf, self.fc7_mbox_loc),
            (self.conv6_2_mbox_conf, self.conv6_2_mbox_loc),
            (self.conv7_2_mbox_conf, self.conv7_2_mbox_loc),
        ]
        outputs = []
        for feature, (conf, loc) in zip(self._features(x), heads, strict=True):
            outputs.append((conf(feature), loc(feature)))
        first_conf, first_loc = outputs[0]
        background = first_conf[:, 0:3].amax(dim=1, keepdim=True)  # max-out background label
        outputs[0] = (torch.cat([background, first_conf[:, 3:4]], dim=1), first_loc)
        return outputs


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """SSD box decoding: ``loc`` (N, 4) offsets and ``priors`` (N, 4) as (cx, cy, w, h) ->
    (N, 4) boxes (x1, y1, x2, y2) in pixels, variances (0.1, 0.2)."""
    centers = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    return torch.cat([centers - sizes / 2, centers + sizes / 2], dim=1)


def head_candidates(
    conf: torch.Tensor, loc: torch.Tensor, stride: int, min_score: float = CANDIDATE_SCORE
) -> np.ndarray:
    """Decoded boxes of one head: ``conf`` (1, 2, h, w) logits, ``loc`` (1, 4, h, w) ->
    (K, 5) float64 rows (x1, y1, x2, y2, score) for the priors scoring above ``min_score``,
    in row-major prior order."""
    scores = F.softmax(conf.float(), dim=1)[0, 1]
    rows, cols = torch.nonzero(scores > min_score, as_tuple=True)
    if rows.numel() == 0:
        return np.zeros((0, 5))
    centers_x = stride / 2 + cols.double() * stride
    centers_y = stride / 2 + rows.double() * stride
    side = torch.full_like(centers_x, 4.0 * stride)
    priors = torch.stack([centers_x, centers_y, side, side], dim=1)
    boxes = decode_boxes(loc[0][:, rows, cols].T.double(), priors)  # (K, 4)
    return torch.cat([boxes, scores[rows, cols].double()[:, None]], dim=1).cpu().numpy()


def candidates(outputs: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """All heads' candidate boxes, (K, 5) rows (x1, y1, x2, y2, score), head by head."""
    parts = [
        head_candidates(conf, loc, stride)
        for (conf, loc), stride in zip(outputs, HEAD_STRIDES, strict=True)
    ]
    return np.concatenate(parts, axis=0)


def nms(dets: np.ndarray, threshold: float = NMS_THRESHOLD) -> list[int]:
    """Greedy NMS over (K, 5) rows, highest score first; returns kept row indices in that order.

    Areas use the upstream ``+1`` pixel convention; a box is dropped when its IoU with a kept
    box exceeds ``threshold``. Equal scores keep the later row first (upstream reverses an
    ascending argsort).
    """
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores, kind="stable")[::-1]
    keep: list[int] = []
    while order.size > 0:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        width = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        height = np.maximum(
            0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1
        )
        inter = width * height
        overlap = inter / (areas[best] + areas[rest] - inter)
        order = rest[overlap <= threshold]
    return keep


def select_face(dets: np.ndarray) -> Box | None:
    """The upstream pick from (K, 5) candidates: NMS 0.3, score > 0.5, first box, clipped at 0
    and truncated to int; None when nothing passes."""
    if len(dets) == 0:
        return None
    kept = [dets[i] for i in nms(dets, NMS_THRESHOLD) if dets[i, 4] > SCORE_THRESHOLD]
    if not kept:
        return None
    x1, y1, x2, y2 = (int(v) for v in np.clip(kept[0][:4], 0, None))
    return (x1, y1, x2, y2)


class S3FDDetector:
    """Loads ``s3fd-619a316812.pth`` strictly and finds the most confident face in a frame."""

    def __init__(self, net: S3FDNet, device: torch.device) -> None:
        self.net = net.to(device).eval().requires_grad_(False)
        self.device = device

    @classmethod
    def from_file(cls, path: Path, device: torch.device) -> S3FDDetector:
        return cls(load_strict(S3FDNet(), Path(path), "S3FD"), device)

    def preprocess(self, frame_bgr: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 BGR -> (1, 3, H, W) float32 RGB minus [104, 117, 123]."""
        rgb = frame_bgr[..., ::-1].astype(np.float32) - np.array(S3FD_MEAN, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]

    def detect(self, frame_bgr: np.ndarray) -> Box | None:
        """The first face box (x1, y1, x2, y2) of a ``(H, W, 3)`` uint8 BGR frame, or None."""
        with torch.inference_mode():
            outputs = self.net(self.preprocess(frame_bgr).to(self.device))
        return select_face(candidates(outputs))
