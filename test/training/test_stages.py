"""training.stages: ImageNet (torchvision-format) backbone weights, the encoder initialised from the
teacher with its 0.1x learning rate, and the GCM ablation (S_l = S_a exactly)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.model.backbone import ResNet
from simdistill_ros.core.model.student import Student
from training.config import LidarConfig, TrainConfig
from training.stages import build_stage, disable_gcm, load_backbone_weights, param_groups
from training.teacher.checkpoint import save_teacher
from training.teacher.model import Teacher

pytestmark = pytest.mark.usefixtures("one_thread")
LIDAR = LidarConfig(max_sweeps=1, pillar_channels=8, encoder_blocks=1)


def test_torchvision_backbone_weights(tmp_path: Path) -> None:
    source = ResNet(18)
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in source.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # torchvision's classifier
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)
    target = ResNet(18)
    load_backbone_weights(target, path)
    assert all(torch.equal(v, state[k]) for k, v in target.state_dict().items())
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad.pth: cannot load ResNet-18 weights:\nmissing keys"):
        load_backbone_weights(target, tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="nothere.pth does not exist"):
        load_backbone_weights(target, tmp_path / "nothere.pth")


def test_student_encoder_from_teacher_at_a_tenth_of_the_lr(small_config: DetectorConfig, tmp_path: Path) -> None:
    teacher = Teacher(small_config.model, small_config.geometry, LIDAR)
    path = save_teacher(tmp_path / "teacher.pt", teacher, small_config)
    config = TrainConfig(model="tiny", lidar=LIDAR)
    setup = build_stage("student", config, small_config, path, None)
    student = setup.model
    for name, value in teacher.backbone.state_dict().items():
        assert torch.equal(student.backbone.state_dict()[name], value)
    assert torch.equal(student.neck.lateral3[0].weight, teacher.neck.lateral3[0].weight)
    assert setup.teacher is not None and setup.needs_lidar and setup.encoder_init == "teacher:teacher.pt"
    groups = param_groups(setup, 2e-4, 0.01)
    assert groups[0]["lr"] == pytest.approx(2e-5) and groups[1]["lr"] == pytest.approx(2e-4)
    n_encoder = sum(p.numel() for p in [*student.backbone.parameters(), *student.neck.parameters()])
    assert sum(p.numel() for p in groups[0]["params"]) == n_encoder
    # the baseline with --teacher: same encoder start and lr, no frozen teacher, no CMD projection trained
    base = build_stage("baseline", config, small_config, path, None)
    assert base.teacher is None and base.encoder_lr_mult == pytest.approx(0.1)
    assert not any(p.requires_grad for p in base.model.proj.parameters())
    with pytest.raises(ValueError, match="--backbone-weights and --teacher both initialise"):
        build_stage("student", config, small_config, path, tmp_path / "x.pth")
    more_sweeps = TrainConfig(model="tiny", lidar=LidarConfig(max_sweeps=9, pillar_channels=8, encoder_blocks=1))
    with pytest.raises(ValueError, match=r"other LiDAR input .*lidar.max_sweeps: 1 -> 9"):
        build_stage("student", more_sweeps, small_config, path, None)


def test_disabled_gcm_passes_its_input_through(small_config: DetectorConfig) -> None:
    student = Student(small_config.model, small_config.geometry)
    s_a = torch.randn(2, small_config.model.context_channels, *small_config.geometry.head_size)
    assert not torch.equal(student.compensate_geometry(s_a), s_a)
    disable_gcm(student)
    assert torch.equal(student.compensate_geometry(s_a), s_a)
    assert not any(p.requires_grad for p in student.gcm.parameters())
