"""ResNet-18 and ResNet-50 with torchvision's exact parameter and buffer names.

The module tree (``conv1``, ``bn1``, ``layer1``..``layer4`` of blocks with ``conv1``/``bn1``/...,
``downsample.0`` conv and ``downsample.1`` BN, optional ``fc``) and the registration order are those of
``torchvision.models.resnet`` (v1.5: the stride of a Bottleneck sits on its 3x3 conv), so a torchvision
``state_dict`` loads as is (:func:`load_torchvision_state_dict`). torchvision itself is not needed.

:meth:`ResNet.forward_features` returns the four stages for dense heads:

======  =======  ===========  ============
key     stride   ResNet-18    ResNet-50
======  =======  ===========  ============
res2    4        64           256
res3    8        128          512
res4    16       256          1024
res5    32       512          2048
======  =======  ===========  ============

Initialisation follows torchvision: Kaiming-normal (fan_out, ReLU) convs, BN weight 1 and bias 0, and
with ``zero_init_residual`` the last BN of every residual branch starts at weight 0 (each block starts
as an identity; SimSiam's builder switches this on).

Example:
    >>> import torch
    >>> net = resnet18()
    >>> {k: tuple(v.shape) for k, v in net.forward_features(torch.zeros(1, 3, 64, 64)).items()}
    {'res2': (1, 64, 16, 16), 'res3': (1, 128, 8, 8), 'res4': (1, 256, 4, 4), 'res5': (1, 512, 2, 2)}
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

STAGES = ("res2", "res3", "res4", "res5")


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; ``[B, in_ch, H, W] -> [B, planes, H / stride, W / stride]``."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        # Attribute order = torchvision's registration order = state_dict order.
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, v1.5), 1x1 expand x4; ``[B, in_ch, H, W] -> [B, 4 * planes, ...]``."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A torchvision-compatible ResNet trunk.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: size of the ``fc`` classifier; None leaves out ``avgpool``'s classifier (no ``fc``
            parameters), as dense self-supervised methods use the trunk only.
        zero_init_residual: start the last BN of each residual branch at weight 0.

    Attributes:
        num_features: channels of ``res5`` (512 or 2048), the width of the pooled feature.
        channels: ``{"res2": C2, ..., "res5": C5}``.
        strides: ``{"res2": 4, "res3": 8, "res4": 16, "res5": 32}``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        num_classes: int | None = None,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        self._in_ch = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(block, 64, layers[0], stride=1)
        self.layer2 = self._make_stage(block, 128, layers[1], stride=2)
        self.layer3 = self._make_stage(block, 256, layers[2], stride=2)
        self.layer4 = self._make_stage(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = 512 * block.expansion
        self.channels = {name: 64 * 2**i * block.expansion for i, name in enumerate(STAGES)}
        self.strides = {name: 4 * 2**i for i, name in enumerate(STAGES)}
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes is not None else None
        self._init_weights(zero_init_residual)

    def _make_stage(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_ch = planes * block.expansion
        downsample = None
        if stride != 1 or self._in_ch != out_ch:
            downsample = nn.Sequential(_conv1x1(self._in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
        stage = [block(self._in_ch, planes, stride, downsample)]
        self._in_ch = out_ch
        stage += [block(out_ch, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, 3, H, W]`` -> ``{"res2": [B, C2, H/4, W/4], ..., "res5": [B, C5, H/32, W/32]}``.

        Sizes are rounded up at each stride-2 step (conv padding), e.g. 33 px -> 9, 5, 3, 2.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for name, stage in zip(STAGES, (self.layer1, self.layer2, self.layer3, self.layer4), strict=True):
            x = stage(x)
            out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> class logits ``[B, num_classes]``, or the pooled ``res5`` ``[B, num_features]``
        when the model has no ``fc``."""
        pooled = torch.flatten(self.avgpool(self.forward_features(x)["res5"]), 1)
        return pooled if self.fc is None else self.fc(pooled)


def resnet18(num_classes: int | None = None, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 (11,689,512 parameters with the 1000-class ``fc``; 11,176,512 without)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, zero_init_residual)


def resnet50(num_classes: int | None = None, zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 (25,557,032 parameters with the 1000-class ``fc``; 23,508,032 without)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, zero_init_residual)


RESNETS = {"resnet18": resnet18, "resnet50": resnet50}


def load_torchvision_state_dict(model: ResNet, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a torchvision ResNet ``state_dict`` strictly, except that ``fc.*`` is dropped when ``model``
    has no ``fc`` (an ImageNet checkpoint into a trunk). Raises on any other missing or unexpected key."""
    if model.fc is None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    model.load_state_dict(state_dict, strict=True)


__all__ = ["RESNETS", "BasicBlock", "Bottleneck", "ResNet", "load_torchvision_state_dict", "resnet18", "resnet50"]
