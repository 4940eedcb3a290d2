"""BEV pooling (core/model/view_transform.py) against a naive per-point loop over the lifted frustum."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simdistill_ros.core.config import GeometryConfig
from simdistill_ros.core.geometry import frustum, image_aug_matrix, lift_to_ego
from simdistill_ros.core.model.view_transform import bev_pool, bev_pool_indices
from simdistill_ros.core.view_plan import build_bev_pool_plan

GEOM = GeometryConfig(image_size=(32, 64), resize_width=64, feature_stride=8, depth_min=2.0, depth_max=32.0,
                      depth_step=5.0, x_range=(-24.0, 24.0), y_range=(-20.0, 20.0), z_range=(-3.0, 5.0),
                      bev_resolution=4.0, bev_downsample=2)


def _rot(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return Rz @ Ry @ Rx


def random_cameras(rng: np.random.Generator, B: int, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random pinhole cameras looking roughly horizontally, rotated and translated, with random image aug."""
    optical_to_body = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    K = np.zeros((B, N, 3, 3))
    T = np.zeros((B, N, 4, 4))
    A = np.zeros((B, N, 4, 4))
    for b in range(B):
        for n in range(N):
            f = rng.uniform(40.0, 80.0)
            K[b, n] = [[f, 0, rng.uniform(50, 78)], [0, f * rng.uniform(0.9, 1.1), rng.uniform(28, 36)], [0, 0, 1]]
            T[b, n] = np.eye(4)
            T[b, n, :3, :3] = _rot(rng.uniform(-math.pi, math.pi), rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.1)) @ optical_to_body
            T[b, n, :3, 3] = rng.uniform([-2, -2, 0.5], [2, 2, 2.5])
            A[b, n] = image_aug_matrix((rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.55)), (rng.uniform(0, 6), rng.uniform(0, 4)),
                                       (64, 32), flip=bool(rng.integers(2)), rotate_deg=rng.uniform(-5, 5))
    return torch.as_tensor(K), torch.as_tensor(T), torch.as_tensor(A)


def naive_pool(depth: np.ndarray, context: np.ndarray, K: np.ndarray, T: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Loop over every (b, n, d, h, w): lift the feature-cell centre at that depth to the ego frame by hand
    (undo image aug, back-project with K, transform with cam_to_ego), find its cell, accumulate."""
    B, N, D, H, W = depth.shape
    C = context.shape[2]
    ny, nx = GEOM.bev_size
    out = np.zeros((B, C, ny, nx))
    s = GEOM.feature_stride
    for b in range(B):
        for n in range(N):
            A2, t2 = A[b, n, :2, :2], A[b, n, :2, 3]
            Kinv = np.linalg.inv(K[b, n])
            for d in range(D):
                z = GEOM.depth_min + d * GEOM.depth_step
                for h in range(H):
                    for w in range(W):
                        u, v = np.linalg.solve(A2, np.array([(w + 0.5) * s - 0.5, (h + 0.5) * s - 0.5]) - t2)
                        cam = Kinv @ np.array([u * z, v * z, z])
                        x, y, zz = T[b, n, :3, :3] @ cam + T[b, n, :3, 3]
                        col = math.floor((x - GEOM.x_range[0]) / GEOM.bev_resolution)
                        row = math.floor((y - GEOM.y_range[0]) / GEOM.bev_resolution)
                        if 0 <= col < nx and 0 <= row < ny and GEOM.z_range[0] <= zz < GEOM.z_range[1]:
                            out[b, :, row, col] += depth[b, n, d, h, w] * context[b, n, :, h, w]
    return out


def _inputs(seed: int, B: int, N: int, C: int) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    rng = np.random.default_rng(seed)
    cams = random_cameras(rng, B, N)
    D = GEOM.num_depth_bins
    fh, fw = GEOM.feature_size
    g = torch.Generator().manual_seed(seed)
    depth = torch.randn(B, N, D, fh, fw, generator=g).softmax(dim=2)
    context = torch.randn(B, N, C, fh, fw, generator=g)
    return depth, context, cams


@pytest.mark.parametrize("seed", [0, 1])
def test_bev_pool_matches_naive_loop(seed: int) -> None:
    B, N, C = 2, 3, 5
    depth, context, (K, T, A) = _inputs(seed, B, N, C)
    # the hand lift agrees with geometry.lift_to_ego (sanity of the reference itself)
    pts = lift_to_ego(frustum(GEOM, torch.float64), K, T, A)
    assert pts.shape == (B, N, GEOM.num_depth_bins, *GEOM.feature_size, 3)
    plan = build_bev_pool_plan(GEOM, K, T, A)
    assert 0 < plan.num_points < depth.numel()
    expected = naive_pool(depth.double().numpy(), context.double().numpy(), K.numpy(), T.numpy(), A.numpy())
    assert np.abs(expected).sum() > 0
    got = bev_pool(depth, context, plan, channel_chunk=2)
    assert got.shape == (B, C, *GEOM.bev_size)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=1e-5)
    plain = bev_pool_indices(depth, context, plan.depth_index, plan.pixel_index, plan.cell_index, plan.bev_size, 3)
    np.testing.assert_allclose(plain.numpy(), expected, atol=1e-5, rtol=1e-5)


def test_bev_pool_gradients() -> None:
    """The recomputing backward equals plain autograd, and passes gradcheck in float64."""
    B, N, C = 2, 2, 5
    depth, context, (K, T, A) = _inputs(3, B, N, C)
    plan = build_bev_pool_plan(GEOM, K, T, A)
    weight = torch.randn(B, C, *GEOM.bev_size)
    grads = []
    for recompute in (False, True):
        d = depth.clone().requires_grad_(True)
        c = context.clone().requires_grad_(True)
        out = bev_pool_indices(d, c, plan.depth_index, plan.pixel_index, plan.cell_index, plan.bev_size, 2, recompute)
        (out * weight).sum().backward()
        assert d.grad is not None and c.grad is not None
        assert d.grad.abs().sum() > 0 and c.grad.abs().sum() > 0
        grads.append((d.grad, c.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])

    keep = torch.arange(0, plan.num_points, max(1, plan.num_points // 40))
    idx = (plan.depth_index[keep], plan.pixel_index[keep], plan.cell_index[keep])
    d64 = depth.double().requires_grad_(True)
    c64 = context.double().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda d_, c_: bev_pool_indices(d_, c_, *idx, plan.bev_size, 2, True), (d64, c64), fast_mode=True)


def test_bev_pool_rejects_mismatched_plan() -> None:
    depth, context, (K, T, A) = _inputs(4, 2, 2, 3)
    plan = build_bev_pool_plan(GEOM, K[:1], T[:1], A[:1])
    with pytest.raises(ValueError, match="plan"):
        bev_pool(depth, context, plan)
