"""Training augmentation as 4x4 matrices (method.md section 7), and the image warp that applies them.

Image augmentation: random resize, bottom-aligned crop, horizontal flip and rotation, recorded as an
`img_aug` matrix (simdistill_ros.core.geometry.image_aug_matrix convention: raw pixel (u, v) -> network
input pixel).
BEV augmentation: rotation about z, isotropic scale and x/y flips as one `bev_aug` matrix mapping ego
points to the augmented ego frame. It is applied to points and boxes here and handed to the view
transform, which applies it after cam_to_ego (cam_to_ego itself is never modified).
Test time: `inference_image_aug` (deterministic resize + centred crop that keeps the principal point on
its nuScenes rows; bottom-aligned for 1600x900) and identity `bev_aug`.
Images are warped by simdistill_ros.core.preprocess.preprocess_images, the same code as at inference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simdistill_ros.core.config import GeometryConfig
from simdistill_ros.core.geometry import image_aug_matrix, inference_image_aug


# BEVFusion's test-time resize of a 1600x900 image (to 768 x 432, then cropped to 256 x 704): the scale
# that ImageAugConfig.resize_range is relative to.
REFERENCE_TEST_SCALE = 0.48


@dataclass(frozen=True)
class ImageAugConfig:
    """resize_range: the paper's resize factors (0.38-0.55 of a 1600x900 image, whose test resize is
    REFERENCE_TEST_SCALE = 0.48), rescaled to each image's own test-time scale: a raw image of width W is
    resized by uniform(resize_range) * s / 0.48, where s is its deterministic test resize
    (core.geometry.inference_image_aug: normally geometry.resize_width / W). So training scales keep the same
    ratio to the test scale for any raw size and preset: BEVFusion's 0.38-0.55 exactly for 1600x900
    images with r50 (1600 -> 768), 0.19-0.275 with tiny (1600 -> 384), 0.76-1.1 for 800x450 with r50;
    bottom_crop_range: fraction of the resized height left out below the crop (0, 0 = bottom aligned);
    flip_prob: probability of a horizontal mirror; rotate_range_deg: uniform rotation range."""

    resize_range: tuple[float, float] = (0.38, 0.55)
    bottom_crop_range: tuple[float, float] = (0.0, 0.0)
    flip_prob: float = 0.5
    rotate_range_deg: tuple[float, float] = (-5.4, 5.4)

    def __post_init__(self) -> None:
        if not 0 < self.resize_range[0] <= self.resize_range[1]:
            raise ValueError(f"ImageAugConfig.resize_range must be 0 < lo <= hi, got {self.resize_range}")
        if not 0 <= self.bottom_crop_range[0] <= self.bottom_crop_range[1] < 1:
            raise ValueError(f"ImageAugConfig.bottom_crop_range must be in [0, 1), got {self.bottom_crop_range}")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"ImageAugConfig.flip_prob must be in [0, 1], got {self.flip_prob}")


@dataclass(frozen=True)
class BevAugConfig:
    """rotate_range_deg: rotation about ego z; scale_range: isotropic scale; flip_x_prob / flip_y_prob:
    probability of mirroring x (x -> -x) / y (y -> -y)."""

    rotate_range_deg: tuple[float, float] = (-22.5, 22.5)
    scale_range: tuple[float, float] = (0.95, 1.05)
    flip_x_prob: float = 0.5
    flip_y_prob: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"BevAugConfig.scale_range must be 0 < lo <= hi, got {self.scale_range}")
        for name in ("flip_x_prob", "flip_y_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"BevAugConfig.{name} must be in [0, 1]")


def sample_image_aug(raw_size_hw: tuple[int, int], geometry: GeometryConfig, cfg: ImageAugConfig,
                     rng: np.random.Generator) -> np.ndarray:
    """A random 4x4 img_aug for one raw image (BEVFusion's ImageAug3D sampling), cropped to
    geometry.image_size, with resize factors relative to the test-time scale (ImageAugConfig)."""
    raw_h, raw_w = raw_size_hw
    out_h, out_w = geometry.image_size
    test_scale = inference_image_aug(raw_size_hw, geometry)[1][1] / raw_w
    resize = float(rng.uniform(*cfg.resize_range)) * (test_scale / REFERENCE_TEST_SCALE)
    new_w, new_h = int(raw_w * resize), int(raw_h * resize)
    crop_y = int((1 - rng.uniform(*cfg.bottom_crop_range)) * new_h) - out_h
    crop_x = int(rng.uniform(0, max(0, new_w - out_w)))
    flip = bool(rng.random() < cfg.flip_prob)
    rotate = float(rng.uniform(*cfg.rotate_range_deg))
    return image_aug_matrix((resize, resize), (crop_x, crop_y), (out_w, out_h), flip=flip, rotate_deg=rotate)


def eval_image_aug(raw_size_hw: tuple[int, int], geometry: GeometryConfig, K: np.ndarray | None = None,
                   cam_to_ego: np.ndarray | None = None, camera: str = "camera") -> np.ndarray:
    """The deterministic test-time img_aug (core.geometry.inference_image_aug, the Detector's): the crop
    follows the principal point of K when given."""
    return inference_image_aug(raw_size_hw, geometry, K, cam_to_ego, camera)[0]


def bev_aug_matrix(rotate_rad: float = 0.0, scale: float = 1.0, flip_x: bool = False, flip_y: bool = False) -> np.ndarray:
    """4x4 bev_aug = flip @ scale @ rotate (rotation counter-clockwise about ego z)."""
    c, s = math.cos(rotate_rad), math.sin(rotate_rad)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    F = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0])
    out = np.eye(4)
    out[:3, :3] = F @ (scale * R)
    return out


def sample_bev_aug(cfg: BevAugConfig, rng: np.random.Generator) -> np.ndarray:
    """A random 4x4 bev_aug."""
    rot = math.radians(float(rng.uniform(*cfg.rotate_range_deg)))
    scale = float(rng.uniform(*cfg.scale_range))
    return bev_aug_matrix(rot, scale, bool(rng.random() < cfg.flip_x_prob), bool(rng.random() < cfg.flip_y_prob))


def transform_points(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to the xyz columns of P x C points (other columns are kept)."""
    out = points.copy()
    out[:, :3] = points[:, :3] @ T[:3, :3].T + T[:3, 3]
    return out


def transform_boxes(boxes: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a 4x4 similarity (rotation about z, isotropic scale, axis flips) to M x 9 boxes: centres by
    T, sizes by the scale, yaw by the image of the heading vector, velocities by the linear part."""
    out = boxes.copy()
    A = T[:3, :3]
    scale = abs(np.linalg.det(A)) ** (1.0 / 3.0)
    out[:, :3] = boxes[:, :3] @ A.T + T[:3, 3]
    out[:, 3:6] = boxes[:, 3:6] * scale
    heading = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6])], axis=1) @ A[:2, :2].T
    out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    out[:, 7:9] = boxes[:, 7:9] @ A[:2, :2].T
    return out
