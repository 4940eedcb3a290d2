"""training.data.augment: image and BEV augmentation stay geometrically consistent."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simdistill_ros.core.config import GeometryConfig, load_preset
from simdistill_ros.core.geometry import lift_to_ego, project_to_image
from simdistill_ros.core.preprocess import preprocess_images
from training.data.augment import (
    BevAugConfig,
    ImageAugConfig,
    bev_aug_matrix,
    eval_image_aug,
    sample_bev_aug,
    sample_image_aug,
    transform_boxes,
    transform_points,
)

import box_helpers
box_corners, points_in_boxes = box_helpers.box_corners, box_helpers.points_in_boxes

R50, TINY = load_preset("r50").geometry, load_preset("tiny").geometry
R_OPT = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _camera(yaw: float) -> tuple[np.ndarray, np.ndarray]:
    K = np.array([[1260.0, 0.0, 800.0], [0.0, 1260.0, 450.0], [0.0, 0.0, 1.0]])
    c, s = math.cos(yaw), math.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ R_OPT
    T[:3, 3] = [1.5, 0.2, 1.6]
    return K, T


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reorder the rows of b to the nearest rows of a (corner order changes under flips)."""
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    return b[d.argmin(1)]


@pytest.mark.parametrize("seed", range(6))
def test_box_corner_projects_to_same_pixel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    K, cam_to_ego = _camera(0.0)
    boxes = np.array([[15.0, 1.0, 0.9, 4.5, 1.9, 1.7, 0.4, 3.0, -1.0], [25.0, -4.0, 1.2, 10.0, 2.5, 3.2, -1.1, 0.0, 0.0]])
    corners = box_corners(boxes).reshape(-1, 3)
    uv_raw, depth = project_to_image(_t(corners)[None, None], _t(K)[None, None], _t(cam_to_ego)[None, None])
    assert bool((depth > 0).all())
    img_aug = sample_image_aug((900, 1600), R50, ImageAugConfig(flip_prob=0.5), rng)
    bev_aug = sample_bev_aug(BevAugConfig(), rng) if seed else bev_aug_matrix(0.3, 1.04, True, True)
    expected = uv_raw[0, 0].numpy() @ img_aug[:2, :2].T + img_aug[:2, 3]

    aug_boxes = transform_boxes(boxes, bev_aug)
    aug_corners = _match(transform_points(corners, bev_aug), box_corners(aug_boxes).reshape(-1, 3))
    np.testing.assert_allclose(aug_corners, transform_points(corners, bev_aug), atol=1e-9)
    # the view transform's convention: ego' = bev_aug @ cam_to_ego @ camera point
    uv_aug, depth_aug = project_to_image(_t(aug_corners)[None, None], _t(K)[None, None],
                                         _t(bev_aug @ cam_to_ego)[None, None], _t(img_aug)[None, None])
    np.testing.assert_allclose(uv_aug[0, 0].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(depth_aug.numpy(), depth.numpy(), atol=1e-6)
    # and lifting the augmented pixels at their depth lands on the augmented corners
    frustum = torch.cat([_t(expected), depth[0, 0, :, None]], dim=-1).reshape(1, 1, -1, 3)
    lifted = lift_to_ego(frustum, _t(K)[None, None], _t(cam_to_ego)[None, None], _t(img_aug)[None, None], _t(bev_aug)[None])
    np.testing.assert_allclose(lifted.reshape(-1, 3).numpy(), aug_corners, atol=1e-6)
    # velocity follows the linear map; size follows the scale
    scale = abs(np.linalg.det(bev_aug[:3, :3])) ** (1 / 3)
    np.testing.assert_allclose(aug_boxes[:, 7:9], boxes[:, 7:9] @ bev_aug[:2, :2].T)
    np.testing.assert_allclose(aug_boxes[:, 3:6], boxes[:, 3:6] * scale)


@pytest.mark.parametrize("seed", range(4))
def test_points_stay_in_transformed_boxes(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    boxes = np.column_stack([rng.uniform(-40, 40, (8, 2)), rng.uniform(0, 2, 8), rng.uniform(0.5, 8, (8, 3)),
                             rng.uniform(-np.pi, np.pi, 8), rng.normal(size=(8, 2))])
    local = rng.uniform(-0.49, 0.49, (8, 50, 3)) * boxes[:, None, 3:6]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    pts = np.stack([local[..., 0] * c - local[..., 1] * s, local[..., 0] * s + local[..., 1] * c, local[..., 2]], -1)
    pts = (pts + boxes[:, None, :3]).reshape(-1, 3)
    owner = np.repeat(np.arange(8), 50)
    outside = rng.uniform(-60, 60, (500, 3))
    outside = outside[~points_in_boxes(outside, boxes, margin=0.05).any(1)]
    bev_aug = sample_bev_aug(BevAugConfig(flip_x_prob=0.5, flip_y_prob=0.5), rng)
    aug_boxes = transform_boxes(boxes, bev_aug)
    inside = points_in_boxes(transform_points(pts, bev_aug), aug_boxes)
    assert inside[np.arange(len(pts)), owner].all()
    assert not points_in_boxes(transform_points(outside, bev_aug), aug_boxes).any()


def test_wrong_yaw_would_be_caught() -> None:
    """The corner check above fails for a box transform that ignores flips (the test can fail)."""
    box = np.array([[10.0, 2.0, 1.0, 4.0, 2.0, 1.5, 0.5, 0.0, 0.0]])
    bev = bev_aug_matrix(0.0, 1.0, flip_x=False, flip_y=True)
    wrong = box.copy()
    wrong[:, :3] = transform_points(box[:, :3], bev)
    good = transform_points(box_corners(box).reshape(-1, 3), bev)
    assert np.abs(_match(good, box_corners(wrong).reshape(-1, 3)) - good).max() > 0.5
    assert np.abs(_match(good, box_corners(transform_boxes(box, bev)).reshape(-1, 3)) - good).max() < 1e-9


def test_image_warp_follows_matrix() -> None:
    """preprocess_images with a sampled img_aug moves a bright blob where the matrix says."""
    geometry = GeometryConfig(image_size=(256, 704), resize_width=768, feature_stride=8, depth_min=1.0,
                              depth_max=60.0, depth_step=0.5, x_range=(-54.0, 54.0), y_range=(-54.0, 54.0),
                              z_range=(-10.0, 10.0), bev_resolution=0.3, bev_downsample=2)
    rng = np.random.default_rng(3)
    for _ in range(3):
        img = np.zeros((900, 1600, 3), np.uint8)
        img[600:608, 700:708] = 255  # centre at (703.5, 603.5), OpenCV convention
        aug = sample_image_aug((900, 1600), geometry, ImageAugConfig(flip_prob=0.5), rng)
        out, _ = preprocess_images([img], geometry, "cpu", img_aug=[aug])
        heat = out[0, 0, 0].numpy()
        i, j = np.unravel_index(np.argmax(heat), heat.shape)
        want = aug[:2, :2] @ np.array([703.5, 603.5]) + aug[:2, 3]
        assert abs(j - want[0]) <= 2.0 and abs(i - want[1]) <= 2.0
    # test time: the paper's 0.48 resize and rows 176..432 for 900x1600 (OpenCV: u' = 0.48 u - 0.26 - crop)
    aug = eval_image_aug((900, 1600), geometry)
    np.testing.assert_allclose(aug[:2, :2], np.eye(2) * 0.48)
    np.testing.assert_allclose(aug[:2, 3], [-32.26, -176.26])


def _train_scales(raw_hw: tuple[int, int], geometry: GeometryConfig, n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(7)
    cfg = ImageAugConfig(flip_prob=0.0, rotate_range_deg=(0.0, 0.0))
    return np.array([sample_image_aug(raw_hw, geometry, cfg, rng)[0, 0] for _ in range(n)])


def test_resize_range_is_bevfusions_for_r50_on_1600x900() -> None:
    """(a) r50 on 1600x900: exactly BEVFusion's ImageAug3D draw (uniform 0.38-0.55, same rng stream)."""
    scales = _train_scales((900, 1600), R50)
    rng = np.random.default_rng(7)
    want = []
    for _ in range(len(scales)):
        want.append(rng.uniform(0.38, 0.55))
        rng.uniform(0.0, 0.0), rng.uniform(0, 1), rng.random(), rng.uniform(0.0, 0.0)  # crop y/x, flip, rotate
    np.testing.assert_array_equal(scales, want)
    assert scales.min() > 0.38 and scales.max() < 0.55 and eval_image_aug((900, 1600), R50)[0, 0] == 0.48


@pytest.mark.parametrize(("raw_hw", "preset"), [((900, 1600), "tiny"), ((450, 800), "r50"), ((225, 400), "tiny"),
                                                 ((1080, 1920), "r50"), ((90, 160), "tiny")])
def test_train_scales_are_centred_on_the_test_scale(raw_hw: tuple[int, int], preset: str) -> None:
    """(b) any raw size and preset: train scale / test scale spans 0.38/0.48 .. 0.55/0.48, as in the paper
    (tiny on 1600x900: test 0.24, train 0.19-0.275)."""
    geometry = {"r50": R50, "tiny": TINY}[preset]
    test = eval_image_aug(raw_hw, geometry)[0, 0]
    ratio = _train_scales(raw_hw, geometry) / test
    assert ratio.min() >= 0.38 / 0.48 - 1e-9 and ratio.max() <= 0.55 / 0.48 + 1e-9
    assert ratio.min() < 0.38 / 0.48 + 0.02 and ratio.max() > 0.55 / 0.48 - 0.02
    if raw_hw == (900, 1600) and preset == "tiny":
        assert test == pytest.approx(0.24)
        scales = ratio * test
        assert scales.min() == pytest.approx(0.19, abs=0.003) and scales.max() == pytest.approx(0.275, abs=0.003)


def test_bad_aug_configs() -> None:
    with pytest.raises(ValueError, match="resize_range"):
        ImageAugConfig(resize_range=(0.5, 0.4))
    with pytest.raises(ValueError, match="scale_range"):
        BevAugConfig(scale_range=(0.0, 1.0))
