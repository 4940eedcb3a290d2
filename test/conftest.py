"""Fixtures shared by every test folder, and the DDS network rule for the whole suite.

Before anything imports rclpy: DDS discovery stays on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST;
Kilted ignores ROS_LOCALHOST_ONLY) and the session gets a ROS_DOMAIN_ID of its own (from the pid, 1..100,
unless the environment sets one), because other test runs on this machine use ROS at the same time.
Child processes (the node under test) inherit both.
"""
from __future__ import annotations

import dataclasses
import os

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))

import pytest  # noqa: E402 - after the DDS environment is set

from simdistill_ros.core.config import DetectorConfig, load_preset


@pytest.fixture(scope="session")
def small_config() -> DetectorConfig:
    """The tiny preset, shrunk further for fast CPU tests (frozen, so one instance serves the session)."""
    cfg = load_preset("tiny")
    geometry = dataclasses.replace(cfg.geometry, image_size=(64, 176), resize_width=192, depth_step=4.0,
                                   bev_resolution=1.6)
    model = dataclasses.replace(cfg.model, neck_channels=32, context_channels=16, fuser_channels=32,
                                lidar_channels=32, decoder_channels=(16, 32, 64), head_channels=16)
    return dataclasses.replace(cfg, geometry=geometry, model=model)
