"""Training augmentation as 4x4 matrices (method.md section 7), and the image warp that applies them.

Image augmentation: random resize, bottom-aligned crop, horizontal flip and rotation, recorded as an
`img_aug` matrix (simdistill_ros.core.geometry.image_aug_matrix convention: raw pixel (u, v) -> network
input pixel).
BEV augmentation: rotation about z, isotropic scale and x/y flips as one `bev_aug` matrix mapping ego
points to the augmented ego frame. It is applied to points and boxes here and handed to the view
transform, which applies it after cam_to_ego (cam_to_ego itself is never modified).
Test time: `inference_image_aug` (deterministic resize + centred bottom crop) and identity `bev_aug`.
Images are warped by simdistill_ros.core.preprocess.preprocess_images, the same code as at inference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simdistill_ros.core.config import GeometryConfig
from simdistill_ros.core.geometry import image_aug_matrix, inference_image_aug


@dataclass(frozen=True)
class ImageAugConfig:
    """resize_range: scale factors of the raw image (0.38-0.55 of 1600x900 in the paper);
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


def sample_image_aug(raw_size_hw: tuple[int, int], out_size_hw: tuple[int, int], cfg: ImageAugConfig,
                     rng: np.random.Generator) -> np.ndarray:
    """A random 4x4 img_aug for one raw image (BEVFusion's ImageAug3D sampling)."""
    raw_h, raw_w = raw_size_hw
    out_h, out_w = out_size_hw
    resize = float(rng.uniform(*cfg.resize_range))
    new_w, new_h = int(raw_w * resize), int(raw_h * resize)
    crop_y = int((1 - rng.uniform(*cfg.bottom_crop_range)) * new_h) - out_h
    crop_x = int(rng.uniform(0, max(0, new_w - out_w)))
    flip = bool(rng.random() < cfg.flip_prob)
    rotate = float(rng.uniform(*cfg.rotate_range_deg))
    return image_aug_matrix((resize, resize), (crop_x, crop_y), (out_w, out_h), flip=flip, rotate_deg=rotate)


def eval_image_aug(raw_size_hw: tuple[int, int], geometry: GeometryConfig) -> np.ndarray:
    """The deterministic test-time img_aug (core.geometry.inference_image_aug)."""
    return inference_image_aug(raw_size_hw, geometry)[0]



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


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """M x 8 x 3 corners of M x 9 (or M x 7) boxes in the boxes' frame."""
    signs = np.array([[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)], dtype=np.float64)
    local = signs[None] * boxes[:, None, 3:6] / 2.0
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    x = local[..., 0] * c[:, None] - local[..., 1] * s[:, None]
    y = local[..., 0] * s[:, None] + local[..., 1] * c[:, None]
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes[:, None, :3]


def points_in_boxes(points_xyz: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """P x M bool: whether each point lies inside each (yawed) box, grown by margin metres."""
    d = points_xyz[:, None, :3] - boxes[None, :, :3]
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    lx = d[..., 0] * c + d[..., 1] * s
    ly = -d[..., 0] * s + d[..., 1] * c
    half = boxes[:, 3:6] / 2.0 + margin
    return (np.abs(lx) <= half[:, 0]) & (np.abs(ly) <= half[:, 1]) & (np.abs(d[..., 2]) <= half[:, 2])
