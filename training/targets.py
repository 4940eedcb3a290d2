"""CenterPoint training targets, built per batch on the training device: per task group a gaussian
heatmap and up to max_objects regression slots (cell index, 10-vector box code, mask).

Follows mmdet3d's CenterHead.get_targets_single (method.md section 4): a box's centre lies at the
continuous head-cell coordinate (cx, cy) (core.box_coding), its integer cell is (floor(cy), floor(cx));
the gaussian radius is CornerNet's `gaussian_radius((length, width) in head cells, overlap)` floored to
an integer and at least min_radius; the gaussian exp(-(dx^2 + dy^2) / (2 sigma^2)), sigma = (2r + 1) / 6,
is drawn on the (2r + 1)^2 window around the integer cell and merged with max. Boxes whose cell is off
the grid get neither a peak nor a slot. Only the first max_objects boxes of a task count (as mmdet3d).
Everything is vectorised over boxes (one window per box, scatter-max into the heatmap): no Python loop
over objects.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from simdistill_ros.core.box_coding import encode_boxes
from simdistill_ros.core.classes import BOX_CODE_SIZE, TaskSpec
from simdistill_ros.core.config import GeometryConfig
from training.config import TargetConfig


@dataclass(frozen=True)
class TaskTargets:
    """Targets of one task group for a batch.

    heatmap: B x n_cls x Hh x Wh in [0, 1] (1 exactly at each object's cell);
    index: B x M int64 flat cell index row * Wh + col of each slot; code: B x M x 10 box codes;
    mask: B x M bool, True for slots holding an object (M = max_objects).
    """

    heatmap: Tensor
    index: Tensor
    code: Tensor
    mask: Tensor

    @property
    def num_peaks(self) -> Tensor:
        return (self.heatmap == 1).sum()


def gaussian_radius(length: Tensor, width: Tensor, min_overlap: float) -> Tensor:
    """CornerNet's radius (as in CenterPoint/mmdet3d) for boxes of length x width cells: the smallest of
    the three radii at which a corner-shifted box still overlaps the original by min_overlap."""
    a1, b1 = 1.0, length + width
    c1 = width * length * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (length + width)
    c2 = (1 - min_overlap) * width * length
    r2 = (b2 + torch.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (length + width)
    c3 = (min_overlap - 1) * width * length
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def _first_k_per_sample(select_bm: Tensor, k: int) -> Tensor:
    """select_bm restricted to the first k True entries of each row."""
    return select_bm & (torch.cumsum(select_bm.long(), dim=1) <= k)


def build_task_targets(gt_boxes_bm9: Tensor, gt_labels_bm: Tensor, class_offset: int, num_classes: int,
                       geometry: GeometryConfig, cfg: TargetConfig) -> TaskTargets:
    """Targets of one task whose classes are the global labels class_offset .. class_offset + num_classes - 1.

    gt_boxes_bm9: B x M x 9 (x, y, z_centre, l, w, h, yaw, vx, vy) in the (augmented) ego frame;
    gt_labels_bm: B x M int64 global class indices, -1 for padding.
    """
    B = gt_boxes_bm9.shape[0]
    H, W = geometry.head_size
    device = gt_boxes_bm9.device
    boxes = gt_boxes_bm9.float()
    local = gt_labels_bm - class_offset
    in_task = (gt_labels_bm >= 0) & (local >= 0) & (local < num_classes)
    cell_rc, code = _encode(boxes, geometry)
    cell_rc = cell_rc.reshape(B, -1, 2)
    code = code.reshape(B, -1, BOX_CODE_SIZE)
    on_grid = (cell_rc[..., 0] >= 0) & (cell_rc[..., 0] < H) & (cell_rc[..., 1] >= 0) & (cell_rc[..., 1] < W)
    use = _first_k_per_sample(in_task, cfg.max_objects) & on_grid

    # regression slots: the used boxes of each sample, packed to the front, at most max_objects
    M = cfg.max_objects
    slot = torch.cumsum(use.long(), dim=1) - 1
    b_idx, m_idx = use.nonzero(as_tuple=True)
    s_idx = slot[b_idx, m_idx]
    index = torch.zeros(B, M, dtype=torch.int64, device=device)
    codes = torch.zeros(B, M, BOX_CODE_SIZE, dtype=torch.float32, device=device)
    mask = torch.zeros(B, M, dtype=torch.bool, device=device)
    rc = cell_rc[b_idx, m_idx]
    index[b_idx, s_idx] = rc[:, 0] * W + rc[:, 1]
    codes[b_idx, s_idx] = code[b_idx, m_idx]
    mask[b_idx, s_idx] = True

    # heatmaps: one (2R + 1)^2 window per used box, scatter-max into B x n_cls x H x W
    heatmap = torch.zeros(B * num_classes * H * W, dtype=torch.float32, device=device)
    if b_idx.numel():
        res = geometry.head_resolution
        sel = boxes[b_idx, m_idx]
        radius = gaussian_radius(sel[:, 3] / res, sel[:, 4] / res, cfg.gaussian_overlap)
        radius = torch.clamp(torch.floor(radius), min=cfg.min_radius).long()
        R = int(radius.max())
        offsets = torch.arange(-R, R + 1, device=device)
        dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
        dy, dx = dy.reshape(1, -1), dx.reshape(1, -1)
        sigma = (2 * radius.float() + 1) / 6
        value = torch.exp(-(dx * dx + dy * dy).float() / (2 * sigma[:, None] ** 2))
        rows, cols = rc[:, 0:1] + dy, rc[:, 1:2] + dx
        r = radius[:, None]
        keep = (dy.abs() <= r) & (dx.abs() <= r) & (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
        plane = b_idx * num_classes + local[b_idx, m_idx]
        flat = (plane[:, None] * H + rows) * W + cols
        heatmap.scatter_reduce_(0, flat[keep], value[keep], reduce="amax", include_self=True)
    return TaskTargets(heatmap.reshape(B, num_classes, H, W), index, codes, mask)


def _encode(boxes_bm9: Tensor, geometry: GeometryConfig) -> tuple[Tensor, Tensor]:
    """core.box_coding.encode_boxes on every (padded) box; padding gets harmless sizes (log of 1)."""
    flat = boxes_bm9.reshape(-1, 9).clone()
    flat[:, 3:6] = flat[:, 3:6].clamp_min(1e-3)
    return encode_boxes(flat, geometry)


def build_targets(gt_boxes_bm9: Tensor, gt_labels_bm: Tensor, tasks: Sequence[TaskSpec], geometry: GeometryConfig,
                  cfg: TargetConfig) -> list[TaskTargets]:
    """Targets of every task group, in head order (labels index the tasks' concatenated classes)."""
    out: list[TaskTargets] = []
    offset = 0
    for task in tasks:
        n = len(task.class_names)
        out.append(build_task_targets(gt_boxes_bm9, gt_labels_bm, offset, n, geometry, cfg))
        offset += n
    return out


def object_mask(targets: Sequence[TaskTargets]) -> Tensor:
    """CMD's object-aware mask M (method.md section 6): the sum over all classes of the ground-truth
    gaussian heatmaps, B x 1 x Hh x Wh."""
    return torch.stack([t.heatmap.sum(dim=1) for t in targets]).sum(dim=0).unsqueeze(1)
