"""Detection and distillation losses (method.md section 6). Every function takes raw network tensors and
targets and returns a scalar; all arithmetic is float32 whatever the autocast dtype of the inputs.

Detection, per task: GaussianFocal(clamp(sigmoid(heat)), Y) / max(1, #peaks)
  + bbox_weight * sum(code_weights * |code - target|) at the ground-truth slots / (#objects + 1e-4).
IMD = MSE(S_c, T_c);  CMD = mean(M^2 * (P_l - T_l)^2) over B x C x H x W with M the object mask;
MMD-F = MSE(F_s, T_f);  MMD-P per task: cls = sum(QFL(z_s, sigmoid(z_t))) / max(1, #(sigmoid(z_t) > thr)),
  QFL(z, q) = BCEWithLogits(z, q) * |sigmoid(z) - q|^2; reg = sum(SmoothL1_beta(w * (c_s - c_t))) over the
  valid slots / max(1, #slots), the code weights w applied to the difference as the formula reads.
The distillation weights (IMD 1, CMD 100, MMD-F 1, MMD-P 0.25 / 0.25) are applied by the caller
(training/objective.py). Normalisers are per process and micro-batch, as mmdet3d's (so a DDP run
equals one process accumulating the same micro-batches).
Depth: BEVDepth's BCE between depth probabilities and one-hot LiDAR depth bins, summed over bins,
averaged over the feature cells that hold a LiDAR point.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from simdistill_ros.core.classes import BOX_CODE_SIZE
from simdistill_ros.core.model.head import split_task_output
from training.targets import TaskTargets

SIGMOID_CLAMP = 1e-4
FOCAL_EPS = 1e-12


def clamped_sigmoid(logits: Tensor) -> Tensor:
    """sigmoid clamped to [1e-4, 1 - 1e-4] (mmdet3d's clip_sigmoid)."""
    return torch.sigmoid(logits.float()).clamp(SIGMOID_CLAMP, 1 - SIGMOID_CLAMP)


def gaussian_focal_sum(prob: Tensor, target: Tensor, alpha: float = 2.0, gamma: float = 4.0) -> Tensor:
    """CornerNet/CenterNet gaussian focal loss summed over all elements (mmdet's GaussianFocalLoss):
    -log(p) (1 - p)^alpha at target == 1, -log(1 - p) p^alpha (1 - target)^gamma elsewhere."""
    pos = target.eq(1).float()
    pos_loss = -(prob + FOCAL_EPS).log() * (1 - prob).pow(alpha) * pos
    neg_loss = -(1 - prob + FOCAL_EPS).log() * prob.pow(alpha) * (1 - target).pow(gamma) * (1 - pos)
    return (pos_loss + neg_loss).sum()


def gather_slots(map_bchw: Tensor, index_bm: Tensor) -> Tensor:
    """Values of a B x C x H x W map at flat cell indices B x M -> B x M x C."""
    B, C = map_bchw.shape[:2]
    flat = map_bchw.reshape(B, C, -1)
    return flat.gather(2, index_bm[:, None, :].expand(B, C, index_bm.shape[1])).transpose(1, 2)


def box_code(head_bchw: Tensor) -> Tensor:
    """The 10 box-code channels of one task's head output (B x 10 x H x W)."""
    return head_bchw[:, :BOX_CODE_SIZE]


def detection_loss(heads: Sequence[Tensor], targets: Sequence[TaskTargets], code_weights: Sequence[float],
                   heatmap_weight: float = 1.0, bbox_weight: float = 0.25) -> dict[str, Tensor]:
    """CenterPoint loss; returns {'heatmap.t<i>': ..., 'bbox.t<i>': ...} per task (weights applied)."""
    out: dict[str, Tensor] = {}
    for t, (head, tgt) in enumerate(zip(heads, targets)):
        parts = split_task_output(head.float())
        prob = clamped_sigmoid(parts["heatmap"])
        num_pos = tgt.num_peaks.clamp_min(1).float()
        out[f"heatmap.t{t}"] = heatmap_weight * gaussian_focal_sum(prob, tgt.heatmap) / num_pos
        pred = gather_slots(box_code(head.float()), tgt.index)
        w = pred.new_tensor(list(code_weights)) * tgt.mask[..., None].float()
        l1 = ((pred - tgt.code).abs() * w).sum()
        out[f"bbox.t{t}"] = bbox_weight * l1 / (tgt.mask.sum().float() + 1e-4)
    return out


def feature_mse(student_bchw: Tensor, teacher_bchw: Tensor) -> Tensor:
    """Mean squared error over B x C x H x W (IMD, MMD-F)."""
    _check_same(student_bchw, teacher_bchw, "feature")
    return F.mse_loss(student_bchw.float(), teacher_bchw.float())


def masked_feature_mse(student_bchw: Tensor, teacher_bchw: Tensor, mask_b1hw: Tensor) -> Tensor:
    """CMD without its weight: mean(M^2 (student - teacher)^2) over B x C x H x W."""
    _check_same(student_bchw, teacher_bchw, "feature")
    diff = student_bchw.float() - teacher_bchw.float()
    return (mask_b1hw.float().square() * diff.square()).mean()


def quality_focal(student_logits: Tensor, teacher_prob: Tensor) -> Tensor:
    """Elementwise QFL(z, q) = BCEWithLogits(z, q) |sigmoid(z) - q|^2."""
    z = student_logits.float()
    q = teacher_prob.float()
    return F.binary_cross_entropy_with_logits(z, q, reduction="none") * (torch.sigmoid(z) - q).square()


def prediction_distill(student_heads: Sequence[Tensor], teacher_heads: Sequence[Tensor],
                       targets: Sequence[TaskTargets], code_weights: Sequence[float], prob_threshold: float,
                       beta: float) -> tuple[Tensor, Tensor]:
    """MMD-P without its weights: (classification, regression), each summed over tasks."""
    cls_total = student_heads[0].new_zeros((), dtype=torch.float32)
    reg_total = cls_total.clone()
    for s_head, t_head, tgt in zip(student_heads, teacher_heads, targets):
        _check_same(s_head, t_head, "head")
        s = split_task_output(s_head.float())
        q = torch.sigmoid(split_task_output(t_head.float())["heatmap"])
        count = (q > prob_threshold).sum().clamp_min(1).float()
        cls_total = cls_total + quality_focal(s["heatmap"], q).sum() / count
        w = s_head.new_tensor(list(code_weights), dtype=torch.float32)
        s_code = gather_slots(box_code(s_head.float()), tgt.index) * w
        t_code = gather_slots(box_code(t_head.float()), tgt.index) * w
        per_slot = F.smooth_l1_loss(s_code, t_code, beta=beta, reduction="none").sum(-1)
        mask = tgt.mask.float()
        reg_total = reg_total + (per_slot * mask).sum() / mask.sum().clamp_min(1)
    return cls_total, reg_total


def depth_bce(depth_probs_bndhw: Tensor, depth_bin_bnhw: Tensor) -> Tensor:
    """BEVDepth's depth loss without its weight: BCE(probabilities, one-hot bin) summed over bins,
    averaged over cells with a LiDAR depth (depth_bin >= 0; -1 marks cells without one)."""
    D = depth_probs_bndhw.shape[2]
    valid = depth_bin_bnhw >= 0
    probs = depth_probs_bndhw.float().permute(0, 1, 3, 4, 2)[valid]  # V x D
    onehot = F.one_hot(depth_bin_bnhw[valid], D).float()
    bce = F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), onehot, reduction="sum")
    return bce / valid.sum().clamp_min(1).float()


def _check_same(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what} distillation: student shape {tuple(a.shape)} differs from teacher {tuple(b.shape)}")
