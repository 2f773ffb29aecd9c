"""ImageNet ResNets (torchvision's architecture) as feature extractors without ``fc``.

Built on :class:`torchvision.models.resnet.ResNet`, so state-dict keys are torchvision's
(``conv1, bn1, layer1..4.k.{conv1..3,bn1..3,downsample.0/1}``), which are also the key names of
the MiSLAS / ARB-Loss ImageNet-LT and iNaturalist checkpoints. Parameter counts:
resnet10_fe 4,905,792 (512-d), resnet50_fe 23,508,032, resnet101_fe 42,500,160,
resnet152_fe 58,143,808 (2048-d).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn as nn
from torchvision.models import resnet as tv_resnet

Block = Type[Union[tv_resnet.BasicBlock, tv_resnet.Bottleneck]]

# name -> (block, blocks per stage, torchvision weights enum name or None)
RESNET_SPECS: Dict[str, Tuple[Block, List[int], Optional[str]]] = {
    "resnet10_fe": (tv_resnet.BasicBlock, [1, 1, 1, 1], None),
    "resnet50_fe": (tv_resnet.Bottleneck, [3, 4, 6, 3], "ResNet50_Weights"),
    "resnet101_fe": (tv_resnet.Bottleneck, [3, 4, 23, 3], "ResNet101_Weights"),
    "resnet152_fe": (tv_resnet.Bottleneck, [3, 8, 36, 3], "ResNet152_Weights"),
}


class ResNetFE(tv_resnet.ResNet):
    """torchvision's ResNet without its ``fc`` layer.

    ``pool=True`` returns globally average-pooled B x ``out_dim`` features; ``pool=False``
    returns the last stage's B x ``out_dim`` x H/32 x W/32 map (the Places-LT recipe pools
    after its extra block instead).
    """

    def __init__(self, block: Block, layers: List[int], in_channels: int = 3,
                 pool: bool = True):
        super().__init__(block, layers)
        # The classifier lives in models.LTNet; dropping fc keeps the released key set.
        del self.fc
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3,
                                   bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.out_dim = 512 * block.expansion
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.pool:
            x = torch.flatten(self.avgpool(x), 1)
        return x


def build_resnet(name: str, in_channels: int = 3, pool: bool = True) -> ResNetFE:
    """The ImageNet ResNet feature extractor ``name`` (a key of :data:`RESNET_SPECS`)."""
    block, layers, _ = RESNET_SPECS[name]
    return ResNetFE(block, layers, in_channels, pool)


def torchvision_weights(name: str):
    """torchvision's ImageNet-1k weights enum member for ``name`` (V1, the weights MiSLAS
    used), or None when torchvision has none (resnet10)."""
    enum_name = RESNET_SPECS[name][2]
    if enum_name is None:
        return None
    import torchvision.models as tvm
    return getattr(tvm, enum_name).IMAGENET1K_V1


def _builder(name: str) -> Callable[[int], ResNetFE]:
    def build(in_channels: int = 3) -> ResNetFE:
        return build_resnet(name, in_channels)
    block, layers, _ = RESNET_SPECS[name]
    build.__doc__ = (f"ImageNet ResNet ({block.__name__} {layers}) returning pooled "
                     f"{512 * block.expansion}-d features.")
    build.__name__ = name
    return build


resnet10_fe = _builder("resnet10_fe")
resnet50_fe = _builder("resnet50_fe")
resnet101_fe = _builder("resnet101_fe")
resnet152_fe = _builder("resnet152_fe")
