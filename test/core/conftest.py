"""Core test fixtures: a random six-camera 900x1600 frame on the nuScenes-like rig (small_config is in
test/conftest.py)."""
from __future__ import annotations

import numpy as np
import pytest

from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.rig import nuscenes_like_rig
from simdistill_ros.core.types import Frame


@pytest.fixture
def random_frame(small_config: DetectorConfig) -> Frame:
    rng = np.random.default_rng()
    calibs = nuscenes_like_rig(small_config.model.camera_names)
    images = tuple(rng.integers(0, 256, (900, 1600, 3), dtype=np.uint8) for _ in calibs)
    return Frame(images, calibs, stamp_ns=1_532_402_927_647_951_000)
