"""Checkpoint round trip and clear errors on corrupted or mismatching files."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from simdistill_ros.core.checkpoint import load_checkpoint, load_state_into, save_checkpoint
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.view_plan import build_bev_pool_plan

from simdistill_ros.core.rig import nuscenes_like_rig


def test_round_trip_gives_identical_outputs(small_config: DetectorConfig, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Student(small_config.model, small_config.geometry).eval()
    path = save_checkpoint(tmp_path / "m.pt", model.state_dict(), small_config, {"epoch": 3})
    config, state, meta = load_checkpoint(path)
    assert config == small_config and meta == {"epoch": 3}
    restored = Student(config.model, config.geometry).eval()
    load_state_into(restored, state, str(path))
    g = small_config.geometry
    calibs = nuscenes_like_rig(small_config.model.camera_names)
    t = lambda xs: torch.from_numpy(np.stack(xs))[None].to(torch.float64)  # noqa: E731
    aug = torch.eye(4, dtype=torch.float64).repeat(1, 6, 1, 1)
    aug[..., 0, 0] = aug[..., 1, 1] = g.image_size[1] / 1600
    plan = build_bev_pool_plan(g, t([c.K for c in calibs]), t([c.cam_to_ego for c in calibs]), aug)
    images = torch.randn(1, 6, 3, *g.image_size)
    with torch.no_grad():
        a = model(images, plan.depth_index, plan.pixel_index, plan.cell_index)
        b = restored(images, plan.depth_index, plan.pixel_index, plan.cell_index)
    assert len(a) == len(small_config.model.tasks)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_corrupted_file_is_a_clear_error(small_config: DetectorConfig, tmp_path: Path) -> None:
    model = Student(small_config.model, small_config.geometry)
    path = save_checkpoint(tmp_path / "m.pt", model.state_dict(), small_config)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"m\.pt is corrupted"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match="not a simdistill_ros student checkpoint"):
        load_checkpoint(foreign)


def test_config_mismatch_is_a_clear_error(small_config: DetectorConfig, tmp_path: Path) -> None:
    model = Student(small_config.model, small_config.geometry)
    other = dataclasses.replace(small_config, model=dataclasses.replace(small_config.model, head_channels=24))
    path = save_checkpoint(tmp_path / "m.pt", model.state_dict(), other)
    config, state, _ = load_checkpoint(path)
    with pytest.raises(ValueError, match="weights do not match the model config"):
        load_state_into(Student(config.model, config.geometry), state, str(path))


def test_save_is_atomic_and_leaves_no_temporary(small_config: DetectorConfig, tmp_path: Path) -> None:
    model = Student(small_config.model, small_config.geometry)
    save_checkpoint(tmp_path / "m.pt", model.state_dict(), small_config)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
