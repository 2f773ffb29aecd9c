"""CIFAR ResNets (He et al. 2016, option-A zero-padding shortcuts) as feature extractors.

State-dict keys match the MiSLAS / ARB-Loss releases: ``conv1, bn1, layer1..3.k.{conv1,bn1,
conv2,bn2}``; option-A shortcuts hold no parameters. ``resnet32_fe`` has 463,504 parameters
and returns 64-d features; ``resnet32_fe_c100`` is its double-width form (128-d). A linear
classifier on them is :class:`models.heads.Classifier` with ``init="kaiming"`` (MiSLAS
models/resnet_cifar.py ``Classifier``).
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F


def _init_weights(m: nn.Module) -> None:
    # MiSLAS models/resnet_cifar.py ``_weights_init``: kaiming-normal convolutions
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_normal_(m.weight)


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = ZeroPadShortcut(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """Three stages of w / 2w / 4w channels (w = ``width``, 16 in He et al.), global average
    pooling, no classifier; 4w-d features."""

    def __init__(self, num_blocks: List[int], in_channels: int = 3, width: int = 16):
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(width, num_blocks[0], 1)
        self.layer2 = self._make_layer(2 * width, num_blocks[1], 2)
        self.layer3 = self._make_layer(4 * width, num_blocks[2], 2)
        self.out_dim = 4 * width
        self.apply(_init_weights)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def _depth(n: int):
    def build(in_channels: int = 3) -> ResNetCIFAR:
        return ResNetCIFAR([n, n, n], in_channels)
    build.__doc__ = f"ResNet-{6 * n + 2} for 32x32 inputs, 64-d features."
    return build


resnet8_fe = _depth(1)
resnet20_fe = _depth(3)
resnet32_fe = _depth(5)
resnet44_fe = _depth(7)
resnet56_fe = _depth(9)
resnet110_fe = _depth(18)


def resnet32_fe_c100(in_channels: int = 3) -> ResNetCIFAR:
    """ResNet-32 of twice the width (32 / 64 / 128 channels), 128-d features: the CIFAR-100
    backbone of Yang et al.'s ETF classifier (github.com/NeuralCollapseApplications/
    ImbalancedLearning, models/resnet_cifar.py ``resnet32_fe_c100``), whose simplex ETF of 100
    classes needs at least 100 feature dimensions."""
    return ResNetCIFAR([5, 5, 5], in_channels, width=32)
