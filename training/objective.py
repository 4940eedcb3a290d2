"""What each stage minimises, as nn.Modules whose forward returns the named loss terms (so the module
can be wrapped in DistributedDataParallel): TeacherObjective (detection, optional depth),
StudentObjective (detection, the four distillation terms when a teacher is given, optional depth);
and FrozenTeacher, the teacher as the student stage uses it: eval mode forever, no parameter requires
grad, run under no_grad (method.md defect 4).

Term names: heatmap.t<i> / bbox.t<i> per task, imd, cmd, mmd_f, mmd_p.cls, mmd_p.reg, depth (teacher) or
depth.a / depth.c (the student's two view transforms). Every term already carries its weight; the
training loss is their sum.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from simdistill_ros.core.model.student import Student
from simdistill_ros.core.view_plan import BEVPoolPlan
from training import losses as L
from training.config import LossConfig
from training.targets import TaskTargets
from training.teacher.model import Teacher, TeacherOutputs


class FrozenTeacher(nn.Module):
    """A trained teacher that cannot change: eval mode (BatchNorm uses its running statistics and never
    updates them, whatever .train() is called with), requires_grad off, forward under no_grad."""

    def __init__(self, teacher: Teacher) -> None:
        super().__init__()
        self.teacher = teacher
        teacher.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images_bn3hw: Tensor, plan: BEVPoolPlan, points_bp5: Tensor, num_points_b: Tensor) -> TeacherOutputs:
        return self.teacher.forward_train(images_bn3hw, plan, points_bp5, num_points_b)


class TeacherObjective(nn.Module):
    """Detection loss of the teacher (and LiDAR depth supervision of its camera branch when enabled)."""

    def __init__(self, teacher: Teacher, losses: LossConfig) -> None:
        super().__init__()
        self.model = teacher
        self.losses = losses

    def forward(self, images_bn3hw: Tensor, plan: BEVPoolPlan, points_bp5: Tensor, num_points_b: Tensor,
                targets: Sequence[TaskTargets], depth_bins: Tensor | None = None) -> dict[str, Tensor]:
        out = self.model.forward_train(images_bn3hw, plan, points_bp5, num_points_b)
        cfg = self.losses
        terms = L.detection_loss(out.heads, targets, cfg.code_weights, cfg.heatmap_weight, cfg.bbox_weight)
        if cfg.depth.active and depth_bins is not None:
            terms["depth"] = cfg.depth.weight * L.depth_bce(out.depth_probs, depth_bins)
        return terms


class StudentObjective(nn.Module):
    """Detection loss of the student, plus IMD, CMD, MMD-F and MMD-P against the teacher's outputs when
    they are given (the SimDistill stage; without them this is the camera-only baseline)."""

    def __init__(self, student: Student, losses: LossConfig) -> None:
        super().__init__()
        self.model = student
        self.losses = losses

    def forward(self, images_bn3hw: Tensor, plan: BEVPoolPlan, targets: Sequence[TaskTargets],
                object_mask_b1hw: Tensor | None = None, teacher: TeacherOutputs | None = None,
                depth_bins: Tensor | None = None) -> dict[str, Tensor]:
        out = self.model.forward_train(images_bn3hw, plan)
        cfg = self.losses
        terms = L.detection_loss(out.heads, targets, cfg.code_weights, cfg.heatmap_weight, cfg.bbox_weight)
        if teacher is not None:
            if cfg.imd.active:
                terms["imd"] = cfg.imd.weight * L.feature_mse(out.camera_bev, teacher.camera_bev)
            if cfg.cmd.active:
                if object_mask_b1hw is None:
                    raise ValueError("CMD needs the object mask of the ground truth")
                terms["cmd"] = cfg.cmd.weight * L.masked_feature_mse(out.sim_lidar_proj, teacher.lidar_bev,
                                                                     object_mask_b1hw)
            if cfg.mmd_f.active:
                terms["mmd_f"] = cfg.mmd_f.weight * L.feature_mse(out.fused_bev, teacher.fused_bev)
            if cfg.mmd_p.active:
                p = cfg.mmd_p
                cls, reg = L.prediction_distill(out.heads, teacher.heads, targets, cfg.code_weights,
                                                p.prob_threshold, p.smooth_l1_beta)
                terms["mmd_p.cls"] = p.cls_weight * cls
                terms["mmd_p.reg"] = p.reg_weight * reg
        if cfg.depth.active and depth_bins is not None:
            terms["depth.a"] = cfg.depth.weight * L.depth_bce(out.depth_probs_a, depth_bins)
            terms["depth.c"] = cfg.depth.weight * L.depth_bce(out.depth_probs_c, depth_bins)
        return terms
