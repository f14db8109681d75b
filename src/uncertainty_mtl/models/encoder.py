"""Encoders with output stride 8: dilated torchvision ResNets, and a small CPU encoder."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["BACKBONES", "DilatedResNet", "SmallEncoder", "build_encoder"]

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "small")


def _dilate_basic_blocks(layer: nn.Sequential, dilation: int, previous: int) -> None:
    """Turns a stride-2 stage of BasicBlocks into a stride-1 stage dilated by ``dilation``.

    torchvision does this itself for Bottleneck ResNets (``replace_stride_with_dilation``) but
    refuses it for BasicBlocks; this follows its scheme: the first block's first convolution
    keeps the previous dilation, every later 3×3 convolution takes the new one.
    """
    blocks: list[Any] = list(layer)
    for index, block in enumerate(blocks):
        convs = [block.conv1, block.conv2]
        for position, conv in enumerate(convs):
            rate = previous if index == 0 and position == 0 else dilation
            conv.stride, conv.dilation, conv.padding = (1, 1), (rate, rate), (rate, rate)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


class DilatedResNet(nn.Module):
    """A torchvision ResNet whose last two stages are dilated (2 and 4) instead of strided, so
    the feature map is 1/8 of the input (DeepLabV3).

    Args:
        depth: 18, 34, 50 or 101.
        pretrained: load ImageNet weights through torchvision's weights API (downloads them
            into torchvision's cache the first time).
    """

    def __init__(self, depth: int, *, pretrained: bool = False) -> None:
        super().__init__()
        import torchvision.models as tvm

        builders: dict[int, tuple[Any, Any]] = {
            18: (tvm.resnet18, tvm.ResNet18_Weights),
            34: (tvm.resnet34, tvm.ResNet34_Weights),
            50: (tvm.resnet50, tvm.ResNet50_Weights),
            101: (tvm.resnet101, tvm.ResNet101_Weights),
        }
        if depth not in builders:
            raise ValueError(f"ResNet depth must be one of {sorted(builders)}, got {depth}")
        build, weights = builders[depth]
        chosen = weights.DEFAULT if pretrained else None
        if depth >= 50:
            net = build(weights=chosen, replace_stride_with_dilation=[False, True, True])
        else:
            net = build(weights=chosen)
            _dilate_basic_blocks(net.layer3, 2, 1)
            _dilate_basic_blocks(net.layer4, 4, 2)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.out_channels = 2048 if depth >= 50 else 512

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, C, H/8, W/8]``."""
        out: Tensor = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return out


def _conv_bn(c_in: int, c_out: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallEncoder(nn.Module):
    """A small encoder for CPU presets (not the paper's): three strided stages and a dilated one,
    plain 3×3 convolutions with BatchNorm, output stride 8.

    Args:
        width: channels of the first stage; the stages have ``w, 2w, 4w, 4w``.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w, stride=2),
            _conv_bn(w, w),
            _conv_bn(w, 2 * w, stride=2),
            _conv_bn(2 * w, 2 * w),
            _conv_bn(2 * w, 4 * w, stride=2),
            _conv_bn(4 * w, 4 * w),
            _conv_bn(4 * w, 4 * w, dilation=2),
            _conv_bn(4 * w, 4 * w, dilation=2),
        )
        self.out_channels = 4 * w

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, 4·width, H/8, W/8]``."""
        out: Tensor = self.features(x)
        return out


def build_encoder(name: str, *, pretrained: bool = False, width: int = 32) -> nn.Module:
    """``"resnet18"`` ... ``"resnet101"`` (dilated, optionally ImageNet weights) or ``"small"``."""
    if name == "small":
        if pretrained:
            raise ValueError("the small encoder has no pretrained weights")
        return SmallEncoder(width)
    if name.startswith("resnet") and name[6:].isdigit():
        return DilatedResNet(int(name[6:]), pretrained=pretrained)
    raise ValueError(f"unknown backbone {name!r}; expected one of {list(BACKBONES)}")
