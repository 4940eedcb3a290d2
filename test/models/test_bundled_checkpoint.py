"""The bundled demo checkpoint (simdistill_ros/models): at most 20 MB, loads with weights_only=True, its
config is config/models/demo.yaml's preset, it is the SimDistill student stage, and a Detector built from
it runs one random six-camera frame on CPU."""
from __future__ import annotations

import numpy as np
import torch

from simdistill_ros.core.checkpoint import load_checkpoint
from simdistill_ros.core.config import config_to_dict, load_preset
from simdistill_ros.core.detector import Detector
from simdistill_ros.core.rig import random_frame
from simdistill_ros.models import BUNDLED_CHECKPOINT


def test_bundled_checkpoint_is_small_and_safe_to_load() -> None:
    assert BUNDLED_CHECKPOINT.is_file(), f"{BUNDLED_CHECKPOINT} is missing"
    assert BUNDLED_CHECKPOINT.stat().st_size <= 20 * 2**20
    payload = torch.load(BUNDLED_CHECKPOINT, map_location="cpu", weights_only=True)
    assert payload["config"] == config_to_dict(load_preset("demo"))
    config, state, meta = load_checkpoint(BUNDLED_CHECKPOINT)
    assert config == load_preset("demo")
    assert meta["stage"] == "student" and meta["teacher"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_bundled_checkpoint_detects_on_a_random_frame() -> None:
    detector = Detector.from_checkpoint(BUNDLED_CHECKPOINT)
    config = detector.config
    det = detector.detect(random_frame(config.model.camera_names, image_size=(225, 400), stamp_ns=7))
    assert det.stamp_ns == 7 and det.class_names == config.model.class_names
    assert det.boxes.shape == (len(det), 9) and np.all(np.isfinite(det.boxes))
    assert np.all(det.scores >= config.postprocess.score_threshold) and np.all(det.scores <= 1.0)
    assert len(det) <= config.postprocess.max_detections
