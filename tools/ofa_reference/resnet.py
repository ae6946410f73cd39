"""The image backbone: stages 1-3 of a torchvision-style ResNet v1.5 (spec 3.3)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (carries the stride, v1.5) -> 1x1 with 4x expansion, BN after each conv."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) and stages 1-3 (strides 1, 2, 2).

    Stage s has bottleneck width `width * 2^(s-1)`; the output has `16 * width` channels at
    stride 16. BatchNorm uses its running statistics in eval mode.
    """

    def __init__(self, blocks: Sequence[int], width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = width
        stages = []
        for stage, (count, stride) in enumerate(zip(blocks, (1, 2, 2))):
            stage_width = width * 2 ** stage
            layer = []
            for i in range(count):
                layer.append(Bottleneck(channels, stage_width, stride if i == 0 else 1))
                channels = stage_width * Bottleneck.expansion
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3 = stages
        self.out_channels = channels

    def forward(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, 16 * width, H/16, W/16] (rounded up per stride-2 step)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer3(self.layer2(self.layer1(x)))
