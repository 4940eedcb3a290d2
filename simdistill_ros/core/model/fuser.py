"""ConvFuser (BEVFusion): concatenate two BEV maps along channels -> Conv3x3 -> BatchNorm -> ReLU."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvFuser(nn.Module):
    """in_channels: channels of (a, b), concatenated in that order; out_channels: fused channels."""

    def __init__(self, in_channels: tuple[int, int], out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(sum(in_channels), out_channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, a_bchw: Tensor, b_bchw: Tensor) -> Tensor:
        """a: B x Ca x H x W, b: B x Cb x H x W -> B x out_channels x H x W."""
        return self.relu(self.bn(self.conv(torch.cat([a_bchw, b_bchw], dim=1))))
