"""ResNet-18/34/50 image backbones in plain PyTorch with torchvision-compatible parameter names.

The module tree mirrors `torchvision.models.resnet` (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0,
...; Bottleneck uses the v1.5 layout with the stride on its 3x3 conv) without the classifier, so an
ImageNet state dict from torchvision or timm (`resnet50-*.pth`) loads with `load_torchvision_weights`
(its `fc.*` entries are dropped). torchvision itself is not a dependency (see design/environment.md).
The forward pass returns C3, C4, C5: the outputs of layer2, layer3, layer4 at strides 8, 16, 32.

`width` is the base channel count: the stem and layer1 have `width` planes, layer2..4 have 2x, 4x, 8x.
The default 64 is the standard ResNet (and the only width ImageNet weights exist for); narrower widths
(e.g. 16 or 32) cost about (width / 64)^2 of the FLOPs and exist for CPU-sized models such as the demo's.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x_bchw: Tensor) -> Tensor:
        identity = x_bchw if self.downsample is None else self.downsample(x_bchw)
        out = self.relu(self.bn1(self.conv1(x_bchw)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 convs with a residual connection (ResNet-50, torchvision v1.5)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x_bchw: Tensor) -> Tensor:
        identity = x_bchw if self.downsample is None else self.downsample(x_bchw)
        out = self.relu(self.bn1(self.conv1(x_bchw)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# depth -> (block type, blocks per stage)
RESNET_SPECS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """ResNet trunk without pooling/classifier. forward: images B x 3 x H x W -> (C3, C4, C5) at
    strides 8, 16, 32 with `out_channels` channels: (2w, 4w, 8w) x expansion for base width w, i.e.
    (128, 256, 512) or (512, 1024, 2048) at the standard w = 64."""

    def __init__(self, depth: int, width: int = 64) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(RESNET_SPECS)}")
        if width < 1:
            raise ValueError(f"ResNet width must be positive, got {width}")
        block, layers = RESNET_SPECS[depth]
        self.depth = depth
        self.width = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._in_channels = width
        self.layer1 = self._make_layer(block, width, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        e = block.expansion
        self.out_channels: tuple[int, int, int] = (2 * width * e, 4 * width * e, 8 * width * e)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_channels = planes * block.expansion
        downsample: nn.Module | None = None
        if stride != 1 or self._in_channels != out_channels:
            downsample = nn.Sequential(conv1x1(self._in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
        layers: list[nn.Module] = [block(self._in_channels, planes, stride, downsample)]
        self._in_channels = out_channels
        layers += [block(out_channels, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, images_b3hw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images_b3hw))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5


def load_torchvision_weights(model: ResNet, state_dict: Mapping[str, Tensor]) -> None:
    """Load a torchvision/timm ResNet ImageNet state dict into `model` (strict).

    `fc.*` entries are dropped; a `module.` prefix (DataParallel) is stripped. State dicts saved before
    BatchNorm tracked `num_batches_tracked` load too (BatchNorm fills it in). Raises ValueError listing
    missing keys, unexpected keys and shape mismatches.
    """
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in sd if k not in own)
    mismatched = sorted(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                        for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape))
    if missing or unexpected or mismatched:
        width = "" if model.width == 64 else f" (width {model.width}; ImageNet weights fit width 64 only)"
        parts = [f"cannot load ResNet-{model.depth} weights{width}:"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched)}")
        raise ValueError("\n".join(parts))
    with torch.no_grad():
        model.load_state_dict(sd, strict=True)
