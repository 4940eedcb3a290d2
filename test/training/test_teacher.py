"""training.teacher: the pillar encoder against a per-pillar loop, the teacher's shapes against the
student's, the frozen teacher (no gradient, BN statistics fixed) and teacher checkpoints."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from simdistill_ros.core.classes import TaskSpec
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.rig import nuscenes_like_rig
from simdistill_ros.core.geometry import inference_image_aug
from simdistill_ros.core.view_plan import build_bev_pool_plan
from training.config import LidarConfig, LossConfig, TargetConfig
from training.objective import FrozenTeacher, StudentObjective
from training.targets import build_targets, object_mask
from training.teacher.checkpoint import check_teacher_fits, load_teacher, save_teacher
from training.teacher.lidar import PillarFeatureNet
from training.teacher.model import Teacher

pytestmark = pytest.mark.usefixtures("one_thread")

LIDAR = LidarConfig(max_sweeps=2, pillar_channels=8, encoder_blocks=1)


def _inputs(cfg: DetectorConfig, B: int = 2, P: int = 300) -> tuple:
    g = cfg.geometry
    cams = nuscenes_like_rig(cfg.model.camera_names)
    K = torch.tensor(np.stack([c.K for c in cams]))[None].repeat(B, 1, 1, 1)
    T = torch.tensor(np.stack([c.cam_to_ego for c in cams]))[None].repeat(B, 1, 1, 1)
    A = torch.tensor(np.stack([inference_image_aug(c.image_size, g)[0] for c in cams]))[None].repeat(B, 1, 1, 1)
    plan = build_bev_pool_plan(g, K, T, A)
    images = torch.randn(B, len(cams), 3, *g.image_size)
    points = torch.zeros(B, P, 5)
    points[..., :2] = torch.rand(B, P, 2) * 60 - 30
    points[..., 2] = torch.rand(B, P) * 3 - 1
    points[..., 3] = torch.rand(B, P)
    num = torch.tensor([P, P // 2])
    return images, plan, points, num


def test_pillars_match_a_loop_over_pillars(small_config: DetectorConfig) -> None:
    g = small_config.geometry
    net = PillarFeatureNet(g, 6)
    with torch.no_grad():
        net.norm.running_mean.normal_()
        net.norm.running_var.uniform_(0.5, 2.0)
    net.eval()
    B, P = 2, 80
    points = torch.zeros(B, P, 5)
    points[..., :2] = torch.rand(B, P, 2) * 12 - 6  # few pillars, several points each
    points[0, :5, 0] = 60.0  # outside the grid: dropped
    points[..., 2:] = torch.rand(B, P, 3)
    num = torch.tensor([P, 50])
    got = net(points, num)
    ny, nx = g.bev_size
    want = torch.zeros(B, 6, ny, nx)
    res = g.bev_resolution
    for b in range(B):
        cells: dict[tuple[int, int], list[int]] = {}
        for i in range(int(num[b])):
            col = int(np.floor((points[b, i, 0].item() - g.x_range[0]) / res))
            row = int(np.floor((points[b, i, 1].item() - g.y_range[0]) / res))
            if 0 <= col < nx and 0 <= row < ny:
                cells.setdefault((row, col), []).append(i)
        for (row, col), idx in cells.items():
            pts = points[b, idx]
            mean = pts[:, :3].mean(0)
            cx = g.x_range[0] + (col + 0.5) * res
            cy = g.y_range[0] + (row + 0.5) * res
            dec = torch.cat([pts, pts[:, :3] - mean, (pts[:, :1] - cx), (pts[:, 1:2] - cy)], dim=1)
            f = torch.relu(net.norm(net.linear(dec)))
            want[b, :, row, col] = f.max(0).values
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_teacher_has_the_students_shapes_and_stays_frozen(small_config: DetectorConfig) -> None:
    m = dataclasses.replace(small_config.model, camera_names=small_config.model.camera_names[:2])
    g = small_config.geometry
    small_config = dataclasses.replace(small_config, model=m)
    torch.manual_seed(0)
    teacher = Teacher(m, g, LIDAR)
    # non-trivial BN statistics, so a train-mode pass would visibly move them
    for mod in teacher.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.normal_()
    frozen = FrozenTeacher(teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = Student(m, g)
    images, plan, points, num = _inputs(small_config)
    t_out = frozen(images, plan, points, num)
    s_out = student.forward_train(images, plan)
    assert t_out.camera_bev.shape == s_out.camera_bev.shape
    assert t_out.lidar_bev.shape == s_out.sim_lidar_proj.shape
    assert t_out.fused_bev.shape == s_out.fused_bev.shape
    assert [h.shape for h in t_out.heads] == [h.shape for h in s_out.heads]
    assert not t_out.fused_bev.requires_grad
    # a student step with every distillation term: no gradient reaches the teacher, its BN stats stay
    frozen.train()
    assert not teacher.training and not any(mod.training for mod in teacher.modules())
    objective = StudentObjective(student, LossConfig())
    boxes = torch.zeros(2, 2, 9)
    boxes[..., :2] = torch.tensor([[15.0, 3.0], [12.0, 8.0]])
    boxes[..., 3:6] = torch.tensor([4.5, 1.9, 1.6])
    targets = build_targets(boxes, torch.tensor([[0, 8], [0, 8]]), m.tasks, g, TargetConfig())
    t_out = frozen(images, plan, points, num)
    terms = objective(images, plan, targets, object_mask(targets), t_out)
    assert {"imd", "cmd", "mmd_f", "mmd_p.cls", "mmd_p.reg"} <= set(terms)
    sum(terms.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is not None for p in student.proj.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_teacher_checkpoint_round_trip_and_mismatches(small_config: DetectorConfig, tmp_path: Path) -> None:
    teacher = Teacher(small_config.model, small_config.geometry, LIDAR)
    path = save_teacher(tmp_path / "teacher.pt", teacher, small_config, {"epochs": 1})
    loaded, cfg, meta = load_teacher(path)
    assert cfg == small_config and meta == {"epochs": 1} and loaded.lidar_config == LIDAR
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), loaded.state_dict().values()))
    check_teacher_fits(path, cfg, small_config)
    other_geo = dataclasses.replace(small_config, geometry=dataclasses.replace(small_config.geometry, depth_step=2.0))
    with pytest.raises(ValueError, match=r"geometry.depth_step: teacher 4.0, student 2.0"):
        check_teacher_fits(path, cfg, other_geo)
    tasks = (TaskSpec(("car",), "circle", 4.0, 0.2, (1.0,)),)
    other_cls = dataclasses.replace(small_config, model=dataclasses.replace(small_config.model, tasks=tasks))
    with pytest.raises(ValueError, match=r"model.tasks: teacher \[\['car'\], \['truck'"):
        check_teacher_fits(path, cfg, other_cls)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.pt is corrupted"):
        load_teacher(truncated)
    student_like = tmp_path / "student.pt"
    torch.save({"format": "simdistill_ros.student"}, student_like)
    with pytest.raises(ValueError, match="not a simdistill_ros teacher checkpoint"):
        load_teacher(student_like)
