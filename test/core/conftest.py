"""Shared fixtures for core tests: a shrunken tiny preset and a six-camera nuScenes-like rig."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from simdistill_ros.core.config import DetectorConfig, load_preset
from simdistill_ros.core.rig import nuscenes_like_rig
from simdistill_ros.core.types import Frame


@pytest.fixture
def small_config() -> DetectorConfig:
    """The tiny preset, shrunk further for fast CPU tests."""
    cfg = load_preset("tiny")
    geometry = dataclasses.replace(cfg.geometry, image_size=(64, 176), resize_width=192, depth_step=4.0,
                                   bev_resolution=1.6)
    model = dataclasses.replace(cfg.model, neck_channels=32, context_channels=16, fuser_channels=32,
                                lidar_channels=32, decoder_channels=(16, 32, 64), head_channels=16)
    return dataclasses.replace(cfg, geometry=geometry, model=model)


@pytest.fixture
def random_frame(small_config: DetectorConfig) -> Frame:
    rng = np.random.default_rng()
    calibs = nuscenes_like_rig(small_config.model.camera_names)
    images = tuple(rng.integers(0, 256, (900, 1600, 3), dtype=np.uint8) for _ in calibs)
    return Frame(images, calibs, stamp_ns=1_532_402_927_647_951_000)
