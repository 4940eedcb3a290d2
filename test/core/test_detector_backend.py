"""Detector.from_checkpoint's backend keyword: torch and auto load; an unknown backend is refused by name."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simdistill_ros.core.checkpoint import save_checkpoint
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.detector import Detector
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.types import Frame


def test_backend_keyword(small_config: DetectorConfig, random_frame: Frame, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", Student(small_config.model, small_config.geometry).state_dict(),
                           small_config)
    with torch.no_grad():
        a = Detector.from_checkpoint(path, backend="torch", score_threshold=0.05).detect(random_frame)
        b = Detector.from_checkpoint(path, backend="auto", score_threshold=0.05).detect(random_frame)
    assert np.array_equal(a.boxes, b.boxes)
    with pytest.raises(ValueError, match="backend 'no_such_backend' is unavailable"):
        Detector.from_checkpoint(path, backend="no_such_backend")
