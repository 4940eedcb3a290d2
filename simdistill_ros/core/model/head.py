"""CenterPoint CenterHead: a shared Conv3x3 then, per task group, separate conv branches.

Each task's output is ONE tensor B x (10 + n_cls) x H x W with channels in the fixed order of
simdistill_ros.core.classes (BOX_CODE_SIZE): reg (dx, dy) 2 | height (z centre) 1 | dim (log l, w, h) 3 |
rot (sin, cos) 2 | vel (vx, vy) 2 | heatmap logits n_cls. Each branch is Conv3x3 -> BN -> ReLU -> Conv3x3
(with bias); the heatmap bias starts at -2.19 (prior probability ~0.1).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from simdistill_ros.core.classes import BOX_CODE_SIZE
from simdistill_ros.core.model.neck import conv_bn_relu

HEATMAP_BIAS_INIT = -2.19
# (name, channels) of the box code, in output order; the heatmap (n_cls channels) follows.
BOX_BRANCHES: tuple[tuple[str, int], ...] = (("reg", 2), ("height", 1), ("dim", 3), ("rot", 2), ("vel", 2))
assert sum(c for _, c in BOX_BRANCHES) == BOX_CODE_SIZE


def _branch(in_channels: int, hidden_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(in_channels, hidden_channels, 3),
                         nn.Conv2d(hidden_channels, out_channels, kernel_size=3, padding=1, bias=True))


class TaskHead(nn.Module):
    """Branches of one task group: box code (10 channels) + heatmap (num_classes)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.branches = nn.ModuleDict({name: _branch(in_channels, in_channels, c) for name, c in BOX_BRANCHES})
        self.heatmap = _branch(in_channels, in_channels, num_classes)
        final = self.heatmap[-1]
        assert isinstance(final, nn.Conv2d) and final.bias is not None
        nn.init.constant_(final.bias, HEATMAP_BIAS_INIT)

    def forward(self, x_bchw: Tensor) -> Tensor:
        outs = [self.branches[name](x_bchw) for name, _ in BOX_BRANCHES]
        outs.append(self.heatmap(x_bchw))
        return torch.cat(outs, dim=1)


class CenterHead(nn.Module):
    """in_channels: decoder output channels; head_channels: shared conv output (64 at paper scale);
    classes_per_task: n_cls of each task group, in task order."""

    def __init__(self, in_channels: int, head_channels: int, classes_per_task: tuple[int, ...]) -> None:
        super().__init__()
        self.shared_conv = conv_bn_relu(in_channels, head_channels, 3)
        self.tasks = nn.ModuleList(TaskHead(head_channels, n) for n in classes_per_task)

    def forward(self, bev_bchw: Tensor) -> tuple[Tensor, ...]:
        """Returns one B x (10 + n_cls_t) x H x W tensor per task."""
        x = self.shared_conv(bev_bchw)
        return tuple(task(x) for task in self.tasks)


def split_task_output(t_bchw: Tensor) -> dict[str, Tensor]:
    """Split one task's head tensor (B x (10 + n_cls) x H x W) into reg, height, dim, rot, vel, heatmap."""
    out: dict[str, Tensor] = {}
    c0 = 0
    for name, c in BOX_BRANCHES:
        out[name] = t_bchw[:, c0:c0 + c]
        c0 += c
    out["heatmap"] = t_bchw[:, c0:]
    return out
