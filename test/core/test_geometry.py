"""Camera geometry: projection, lifting and BEV indices against independent hand computations."""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

from simdistill_ros.core.config import GeometryConfig, load_preset
from simdistill_ros.core.geometry import (
    bev_cell_index,
    frustum,
    image_aug_matrix,
    inference_image_aug,
    lift_to_ego,
    project_to_image,
)
from simdistill_ros.core.view_plan import BEVPoolPlan, PlanCache, build_bev_pool_plan, plan_key


def random_camera(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A camera looking roughly horizontally in a random direction, at a random mount position."""
    yaw = rng.uniform(-math.pi, math.pi)
    pitch = rng.uniform(-0.1, 0.1)
    # optical (z fwd, x right, y down) -> body (x fwd, y left, z up)
    opt_to_body = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    T = np.eye(4)
    T[:3, :3] = Rz @ Ry @ opt_to_body
    T[:3, 3] = rng.uniform([-1, -1, 1.2], [2, 1, 2.0])
    f = rng.uniform(800, 1400)
    K = np.array([[f, 0, rng.uniform(780, 820)], [0, f * rng.uniform(0.98, 1.02), rng.uniform(440, 460)], [0, 0, 1]])
    return K, T


def test_image_aug_matrix_maps_pixel_centres_opencv_convention() -> None:
    """Hand-computed, in OpenCV's convention (pixel (i, j) centred at (j, i)): halving maps raw pixels
    2j, 2j+1 (centres 2j, 2j+1) onto resized pixel j (centre j): u' = (u - 0.5) / 2."""
    aug = image_aug_matrix((0.5, 0.5), (10, 20), (300, 100), flip=True)
    # raw centre (20.5, 40.5) (between raw pixels 20, 21 and rows 40, 41) -> resized pixel (10, 20)
    # -> crop pixel (0, 0) -> flipped to the last column, 299
    p = aug @ np.array([20.5, 40.5, 5.0, 1.0])
    assert np.allclose(p, [299.0, 0.0, 5.0, 1.0])
    # the raw image's edge u = -0.5 stays the resized image's edge
    assert np.allclose((image_aug_matrix((0.48, 0.48), (0, 0), (700, 250)) @ [-0.5, -0.5, 1.0, 1.0])[:2], [-0.5, -0.5])
    rot = image_aug_matrix((1.0, 1.0), (0, 0), (100, 50), rotate_deg=90.0)
    centre = rot @ np.array([49.5, 24.5, 1.0, 1.0])
    assert np.allclose(centre[:2], [49.5, 24.5])  # rotation is about the crop centre ((W-1)/2, (H-1)/2)
    corner = rot @ np.array([0.0, 0.0, 1.0, 1.0])  # top-left pixel, rotated 90 deg counter-clockwise on screen
    assert np.allclose(corner[:2], [49.5 - 24.5, 24.5 + 49.5])


def test_inference_aug_is_bevfusion_test_transform() -> None:
    aug, resized, crop = inference_image_aug((900, 1600), load_preset("r50").geometry)
    assert resized == (432, 768) and crop == (32, 176)
    assert np.allclose(aug[:2, :2], np.diag([0.48, 0.48]))


def test_project_then_lift_round_trip_with_augmentation() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        K, T = random_camera(rng)
        aug = image_aug_matrix(tuple(rng.uniform(0.3, 0.6, 2)), tuple(rng.uniform(0, 50, 2)), (352, 128),
                               flip=bool(rng.integers(2)), rotate_deg=rng.uniform(-5.4, 5.4))
        # a point 5-40 m in front of this camera
        cam_pt = np.array([rng.uniform(-3, 3), rng.uniform(-1, 1), rng.uniform(5, 40)])
        ego_pt = T[:3, :3] @ cam_pt + T[:3, 3]
        t = lambda a: torch.tensor(a)[None, None]  # noqa: E731
        uv, depth = project_to_image(torch.tensor(ego_pt)[None, None, None], t(K), t(T), t(aug))
        assert depth.item() == pytest.approx(cam_pt[2])
        # independent projection: pinhole, then the 2D affine
        pix = K @ cam_pt
        expect_uv = aug[:2, :2] @ (pix[:2] / pix[2]) + aug[:2, 3]
        assert np.allclose(uv.numpy().reshape(2), expect_uv, atol=1e-6)
        point = torch.tensor([[[[[*expect_uv, cam_pt[2]]]]]])[0]  # 1 x 1 x 1 x 3 as a D x H x W x 3 frustum
        back = lift_to_ego(point, t(K), t(T), t(aug))
        assert np.allclose(back.numpy().reshape(3), ego_pt, atol=1e-6)


def test_frustum_point_lands_in_hand_computed_bev_cell() -> None:
    """Pick frustum cells, compute their 3D position by hand, and find them in the plan's BEV cell."""
    g = load_preset("tiny").geometry
    rng = np.random.default_rng(1)
    K, T = random_camera(rng)
    aug, _, _ = inference_image_aug((900, 1600), g)
    plan = build_bev_pool_plan(g, *(torch.tensor(a)[None, None] for a in (K, T, aug)))
    D, (fh, fw) = g.num_depth_bins, g.feature_size
    ny, nx = g.bev_size
    lookup = dict(zip(plan.depth_index.tolist(), plan.cell_index.tolist()))
    checked = 0
    for _ in range(200):
        d, h, w = int(rng.integers(D)), int(rng.integers(fh)), int(rng.integers(fw))
        u_in = (w + 0.5) * g.feature_stride - 0.5
        v_in = (h + 0.5) * g.feature_stride - 0.5
        u_raw = (u_in - aug[0, 3]) / aug[0, 0]
        v_raw = (v_in - aug[1, 3]) / aug[1, 1]
        depth = g.depth_min + d * g.depth_step
        ray = np.linalg.solve(K, [u_raw, v_raw, 1.0]) * depth
        p = T[:3, :3] @ ray + T[:3, 3]
        col = math.floor((p[0] - g.x_range[0]) / g.bev_resolution)
        row = math.floor((p[1] - g.y_range[0]) / g.bev_resolution)
        inside = 0 <= col < nx and 0 <= row < ny and g.z_range[0] <= p[2] < g.z_range[1]
        key = (d * fh + h) * fw + w
        if inside:
            assert lookup[key] == row * nx + col
            checked += 1
        else:
            assert key not in lookup
    assert checked > 50


def test_bev_cell_index_edges() -> None:
    g = load_preset("tiny").geometry
    pts = torch.tensor([[g.x_range[0], g.y_range[0], 0.0], [g.x_range[1] - 1e-3, g.y_range[1] - 1e-3, 0.0],
                        [g.x_range[1], 0.0, 0.0], [0.0, 0.0, g.z_range[1]]], dtype=torch.float64)
    flat, inside = bev_cell_index(pts, g)
    ny, nx = g.bev_size
    assert inside.tolist() == [True, True, False, False]
    assert flat[:2].tolist() == [0, ny * nx - 1]


def two_camera_rig(seed: int, geometry: GeometryConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K 2x3x3, cam_to_ego 2x4x4, img_aug 2x4x4) of two random cameras with 900x1600 images."""
    rng = np.random.default_rng(seed)
    cams = [random_camera(rng) for _ in range(2)]
    aug = np.stack([inference_image_aug((900, 1600), geometry)[0]] * 2)
    return np.stack([c[0] for c in cams]), np.stack([c[1] for c in cams]), aug


def test_plan_cache_rebuilds_only_on_change() -> None:
    g = load_preset("tiny").geometry
    K, T, aug = two_camera_rig(2, g)
    cache = PlanCache(g)
    p1 = cache.get(K, T, aug)
    p2 = cache.get(K.copy(), T.copy(), aug.copy())
    assert p1 is p2 and cache.builds == 1 and cache.hits == 1
    T2 = T.copy()
    T2[0, 0, 3] += 0.5
    p3 = cache.get(K, T2, aug)
    assert cache.builds == 2 and not torch.equal(p3.cell_index, p1.cell_index)
    masked = cache.get(K, T, aug, np.array([True, False]))
    n_points_cam0 = int((p1.pixel_index < g.feature_size[0] * g.feature_size[1]).sum())
    assert masked.num_points == n_points_cam0


def test_frustum_shape_and_values() -> None:
    g = load_preset("tiny").geometry
    f = frustum(g)
    assert f.shape == (g.num_depth_bins, *g.feature_size, 3)
    assert f[0, 0, 0].tolist() == pytest.approx([g.feature_stride / 2 - 0.5, g.feature_stride / 2 - 0.5, g.depth_min])


def test_plan_key_depends_on_every_input_but_not_on_the_sign_of_zero() -> None:
    g = load_preset("tiny").geometry
    K, T, aug = two_camera_rig(3, g)
    key = plan_key(g, K, T, aug)
    # a calibration whose exact zeros come back as tiny negatives (tf jitter) is the same calibration
    jitter = [a.copy() for a in (K, T, aug)]
    for a in jitter:
        a[a == 0.0] = -1e-12
    assert plan_key(g, *jitter) == key
    K2 = K.copy()
    K2[1, 0, 2] += 1.0
    aug2 = np.stack([inference_image_aug((720, 1280), g)[0]] * 2)
    others = {plan_key(g, K2, T, aug), plan_key(g, K, T, aug2), plan_key(g, K, T, aug, np.array([True, False])),
              plan_key(dataclasses.replace(g, depth_step=4.0), K, T, aug)}
    assert key not in others and len(others) == 4


def _level_camera(K: np.ndarray, pitch_down_deg: float = 0.0) -> np.ndarray:
    """cam_to_ego of a forward camera 1.6 m up, pitched down by pitch_down_deg."""
    a = math.radians(pitch_down_deg)
    Ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])  # nose down
    T = np.eye(4)
    T[:3, :3] = Ry @ np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)
    T[:3, 3] = [1.5, 0.0, 1.6]
    return T


@pytest.mark.parametrize("preset", ["r50", "tiny"])
def test_test_crop_keeps_nuscenes_and_serves_any_aspect(preset: str) -> None:
    """1600x900 with nuScenes-like principal points (the synthetic rig's, the sample rig's, none): the
    bottom-aligned BEVFusion crop, unchanged. 4:3 and 5:4 cameras: the principal point lands on the
    rows nuScenes' have (the bottom crop put it above the image: ground visible to only 18-28 m), so a
    level camera's horizon is in view. An image too short for the crop is padded, all of it in view."""
    from simdistill_ros.core.geometry import HorizonWarning, principal_row_band
    from simdistill_ros.core.rig import nuscenes_like_rig

    g = load_preset(preset).geometry
    out_h = g.image_size[0]
    bottom = (g.resize_width // 2 - g.image_size[1] // 2, round(900 * g.resize_width / 1600) - out_h)
    nuscenes_cy = (479.75, 481.78, 491.51, 492.78, 495.33, 501.2)  # one nuScenes log's six cameras
    Ks = [np.array([[1266.4, 0, 816.3], [0, 1266.4, cy], [0, 0, 1]]) for cy in nuscenes_cy]
    Ks += [c.K for c in nuscenes_like_rig(("a", "b"))] + [None]
    for K in Ks:
        assert inference_image_aug((900, 1600), g, K)[1:] == ((432 * g.resize_width // 768, g.resize_width), bottom)
    lo, hi = principal_row_band(g)
    for hw in ((960, 1280), (1024, 1280), (480, 640)):
        K = np.array([[0.6 * hw[1], 0, (hw[1] - 1) / 2], [0, 0.6 * hw[1], (hw[0] - 1) / 2], [0, 0, 1]])
        with warnings.catch_warnings():
            warnings.simplefilter("error", HorizonWarning)  # a level camera's horizon is in the crop
            aug, resized, crop = inference_image_aug(hw, g, K, _level_camera(K), "cam")
        row = (aug @ np.array([K[0, 2], K[1, 2], 1.0, 1.0]))[1]
        assert lo - 0.5 <= row <= hi + 0.5, (hw, row, (lo, hi))
        # the old bottom-aligned crop would have put the principal point above the crop
        assert K[1, 2] * resized[1] / hw[1] - (resized[0] - out_h) < 0
        assert 0 <= crop[1] <= resized[0] - out_h
    # too short (4:1): padded below, every row of the image in the crop
    aug, resized, crop = inference_image_aug((480, 1920), g)
    assert resized[0] < out_h and crop[1] <= 0 and crop[1] + out_h >= resized[0]


def test_short_image_is_padded_by_preprocess() -> None:
    from simdistill_ros.core.preprocess import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, preprocess_images

    g = load_preset("tiny").geometry
    img = np.full((240, 1920, 3), 200, np.uint8)  # 8:1, resized to 384 x 48
    x, augs = preprocess_images([img], g, "cpu")
    pixels = x[0, 0, 0].numpy() * IMAGENET_STD_RGB[0] + IMAGENET_MEAN_RGB[0]
    top = int(round(-inference_image_aug((240, 1920), g)[2][1]))
    assert np.allclose(pixels[top:top + 48], 200, atol=1.0)  # the whole image, at full brightness
    assert np.allclose(np.delete(pixels, np.s_[top:top + 48], axis=0), 0, atol=1e-3)  # black padding


def test_horizon_outside_the_crop_is_named() -> None:
    from simdistill_ros.core.geometry import HorizonWarning, horizon_message

    g = load_preset("r50").geometry
    K = np.array([[1266.0, 0, 799.5], [0, 1266.0, 449.5], [0, 0, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", HorizonWarning)
        inference_image_aug((900, 1600), g, K, _level_camera(K, 2.0), "camera 'CAM_FRONT'")
    with pytest.warns(HorizonWarning, match=r"camera 'CAM_FRONT': the horizon lies above the network input"):
        inference_image_aug((900, 1600), g, K, _level_camera(K, 10.0), "camera 'CAM_FRONT'")
    with pytest.warns(HorizonWarning, match=r"camera 'down': the horizon lies above the whole 1600x900 image.*no crop"):
        inference_image_aug((900, 1600), g, K, _level_camera(K, 40.0), "camera 'down'")
    aug = inference_image_aug((900, 1600), g, K)[0]
    assert "below the whole" in horizon_message(K, _level_camera(K, -40.0), aug, (900, 1600), g.image_size, "up")
    assert horizon_message(K, _level_camera(K), aug, (900, 1600), g.image_size) is None


def test_plan_equals_the_lifted_frustum_reference() -> None:
    """build_bev_pool_plan (composed per-camera rays) against lift_to_ego + bev_cell_index on every
    frustum point, with BEV augmentation, a masked camera and B = 2; sorted plans hold the same points."""
    g = load_preset("tiny").geometry
    rng = np.random.default_rng(5)
    K, T = zip(*[random_camera(rng) for _ in range(6)])
    augs = [image_aug_matrix(tuple(rng.uniform(0.2, 0.3, 2)), tuple(rng.uniform(0, 40, 2)), (352, 128),
                             flip=bool(rng.integers(2)), rotate_deg=rng.uniform(-5, 5)) for _ in range(6)]
    t = lambda a: torch.tensor(np.stack(a)).reshape(2, 3, *np.shape(a)[1:])  # noqa: E731
    c, s = math.cos(0.3), math.sin(0.3)
    bev = torch.tensor(np.stack([[[-c, s, 0, 0.5], [s, c, 0, -0.2], [0, 0, 1, 0], [0, 0, 0, 1]], np.eye(4)]))
    valid = torch.tensor([[True, False, True], [True, True, True]])
    plan = build_bev_pool_plan(g, t(K), t(T), t(augs), bev, valid)
    pts = lift_to_ego(frustum(g, torch.float64), t(K), t(T), t(augs), bev)
    cell, inside = bev_cell_index(pts, g)
    inside &= valid[:, :, None, None, None]
    want_depth = torch.nonzero(inside.reshape(-1)).squeeze(1)
    b = want_depth // (3 * g.num_depth_bins * g.feature_size[0] * g.feature_size[1])
    want_cell = b * (g.bev_size[0] * g.bev_size[1]) + cell.reshape(-1)[want_depth]
    assert torch.equal(plan.depth_index, want_depth) and torch.equal(plan.cell_index, want_cell)
    sorted_plan = build_bev_pool_plan(g, t(K), t(T), t(augs), bev, valid, sort_by_cell=True)
    assert bool((sorted_plan.cell_index[1:] >= sorted_plan.cell_index[:-1]).all())
    def points(p: BEVPoolPlan) -> list[tuple[int, int, int]]:
        return sorted(zip(p.depth_index.tolist(), p.pixel_index.tolist(), p.cell_index.tolist()))

    assert points(sorted_plan) == points(plan)
