"""The student network on a reduced tiny preset: shapes, forward == forward_train, independent branches,
gradients into every branch, parameter groups and head layout.

Its ONNX export (a dynamic number of plan points, onnxruntime on other plans matching PyTorch) is tested
once, through the shipped exporter, in test/training/test_export.py: fresh point counts, a rendered frame
and two rigs with one file."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from simdistill_ros.core.classes import BOX_CODE_SIZE
from simdistill_ros.core.config import load_preset
from simdistill_ros.core.geometry import inference_image_aug
from simdistill_ros.core.model.head import HEATMAP_BIAS_INIT, split_task_output
from simdistill_ros.core.model.student import Student, StudentOutputs
from simdistill_ros.core.view_plan import BEVPoolPlan, build_bev_pool_plan

PRESET = load_preset("tiny")
GEOM = PRESET.geometry
# a smaller tiny: 3 cameras, 64 x 176 images, 12 depth bins, a 64 x 64 pooling grid (32 x 32 head cells) and
# thinner image features; what these tests check does not depend on the sizes (keeps the file fast on 2 cores)
CFG = dataclasses.replace(PRESET.model, camera_names=PRESET.model.camera_names[:3], neck_channels=32)
GEOM = dataclasses.replace(GEOM, image_size=(64, 176), resize_width=192, depth_step=4.0, bev_resolution=1.6)


def camera_ring(B: int, N: int, z_shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N nuScenes-like cameras (1600 x 900, fx 1266) spread in yaw around the ego."""
    K = torch.tensor([[1266.0, 0, 800], [0, 1266.0, 450], [0, 0, 1]], dtype=torch.float64)
    optical_to_body = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=torch.float64)
    Ts = []
    for yaw in np.linspace(0, 2 * math.pi, N, endpoint=False):
        c, s = math.cos(yaw), math.sin(yaw)
        T = torch.eye(4, dtype=torch.float64)
        T[:3, :3] = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64) @ optical_to_body
        T[:3, 3] = torch.tensor([1.0, 0.0, 1.6 + z_shift])
        Ts.append(T)
    aug, _, _ = inference_image_aug((900, 1600), GEOM)
    return K.expand(B, N, 3, 3), torch.stack(Ts).expand(B, N, 4, 4), torch.as_tensor(aug).expand(B, N, 4, 4)


def make_plan(B: int, z_shift: float = 0.0) -> BEVPoolPlan:
    return build_bev_pool_plan(GEOM, *camera_ring(B, CFG.num_cameras, z_shift))


@pytest.fixture(scope="module")
def model() -> Student:
    torch.manual_seed(0)
    return Student(CFG, GEOM).eval()


def images(B: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, CFG.num_cameras, 3, *GEOM.image_size, generator=g)


@pytest.mark.parametrize("B", [1, 2])
def test_shapes_and_forward_equals_forward_train(model: Student, B: int) -> None:
    plan = make_plan(B)
    x = images(B)
    with torch.no_grad():
        heads = model(x, plan.depth_index, plan.pixel_index, plan.cell_index)
        outs = model.forward_train(x, plan)
    assert isinstance(outs, StudentOutputs)
    Hh, Wh = GEOM.head_size
    C = CFG.context_channels
    assert outs.camera_bev.shape == (B, C, Hh, Wh)
    assert outs.sim_lidar_bev.shape == (B, C, Hh, Wh)
    assert outs.sim_lidar_proj.shape == (B, CFG.lidar_channels, Hh, Wh)
    assert outs.fused_bev.shape == (B, CFG.fuser_channels, Hh, Wh)
    fh, fw = GEOM.feature_size
    for probs in (outs.depth_probs_a, outs.depth_probs_c):
        assert probs.shape == (B, CFG.num_cameras, GEOM.num_depth_bins, fh, fw)
        torch.testing.assert_close(probs.sum(dim=2), torch.ones(B, CFG.num_cameras, fh, fw))
    assert len(heads) == len(CFG.tasks) == len(outs.heads)
    for task, h, h_train in zip(CFG.tasks, heads, outs.heads):
        assert h.shape == (B, BOX_CODE_SIZE + len(task.class_names), Hh, Wh)
        assert torch.isfinite(h).all()
        torch.testing.assert_close(h, h_train, atol=0, rtol=0)
    assert not torch.equal(outs.camera_bev, outs.sim_lidar_bev)


def test_batch_items_are_independent(model: Student) -> None:
    """Sample 1 of a batch of 2 gives the same heads as that sample alone (indices offset per sample)."""
    x = images(2, seed=3)
    plan1, plan2 = make_plan(1), make_plan(2)
    with torch.no_grad():
        both = model(x, plan2.depth_index, plan2.pixel_index, plan2.cell_index)
        alone = model(x[1:], plan1.depth_index, plan1.pixel_index, plan1.cell_index)
    for a, b in zip(both, alone):
        torch.testing.assert_close(a[1:], b, atol=1e-5, rtol=1e-4)


def test_view_transforms_are_independent(model: Student) -> None:
    a, c = model.view_transform_a, model.view_transform_c
    assert a is not c
    ids_a = {id(p) for p in a.parameters()}
    assert ids_a and ids_a.isdisjoint(id(p) for p in c.parameters())
    assert not torch.equal(a.depthnet.weight, c.depthnet.weight)


def test_training_gradients_reach_every_branch() -> None:
    torch.manual_seed(1)
    m = Student(CFG, GEOM).train()
    plan = make_plan(1)
    outs = m.forward_train(images(1), plan)
    loss = sum(h.square().mean() for h in outs.heads) + outs.sim_lidar_proj.mean() + outs.depth_probs_a[..., 0, :, :].mean()
    loss.backward()
    for name in ("backbone.conv1.weight", "neck.fpn3.0.weight", "view_transform_a.depthnet.weight",
                 "view_transform_c.depthnet.weight", "gcm.value_proj.weight", "fuser.conv.weight", "proj.0.weight"):
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_parameter_groups_partition(model: Student) -> None:
    enc = list(model.image_encoder_parameters())
    rest = list(model.other_parameters())
    assert {id(p) for p in enc} == {id(p) for p in [*model.backbone.parameters(), *model.neck.parameters()]}
    assert len(enc) + len(rest) == len(list(model.parameters()))
    assert {id(p) for p in enc}.isdisjoint(id(p) for p in rest)


def test_head_layout_and_init(model: Student) -> None:
    t = torch.arange(2 * 12 * 3).reshape(2, 12, 3, 1).float()
    parts = split_task_output(t)
    assert list(parts) == ["reg", "height", "dim", "rot", "vel", "heatmap"]
    assert [v.shape[1] for v in parts.values()] == [2, 1, 3, 2, 2, 2]
    torch.testing.assert_close(torch.cat(list(parts.values()), dim=1), t)
    for task in model.head.tasks:
        bias = task.heatmap[-1].bias
        torch.testing.assert_close(bias, torch.full_like(bias, HEATMAP_BIAS_INIT))


def test_rejects_wrong_plan_or_stride(model: Student) -> None:
    with pytest.raises(ValueError, match="plan"):
        model.forward_train(images(1), make_plan(2))
    with pytest.raises(ValueError, match="feature_stride"):
        Student(CFG, dataclasses.replace(GEOM, feature_stride=16))
