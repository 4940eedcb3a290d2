"""Fixtures shared by every test folder, and the DDS network rule for the whole suite.

Before anything imports rclpy: DDS discovery stays on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST;
Kilted ignores ROS_LOCALHOST_ONLY) and the session gets a ROS_DOMAIN_ID of its own (from the pid, 1..100,
unless the environment sets one), because other test runs on this machine use ROS at the same time.
Child processes (the node under test) inherit both.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Callable

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))

import pytest  # noqa: E402 - after the DDS environment is set

from simdistill_ros.core.config import DetectorConfig, load_preset

if TYPE_CHECKING:
    from simdistill_ros.core.model.student import Student


@pytest.fixture(scope="session")
def small_config() -> DetectorConfig:
    """The tiny preset, shrunk further for fast CPU tests (frozen, so one instance serves the session)."""
    cfg = load_preset("tiny")
    geometry = dataclasses.replace(cfg.geometry, image_size=(64, 176), resize_width=192, depth_step=4.0,
                                   bev_resolution=1.6)
    model = dataclasses.replace(cfg.model, neck_channels=32, context_channels=16, fuser_channels=32,
                                lidar_channels=32, decoder_channels=(16, 32, 64), head_channels=16)
    return dataclasses.replace(cfg, geometry=geometry, model=model)


def sensitive_student(config: DetectorConfig, seed: int = 0) -> "Student":
    """A Student in eval mode whose outputs depend on its inputs: PyTorch's default init lets the signal
    fade through ~60 layers (heads ~ their biases, ~1e-5 apart for different BEV maps), which would
    hide a wrong pooling or export. Kaiming-normal weights x 0.85, small biases and random BatchNorm
    statistics keep the heads at unit scale (a masked camera moves them by ~0.1)."""
    import torch

    from simdistill_ros.core.model.student import Student

    torch.manual_seed(seed)
    model = Student(config.model, config.geometry).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.weight.mul_(0.85)
                if m.bias is not None:
                    m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="session")
def make_student() -> "Callable[..., Student]":
    """`make_student(config, seed=0)`: see sensitive_student."""
    return sensitive_student
