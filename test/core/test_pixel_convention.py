"""One pixel convention from the raw image to the BEV grid: an ego point drawn as a bright blob into a raw
camera image -> preprocess_images with random augmentation (resize, crop, flip, rotation) -> the view
transform's pooling (bev_pool) over build_bev_pool_plan -> the pooled mass is centred on the point,
also with BEV-augmentation flips and rotation, and for a 4:3 camera with the test-time crop.

The blob is drawn with pixel centres at integer (u, v) (OpenCV's convention, as K assumes) and is wide
(sigma 2.5 feature cells) so its centroid survives the stride-8 features; the depth distribution is a
one-hot at the point's depth bin, so the lifted mass lies on one plane of constant depth, where lifting
is affine and keeps centroids. Along the viewing ray that plane falls into the one line of cells it
crosses, so there the mass lands within half a cell diagonal (5 cm cells here); across the ray it must
land within 8 mm: a
disagreement between two stages (K and the frustum, preprocess's warp, flips) of 0.25 network pixels
moves it ~1.4 cm at the 35-48 m used here (0.75 pixels, the old flip error: ~4 cm).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simdistill_ros.core.config import GeometryConfig
from simdistill_ros.core.geometry import image_aug_matrix, inference_image_aug
from simdistill_ros.core.model.view_transform import bev_pool
from simdistill_ros.core.preprocess import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, preprocess_images
from simdistill_ros.core.rig import nuscenes_like_rig
from simdistill_ros.core.view_plan import build_bev_pool_plan

# r50's image geometry and depth bins; a fine, narrow BEV grid (5 cm cells) so half a cell is tight
GEOM = GeometryConfig(image_size=(256, 704), resize_width=768, feature_stride=8, depth_min=1.0, depth_max=60.0,
                      depth_step=0.5, x_range=(-56.0, 56.0), y_range=(-56.0, 56.0), z_range=(-30.0, 30.0),
                      bev_resolution=0.05, bev_downsample=2)
ACROSS_TOLERANCE = 0.008  # m, across the viewing ray
SIGMA_NET = 20.0  # blob sigma in network pixels (2.5 feature cells)


def _random_aug(rng: np.random.Generator, raw_hw: tuple[int, int], flip: bool) -> np.ndarray:
    """BEVFusion-style training augmentation (resize 0.38-0.55 of 1600 px, bottom-ish crop, rotation)."""
    h, w = GEOM.image_size
    s = rng.uniform(0.38, 0.55) * 1600 / raw_hw[1]
    new_w, new_h = int(raw_hw[1] * s), int(raw_hw[0] * s)
    crop = (int(rng.uniform(0, max(0, new_w - w))), int((1 - rng.uniform(0.0, 0.2)) * new_h) - h)
    return image_aug_matrix((s, s), crop, (w, h), flip=flip, rotate_deg=float(rng.uniform(-5.4, 5.4)))


def _bev_aug(rng: np.random.Generator) -> np.ndarray:
    """Rotation about z and x/y mirrors (a BEV-augmentation matrix built by hand)."""
    a = rng.uniform(-math.pi / 8, math.pi / 8)
    T = np.eye(4)
    T[:3, :3] = np.diag([rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0]), 1.0]) @ np.array(
        [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return T


def _blob_image(raw_hw: tuple[int, int], uv: np.ndarray, sigma: float) -> np.ndarray:
    """Black uint8 image with a Gaussian blob centred at uv; pixel (i, j) is centred at (j, i)."""
    img = np.zeros((*raw_hw, 3), np.uint8)
    r = int(4 * sigma)
    u0, v0 = int(round(uv[0])), int(round(uv[1]))
    rows = np.arange(max(0, v0 - r), min(raw_hw[0], v0 + r + 1))
    cols = np.arange(max(0, u0 - r), min(raw_hw[1], u0 + r + 1))
    g = np.exp(-((cols[None, :] - uv[0]) ** 2 + (rows[:, None] - uv[1]) ** 2) / (2 * sigma ** 2))
    img[rows[:, None], cols[None, :]] = np.round(255 * g)[..., None].astype(np.uint8)
    return img


def _pooled_centre(K: np.ndarray, cam_to_ego: np.ndarray, aug: np.ndarray, bev_aug: np.ndarray,
                   raw_hw: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a point of a random depth bin (35-48 m) that lands well inside the augmented image, run the
    pipeline; returns (BEV centre of the pooled mass, where the point is in the augmented ego frame,
    the horizontal unit vector along the viewing ray in that frame)."""
    A, t = aug[:2, :2], aug[:2, 3]
    h, w = GEOM.image_size
    margin = 3.5 * SIGMA_NET
    k = int(rng.integers(68, 95))
    depth = GEOM.depth_min + k * GEOM.depth_step
    for _ in range(1000):
        uv_raw = rng.uniform([0, 0], [raw_hw[1] - 1, raw_hw[0] - 1])
        uv_net = A @ uv_raw + t
        if abs(uv_net[0] - (w - 1) / 2) <= w / 4 and margin <= uv_net[1] <= h - 1 - margin:
            break
    else:
        raise AssertionError("no raw pixel lands inside the augmented crop")
    point_cam = depth * np.linalg.solve(K, np.array([*uv_raw, 1.0]))
    point_ego = cam_to_ego[:3, :3] @ point_cam + cam_to_ego[:3, 3]
    sigma_raw = SIGMA_NET / math.sqrt(abs(np.linalg.det(A)))
    image = _blob_image(raw_hw, uv_raw, sigma_raw)

    x, _ = preprocess_images([image], GEOM, "cpu", img_aug=[aug])
    intensity = x[0, 0, 0] * IMAGENET_STD_RGB[0] + IMAGENET_MEAN_RGB[0]
    fh, fw = GEOM.feature_size
    s = GEOM.feature_stride
    context = intensity.double().reshape(fh, s, fw, s).mean((1, 3))[None, None, None]  # 1 x 1 x 1 x fH x fW
    depth_probs = torch.zeros(1, 1, GEOM.num_depth_bins, fh, fw, dtype=torch.float64)
    depth_probs[:, :, k] = 1.0
    t64 = lambda a: torch.as_tensor(a, dtype=torch.float64)[None, None]  # noqa: E731
    plan = build_bev_pool_plan(GEOM, t64(K), t64(cam_to_ego), t64(aug), t64(bev_aug)[0])
    mass = bev_pool(depth_probs, context, plan)[0, 0].numpy()
    ny, nx = GEOM.bev_size
    res = GEOM.bev_resolution
    xs = GEOM.x_range[0] + (np.arange(nx) + 0.5) * res
    ys = GEOM.y_range[0] + (np.arange(ny) + 0.5) * res
    total = mass.sum()
    assert total > 0.9 * float(context.sum()), "blob mass lost outside the BEV volume"
    centre = np.array([(mass.sum(0) * xs).sum() / total, (mass.sum(1) * ys).sum() / total])
    ray = (bev_aug[:3, :3] @ (point_ego - cam_to_ego[:3, 3]))[:2]
    return centre, (bev_aug[:3, :3] @ point_ego + bev_aug[:3, 3])[:2], ray / np.linalg.norm(ray)


def _rig_4x3() -> list[tuple[np.ndarray, np.ndarray]]:
    """Six cameras on the nuScenes-like mounts with 1280x960 images (4:3) and a 78 deg horizontal FOV."""
    K = np.array([[800.0, 0.0, 639.5], [0.0, 800.0, 479.5], [0.0, 0.0, 1.0]])
    return [(K, c.cam_to_ego) for c in nuscenes_like_rig(tuple(f"cam{i}" for i in range(6)))]


CASES = [("16:9 train aug", 0, False), ("16:9 train aug + flip", 1, True), ("16:9 + BEV aug", 2, True),
         ("4:3 test crop", 3, False), ("4:3 train aug + flip + BEV aug", 4, True)]


@pytest.mark.parametrize(("name", "seed", "flip"), CASES, ids=[c[0] for c in CASES])
def test_blob_lands_on_its_ego_point(name: str, seed: int, flip: bool) -> None:
    rng = np.random.default_rng(seed)
    four_three = name.startswith("4:3")
    raw_hw = (960, 1280) if four_three else (900, 1600)
    cams = _rig_4x3() if four_three else [(c.K, c.cam_to_ego) for c in nuscenes_like_rig(tuple("abcdef"))]
    for K, T in (cams[i] for i in rng.choice(len(cams), 1)):
        if name == "4:3 test crop":
            aug = inference_image_aug(raw_hw, GEOM, K)[0]
        else:
            aug = _random_aug(rng, raw_hw, flip)
        bev_aug = _bev_aug(rng) if "BEV" in name else np.eye(4)
        got, want, ray = _pooled_centre(K, T, aug, bev_aug, raw_hw, rng)
        along = float(abs((got - want) @ ray))
        across = float(abs((got - want) @ np.array([-ray[1], ray[0]])))
        # along the ray the plane's mass sits in the cells it crosses: within half a cell diagonal
        assert along <= GEOM.bev_resolution / math.sqrt(2), f"{name}: {along * 100:.2f} cm along the ray"
        assert across <= ACROSS_TOLERANCE, f"{name}: {across * 100:.2f} cm across the ray"
