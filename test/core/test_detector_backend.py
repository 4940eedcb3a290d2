"""Detector.from_checkpoint's backend keyword: torch and auto load the same model; an unknown backend is
refused by name."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from simdistill_ros.core.checkpoint import save_checkpoint
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.detector import Detector
from simdistill_ros.core.model.student import Student


def test_backend_keyword(small_config: DetectorConfig, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", Student(small_config.model, small_config.geometry).state_dict(),
                           small_config)
    a = Detector.from_checkpoint(path, backend="torch")
    b = Detector.from_checkpoint(path, backend="auto")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ValueError, match="backend 'no_such_backend'"):
        Detector.from_checkpoint(path, backend="no_such_backend")
