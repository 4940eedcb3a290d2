"""Core test fixtures: a random six-camera 900x1600 frame on the nuScenes-like rig (small_config is in
test/conftest.py)."""
from __future__ import annotations

import pytest

from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.rig import random_frame as rig_random_frame
from simdistill_ros.core.types import Frame


@pytest.fixture
def random_frame(small_config: DetectorConfig) -> Frame:
    return rig_random_frame(small_config.model.camera_names, stamp_ns=1_532_402_927_647_951_000)
