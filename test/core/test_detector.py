"""The Detector end to end on CPU: well-formed Detections from six random 900x1600 images; bad input."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from simdistill_ros.core.checkpoint import save_checkpoint
from simdistill_ros.core.config import DetectorConfig, load_preset
from simdistill_ros.core.detector import Detector
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.types import CameraCalibration, Detections, Frame

from simdistill_ros.core.rig import random_frame


def _detector(config: DetectorConfig, **kw: object) -> Detector:
    torch.manual_seed(0)
    return Detector(Student(config.model, config.geometry), config, **kw)  # type: ignore[arg-type]


def _check_well_formed(det: Detections, config: DetectorConfig) -> None:
    assert det.boxes.shape == (len(det), 9) and det.boxes.dtype == np.float32
    assert det.scores.shape == (len(det),) and det.labels.shape == (len(det),)
    assert np.all(np.isfinite(det.boxes)) and np.all(np.isfinite(det.scores))
    assert np.all(det.scores >= config.postprocess.score_threshold) and np.all(det.scores <= 1.0)
    assert np.all(np.diff(det.scores) <= 0), "detections are sorted by score"
    assert np.all(det.boxes[:, 3:6] > 0)
    assert det.class_names == config.model.class_names
    lo, hi = np.array(config.postprocess.post_center_range[:3]), np.array(config.postprocess.post_center_range[3:])
    assert np.all((det.boxes[:, :3] >= lo) & (det.boxes[:, :3] <= hi))


def test_tiny_preset_detects_on_six_random_full_size_images() -> None:
    config = load_preset("tiny")
    # an untrained head fires everywhere at ~sigmoid(-2.19)=0.1: use a low threshold so boxes come out
    det = _detector(config, score_threshold=0.05).detect(random_frame(config.model.camera_names, stamp_ns=42))
    _check_well_formed(det, config)
    assert len(det) > 0 and det.stamp_ns == 42
    assert {"preprocess", "plan", "network", "postprocess", "total"} <= set(det.timings_ms)


def test_from_checkpoint_matches_in_memory(small_config: DetectorConfig, random_frame: Frame, tmp_path: Path) -> None:
    det = _detector(small_config, score_threshold=0.05)
    path = save_checkpoint(tmp_path / "m.pt", det.model.state_dict(), small_config)
    det2 = Detector.from_checkpoint(path, score_threshold=0.05)
    a, b = det.detect(random_frame), det2.detect(random_frame)
    _check_well_formed(a, small_config)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
    assert det.plans.builds == 1
    det.detect(random_frame)
    assert det.plans.builds == 1 and det.plans.hits == 1, "the plan is computed once per calibration"


def test_wrong_number_of_images(small_config: DetectorConfig, random_frame: Frame) -> None:
    frame = Frame(random_frame.images[:5], random_frame.calibrations[:5])
    with pytest.raises(ValueError, match="5 images but the model expects 6 cameras"):
        _detector(small_config).detect(frame)


def test_bad_images_and_calibration_name_the_camera(random_frame: Frame) -> None:
    calibs = random_frame.calibrations
    imgs = list(random_frame.images)
    imgs[2] = imgs[2].astype(np.float32)
    with pytest.raises(ValueError, match=r"camera 'CAM_BACK_RIGHT' field image: expected dtype uint8"):
        Frame(tuple(imgs), calibs)
    imgs = list(random_frame.images)
    imgs[1] = imgs[1][:, :, :1]
    with pytest.raises(ValueError, match=r"camera 'CAM_FRONT_RIGHT' field image: expected shape"):
        Frame(tuple(imgs), calibs)
    imgs = list(random_frame.images)
    imgs[0] = imgs[0][:450]
    with pytest.raises(ValueError, match=r"camera 'CAM_FRONT' field image: size 1600x450"):
        Frame(tuple(imgs), calibs)
    c = calibs[3]
    K = c.K.copy()
    K[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"camera 'CAM_BACK' field K: contains NaN"):
        CameraCalibration(c.name, K, c.cam_to_ego, c.image_size)
    K = c.K.copy()
    K[0, 0] = 0.0
    with pytest.raises(ValueError, match=r"camera 'CAM_BACK' field K: singular"):
        CameraCalibration(c.name, K, c.cam_to_ego, c.image_size)
    T = c.cam_to_ego.copy()
    T[:3, :3] *= 2.0
    with pytest.raises(ValueError, match=r"camera 'CAM_BACK' field cam_to_ego: not a rigid"):
        CameraCalibration(c.name, c.K, T, c.image_size)
    for size in ((900,), (900.7, 1600), None, (900, 1600, 3)):
        with pytest.raises(ValueError, match=r"camera 'CAM_BACK' field image_size: expected two integers"):
            CameraCalibration(c.name, c.K, c.cam_to_ego, size)  # type: ignore[arg-type]


def test_masked_camera_image_has_no_influence(small_config: DetectorConfig, random_frame: Frame) -> None:
    det = _detector(small_config, score_threshold=0.0, max_detections=5000)
    valid = (True, True, True, False, True, True)
    full = det.detect(random_frame)
    masked = det.detect(dataclasses.replace(random_frame, valid=valid))
    _check_well_formed(masked, small_config)
    assert det.plans.builds == 2
    assert not np.array_equal(full.scores, masked.scores), "masking a camera changes the result"
    images = list(random_frame.images)
    images[3] = np.random.default_rng().integers(0, 256, images[3].shape, dtype=np.uint8)
    other = det.detect(dataclasses.replace(random_frame, images=tuple(images), valid=valid))
    assert np.array_equal(masked.scores, other.scores) and np.array_equal(masked.boxes, other.boxes), \
        "a masked camera's pixels must not reach the output"
    changed = det.detect(dataclasses.replace(random_frame, images=tuple(images)))
    assert not np.array_equal(full.scores, changed.scores), "an unmasked camera's pixels do reach it"


def test_frame_flags_and_stamp_are_checked(random_frame: Frame) -> None:
    with pytest.raises(ValueError, match="field valid: expected booleans"):
        dataclasses.replace(random_frame, valid=(True, "no", True, True, True, True))
    with pytest.raises(ValueError, match="every camera is marked missing"):
        dataclasses.replace(random_frame, valid=(False,) * 6)
    with pytest.raises(ValueError, match="field stamp_ns"):
        dataclasses.replace(random_frame, stamp_ns=-1)
    with pytest.raises(ValueError, match="field stamp_ns"):
        dataclasses.replace(random_frame, stamp_ns=1.5)


def test_fp16_on_cpu_is_refused(small_config: DetectorConfig) -> None:
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        _detector(small_config, precision="fp16")


def test_detector_crops_by_principal_point_and_names_a_camera_without_horizon(small_config: DetectorConfig) -> None:
    """image_augs follows each camera's principal point (a 4:3 camera gets a crop that shows its horizon)
    and warns, naming the camera, when a camera's horizon is outside the network input."""
    import math

    from simdistill_ros.core.geometry import HorizonWarning, inference_image_aug, principal_row_band
    from simdistill_ros.core.rig import nuscenes_like_rig

    det = _detector(small_config)
    calibs = list(nuscenes_like_rig(small_config.model.camera_names))
    K43 = np.array([[768.0, 0, 639.5], [0, 768.0, 479.5], [0, 0, 1]])
    calibs[0] = CameraCalibration(calibs[0].name, K43, calibs[0].cam_to_ego, (960, 1280))
    a = math.radians(35.0)  # the second camera pitched 35 deg down: no crop shows its horizon
    Ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])  # nose down
    O = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # optical -> body
    T = calibs[1].cam_to_ego.copy()
    T[:3, :3] = T[:3, :3] @ O.T @ Ry @ O  # pitched about the camera's own horizontal axis
    calibs[1] = CameraCalibration(calibs[1].name, calibs[1].K, T, calibs[1].image_size)
    images = tuple(np.zeros((*c.image_size, 3), np.uint8) for c in calibs)
    with pytest.warns(HorizonWarning, match=f"camera '{calibs[1].name}'.*no crop can show it"):
        augs = det.image_augs(Frame(images, tuple(calibs)))
    np.testing.assert_allclose(augs[0], inference_image_aug((960, 1280), small_config.geometry, K43)[0])
    lo, hi = principal_row_band(small_config.geometry)
    assert lo - 0.5 <= (augs[0] @ [639.5, 479.5, 1.0, 1.0])[1] <= hi + 0.5
