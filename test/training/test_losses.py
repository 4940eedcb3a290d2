"""training.losses: each distillation loss is zero for identical student and teacher tensors and positive
otherwise; CMD ignores features far from every object; focal, QFL, L1 and depth terms against direct
elementwise formulas."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from simdistill_ros.core.classes import DEFAULT_TASKS
from simdistill_ros.core.config import DetectorConfig
from training import losses as L
from training.config import PAPER_CODE_WEIGHTS, TargetConfig
from training.targets import build_targets, object_mask


def _targets(small_config: DetectorConfig, B: int = 2) -> list:
    g = small_config.geometry
    boxes = torch.zeros(B, 3, 9)
    boxes[..., :2] = torch.tensor([[-10.0, 4.0], [20.0, -15.0], [5.0, 30.0]])
    boxes[..., 3:6] = torch.tensor([4.5, 1.9, 1.6])
    labels = torch.tensor([[0, 8, 1]] * B)
    return build_targets(boxes, labels, DEFAULT_TASKS, g, TargetConfig())


def _heads(small_config: DetectorConfig, B: int = 2) -> tuple[torch.Tensor, ...]:
    H, W = small_config.geometry.head_size
    return tuple(torch.randn(B, 10 + len(t.class_names), H, W) for t in DEFAULT_TASKS)


def test_distillation_losses_vanish_only_for_identical_tensors(small_config: DetectorConfig) -> None:
    targets = _targets(small_config)
    mask = object_mask(targets)
    H, W = small_config.geometry.head_size
    feats = torch.randn(2, 16, H, W)
    other = feats + 0.1 * torch.randn_like(feats)
    heads = _heads(small_config)
    heads2 = tuple(h + 0.2 * torch.randn_like(h) for h in heads)
    assert L.feature_mse(feats, feats) == 0 and L.feature_mse(other, feats) > 0  # IMD, MMD-F
    assert L.masked_feature_mse(feats, feats, mask) == 0 and L.masked_feature_mse(other, feats, mask) > 0  # CMD
    cls, reg = L.prediction_distill(heads, heads, targets, PAPER_CODE_WEIGHTS, 0.1, 1 / 9)  # MMD-P
    assert cls.item() == pytest.approx(0.0, abs=1e-7) and reg.item() == 0.0
    cls2, reg2 = L.prediction_distill(heads2, heads, targets, PAPER_CODE_WEIGHTS, 0.1, 1 / 9)
    assert cls2 > 0 and reg2 > 0
    with pytest.raises(ValueError, match="student shape"):
        L.feature_mse(feats[:, :8], feats)


def test_cmd_ignores_features_far_from_every_object(small_config: DetectorConfig) -> None:
    targets = _targets(small_config)
    mask = object_mask(targets)
    H, W = small_config.geometry.head_size
    teacher = torch.randn(2, 32, H, W)
    student = torch.randn(2, 32, H, W)
    base = L.masked_feature_mse(student, teacher, mask)
    far = (mask == 0).expand_as(student)
    assert far.float().mean() > 0.5
    changed = student.clone()
    changed[far] = torch.randn(int(far.sum())) * 100
    assert L.masked_feature_mse(changed, teacher, mask) == base
    near = mask > 0.5
    changed[near.expand_as(student)] += 1.0
    assert L.masked_feature_mse(changed, teacher, mask) != base
    # the formula: mean over B x C x H x W of M^2 (P_l - T_l)^2
    want = (mask ** 2 * (student - teacher) ** 2).sum() / student.numel()
    torch.testing.assert_close(base, want)


def test_focal_qfl_and_l1_against_elementwise_formulas(small_config: DetectorConfig) -> None:
    targets = _targets(small_config)
    heads = _heads(small_config)
    terms = L.detection_loss(heads, targets, PAPER_CODE_WEIGHTS)
    t0, h0 = targets[0], heads[0]
    p = torch.sigmoid(h0[:, 10:]).clamp(1e-4, 1 - 1e-4)
    y = t0.heatmap
    focal = torch.where(y == 1, -torch.log(p) * (1 - p) ** 2, -torch.log(1 - p) * p ** 2 * (1 - y) ** 4).sum()
    torch.testing.assert_close(terms["heatmap.t0"], focal / max(1, int((y == 1).sum())), rtol=1e-5, atol=1e-6)
    l1 = h0.new_zeros(())
    w = torch.tensor(PAPER_CODE_WEIGHTS)
    for b in range(2):
        for m in range(t0.mask.shape[1]):
            if t0.mask[b, m]:
                r, c = divmod(int(t0.index[b, m]), h0.shape[-1])
                l1 = l1 + ((h0[b, :10, r, c] - t0.code[b, m]).abs() * w).sum()
    torch.testing.assert_close(terms["bbox.t0"], 0.25 * l1 / (t0.mask.sum() + 1e-4), rtol=1e-5, atol=1e-6)
    # QFL: binary cross-entropy written out, times |sigmoid(z) - q|^2
    z, q = torch.randn(50), torch.rand(50)
    s = torch.sigmoid(z)
    want = -(q * torch.log(s) + (1 - q) * torch.log(1 - s)) * (s - q) ** 2
    torch.testing.assert_close(L.quality_focal(z, q), want, rtol=1e-4, atol=1e-6)


def test_prediction_distill_normalisers_and_smooth_l1(small_config: DetectorConfig) -> None:
    targets = _targets(small_config, B=1)
    t_heads = _heads(small_config, B=1)
    s_heads = tuple(h.clone() for h in t_heads)
    s_heads[0][:, 0] += 0.05  # reg x of task 0 off by 0.05 everywhere: SmoothL1 quadratic zone (beta 1/9)
    cls, reg = L.prediction_distill(s_heads, t_heads, targets, PAPER_CODE_WEIGHTS, 0.1, 1 / 9)
    assert cls.item() == pytest.approx(0.0, abs=1e-7)
    assert reg.item() == pytest.approx(0.5 * 0.05 ** 2 / (1 / 9), rel=1e-4)  # one car slot, normalised by 1
    s_heads[0][:, 8] += 1.0  # vx off by 1, code weight 0.2 on the difference: 0.2 > beta -> linear zone
    _, reg2 = L.prediction_distill(s_heads, t_heads, targets, PAPER_CODE_WEIGHTS, 0.1, 1 / 9)
    assert reg2.item() - reg.item() == pytest.approx(0.2 - 0.5 / 9, rel=1e-4)


def test_depth_bce_is_one_hot_binary_cross_entropy() -> None:
    probs = torch.softmax(torch.randn(1, 2, 6, 3, 4), dim=2)
    bins = torch.full((1, 2, 3, 4), -1, dtype=torch.int64)
    bins[0, 0, 1, 2] = 3
    bins[0, 1, 0, 0] = 0
    got = L.depth_bce(probs, bins)
    a = F.binary_cross_entropy(probs[0, 0, :, 1, 2], F.one_hot(torch.tensor(3), 6).float(), reduction="sum")
    b = F.binary_cross_entropy(probs[0, 1, :, 0, 0], F.one_hot(torch.tensor(0), 6).float(), reduction="sum")
    torch.testing.assert_close(got, (a + b) / 2)
    assert math.isfinite(L.depth_bce(probs, torch.full_like(bins, -1)).item())
