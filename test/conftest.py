"""Fixtures shared by every test folder."""
from __future__ import annotations

import dataclasses

import pytest

from simdistill_ros.core.config import DetectorConfig, load_preset


@pytest.fixture(scope="session")
def small_config() -> DetectorConfig:
    """The tiny preset, shrunk further for fast CPU tests (frozen, so one instance serves every test)."""
    cfg = load_preset("tiny")
    geometry = dataclasses.replace(cfg.geometry, image_size=(64, 176), resize_width=192, depth_step=4.0,
                                   bev_resolution=1.6)
    model = dataclasses.replace(cfg.model, neck_channels=32, context_channels=16, fuser_channels=32,
                                lidar_channels=32, decoder_channels=(16, 32, 64), head_channels=16)
    return dataclasses.replace(cfg, geometry=geometry, model=model)
