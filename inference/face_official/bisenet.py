"""BiSeNet face parsing (zllrunning face-parsing.PyTorch, ``79999_iter.pth``; spec §7.4).

A ResNet-18 context path with attention refinement (ARM) at 1/16 and 1/32, a global-average
branch, and a feature fusion module (FFM) that fuses the 1/8 ResNet features (they replace the
spatial path) with the refined context. Three heads exist because the checkpoint holds them
(strict loading); only the main head (``conv_out``) is evaluated, as upstream only reads it.

Upstream builds the ResNet-18 from ``resnet18-5c106cde.pth`` first and then overwrites every
tensor with ``79999_iter.pth``; loading ``79999_iter.pth`` strictly gives the same network, so
the ImageNet file is not read here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from inference.face_official.checkpoints import load_strict

PARSE_SIZE = 512
NUM_CLASSES = 19
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU; keys ``conv.*`` and ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block with torchvision key names (``downsample.0/1`` when needed)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


def _layer(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))


class ResNet18(nn.Module):
    """ResNet-18 trunk without the classifier; returns the 1/8, 1/16 and 1/32 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _layer(64, 64, 1)
        self.layer2 = _layer(64, 128, 2)
        self.layer3 = _layer(128, 256, 2)
        self.layer4 = _layer(256, 512, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (B, 128, H/8, W/8), (B, 256, H/16, W/16), (B, 512, H/32, W/32)."""
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinementModule(nn.Module):
    """Conv, then a channel gate from the globally pooled features."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, kernel_size=1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))))
        return feat * gate


class ContextPath(nn.Module):
    """ResNet-18 + ARMs + global context; returns (feat8 (128, 1/8), context at 1/8 (128))."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        # Global average of the 1/32 map; upsampling a 1x1 map with "nearest" is a broadcast.
        context = self.conv_avg(feat32.mean(dim=(2, 3), keepdim=True))
        up32 = F.interpolate(self.arm32(feat32) + context, feat16.shape[2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, feat8.shape[2:], mode="nearest")
        return feat8, self.conv_head16(up16)


class FeatureFusionModule(nn.Module):
    """Concat, 1x1 ConvBNReLU, then a squeeze-excite style gate added back (``feat*a + feat``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, kernel=1)
        self.conv1 = nn.Conv2d(cout, cout // 4, kernel_size=1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, kernel_size=1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        gate = feat.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(gate))))
        return feat * gate + feat


class BiSeNetOutput(nn.Module):
    """ConvBNReLU then a 1x1 classifier without bias."""

    def __init__(self, cin: int, mid: int, classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, classes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face parser with the official ``79999_iter.pth`` key names (``cp.*``, ``ffm.*``,
    ``conv_out*.*``). ``conv_out16``/``conv_out32`` are training-only auxiliary heads."""

    def __init__(self, classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, classes)
        self.conv_out16 = BiSeNetOutput(128, 64, classes)
        self.conv_out32 = BiSeNetOutput(128, 64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB -> main-head logits (B, classes, H, W)."""
        feat8, context8 = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))
        return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=True)


class FaceParser:
    """Runs BiSeNet on one RGB crop and returns the class map (spec §7.4)."""

    def __init__(self, net: BiSeNet, device: torch.device) -> None:
        self.net = net.to(device).eval().requires_grad_(False)
        self.device = device

    @classmethod
    def from_file(cls, path: Path, device: torch.device) -> FaceParser:
        return cls(load_strict(BiSeNet(), Path(path), "BiSeNet face parsing"), device)

    @staticmethod
    def preprocess(face_rgb: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB -> (1, 3, 512, 512) float32, PIL bilinear + ImageNet norm."""
        resized = Image.fromarray(np.ascontiguousarray(face_rgb)).resize(
            (PARSE_SIZE, PARSE_SIZE), Image.Resampling.BILINEAR
        )
        pixels: np.ndarray = np.asarray(resized, dtype=np.float32) / 255.0
        pixels = (pixels - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]

    def parse(self, face_rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB -> (512, 512) uint8 class map, values 0..18."""
        with torch.inference_mode():
            logits = self.net(self.preprocess(face_rgb).to(self.device))
        return logits[0].argmax(dim=0).to(torch.uint8).cpu().numpy()
