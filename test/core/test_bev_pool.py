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


def _duplicated_indices(seed: int, B: int, N: int, D: int, C: int, H: int, W: int,
                        ny: int, nx: int, P: int) -> tuple[torch.Tensor, ...]:
    """Random index tensors in which depth, pixel and cell indices repeat (a plan never repeats a depth
    index, but bev_pool_indices is public and must be right for any indices)."""
    g = torch.Generator().manual_seed(seed)
    depth_index = torch.randint(0, B * N * D * H * W, (P,), generator=g)
    depth_index[P // 2:] = depth_index[: P - P // 2]  # every depth index of the first half appears twice
    hw = depth_index % (H * W)
    bn = depth_index // (D * H * W)
    pixel_index = bn * (H * W) + hw
    cell_index = (bn // N) * (ny * nx) + torch.randint(0, ny * nx, (P,), generator=g)
    cell_index[::3] = cell_index[0]  # many points in one cell
    return depth_index, pixel_index, cell_index


@pytest.mark.parametrize("recompute", [False, True])
def test_full_gradcheck_with_duplicated_indices(recompute: bool) -> None:
    """Full (not fast-mode) float64 gradcheck of both backward paths with repeated indices."""
    B, N, D, C, H, W, ny, nx = 1, 2, 3, 3, 2, 3, 3, 4
    idx = _duplicated_indices(5, B, N, D, C, H, W, ny, nx, P=40)
    assert len(torch.unique(idx[0])) < len(idx[0])
    g = torch.Generator().manual_seed(6)
    depth = torch.rand(B, N, D, H, W, generator=g, dtype=torch.float64).requires_grad_(True)
    context = torch.randn(B, N, C, H, W, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d, c: bev_pool_indices(d, c, *idx, (ny, nx), 2, recompute),
                                    (depth, context), fast_mode=False)


def _naive_indexed_pool(depth: torch.Tensor, context: torch.Tensor, idx: tuple[torch.Tensor, ...],
                        bev_size: tuple[int, int]) -> torch.Tensor:
    """A per-point loop in float64: out[b, :, cell] += depth[p] * context[:, pixel]."""
    B, N, C, H, W = context.shape
    ny, nx = bev_size
    d = depth.double().reshape(-1)
    c = context.double().permute(2, 0, 1, 3, 4).reshape(C, -1)
    out = torch.zeros(C, B * ny * nx, dtype=torch.float64)
    for di, pi, ci in zip(*(t.tolist() for t in idx)):
        out[:, ci] += d[di] * c[:, pi]
    return out.reshape(C, B, ny, nx).permute(1, 0, 2, 3)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("recompute", [False, True])
def test_mixed_precision_forward_and_backward(half: torch.dtype, recompute: bool) -> None:
    """fp32 depth probabilities with fp16/bf16 context (what CUDA autocast produces), and both in half:
    forward and backward run and agree with the fp32 computation to the inputs' own rounding."""
    B, N, C = 1, 3, 6
    depth, context, (K, T, A) = _inputs(7, B, N, C)
    plan = build_bev_pool_plan(GEOM, K, T, A)
    # repeated indices too, so the half-precision backward also has to accumulate depth gradients
    idx = tuple(torch.cat([t, t[: t.numel() // 3]]) for t in (plan.depth_index, plan.pixel_index, plan.cell_index))
    weight = torch.randn(B, C, *GEOM.bev_size)
    context_half = context.to(half)  # the reference sees the same rounded context values
    ref_d = depth.double().requires_grad_(True)
    ref_c = context_half.double().requires_grad_(True)
    ref = _naive_indexed_pool(ref_d, ref_c, idx, plan.bev_size)
    (ref * weight.double()).sum().backward()
    eps = {torch.float16: 1e-3, torch.bfloat16: 8e-3}[half]
    for depth_dtype in (torch.float32, half):
        d = depth.to(depth_dtype).detach().clone().requires_grad_(True)
        c = context_half.clone().requires_grad_(True)
        out = bev_pool_indices(d, c, *idx, plan.bev_size, 4, recompute)
        assert out.dtype == torch.promote_types(depth_dtype, half)
        (out.float() * weight).sum().backward()
        assert d.grad is not None and c.grad is not None
        assert d.grad.dtype == depth_dtype and c.grad.dtype == half
        scale = float(ref.detach().abs().max())
        # fp32 accumulation: the error is the inputs' and output's rounding, not a sum of many roundings
        tol = (eps if depth_dtype == half else 1e-6) + eps  # inputs rounded to half, output to out.dtype
        assert float((out.detach().double() - ref.detach()).abs().max()) <= tol * scale * 2
        torch.testing.assert_close(d.grad.double(), ref_d.grad, atol=4 * eps * float(ref_d.grad.abs().max()), rtol=0)
        torch.testing.assert_close(c.grad.double(), ref_c.grad, atol=4 * eps * float(ref_c.grad.abs().max()), rtol=0)


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_fp32(half: torch.dtype, device: str) -> None:
    """4096 points in one cell from 4 depth entries (a BEV cell of the r50 preset sums hundreds): with
    both inputs in half precision the pooled sum and the depth gradients stay within one rounding of
    the half dtype. Accumulating in half does not (bf16 stalls at 256 when adding values below 1);
    CPU scatter_add happens to accumulate reduced types in fp32 by itself, CUDA atomics and
    index_add_ do not."""
    g = torch.Generator().manual_seed(8)
    B, N, D, C, H, W, P = 1, 1, 4, 2, 2, 2, 4096
    depth = torch.rand(B, N, D, H, W, generator=g).to(half)
    context = torch.rand(B, N, C, H, W, generator=g).to(half)
    depth_index = torch.randint(0, 4, (P,), generator=g)
    pixel_index = depth_index % (H * W)
    cell_index = torch.zeros(P, dtype=torch.int64)
    idx = (depth_index, pixel_index, cell_index)
    # float64 reference, vectorised (one cell): sum_p depth[d_p] * context[:, q_p]
    d64, c64 = depth.double().reshape(-1), context.double().reshape(C, -1)
    want = (d64[depth_index] * c64[:, pixel_index]).sum(1).reshape(1, C, 1, 1)
    grad_want = torch.zeros(D * H * W, dtype=torch.float64).index_add_(0, depth_index, c64[:, pixel_index].sum(0))[:4]
    eps = torch.finfo(half).eps
    for recompute in (False, True):
        d = depth.to(device).clone().requires_grad_(True)
        got = bev_pool_indices(d, context.to(device), *(t.to(device) for t in idx), (1, 1), 1, recompute)
        assert got.dtype == half
        got.float().sum().backward()
        assert d.grad is not None
        assert float(((got.detach().double().cpu() - want) / want).abs().max()) <= eps, recompute
        grad_got = d.grad.double().cpu().reshape(-1)[:4]
        assert float(((grad_got - grad_want) / grad_want).abs().max()) <= eps, recompute


def test_bad_inputs_are_named() -> None:
    depth, context, (K, T, A) = _inputs(4, 1, 2, 3)
    plan = build_bev_pool_plan(GEOM, K, T, A)
    idx = (plan.depth_index, plan.pixel_index, plan.cell_index)
    with pytest.raises(ValueError, match="context_bnchw must be a floating-point tensor, got torch.int64"):
        bev_pool_indices(depth, context.long(), *idx, plan.bev_size)
    with pytest.raises(ValueError, match="pixel_index must be a 1-D int64 tensor, got torch.int32"):
        bev_pool_indices(depth, context, idx[0], idx[1].int(), idx[2], plan.bev_size)
    with pytest.raises(ValueError, match="index tensors differ in length"):
        bev_pool_indices(depth, context, idx[0][:-1], idx[1], idx[2], plan.bev_size)
    with pytest.raises(ValueError, match="disagree on B, N, fH or fW"):
        bev_pool_indices(depth[:, :1], context, *idx, plan.bev_size)
    with pytest.raises(ValueError, match="channel_chunk must be >= 1"):
        bev_pool_indices(depth, context, *idx, plan.bev_size, 0)


def test_bev_pool_rejects_mismatched_plan() -> None:
    depth, context, (K, T, A) = _inputs(4, 2, 2, 3)
    plan = build_bev_pool_plan(GEOM, K[:1], T[:1], A[:1])
    with pytest.raises(ValueError, match="plan"):
        bev_pool(depth, context, plan)


def test_view_transform_backward_under_cpu_bf16_autocast() -> None:
    """LSSViewTransform as Student.forward_train runs it (recomputing backward) under autocast: bf16
    depthnet and downsample convolutions, bf16 softmax, the pooling and its backward; every gradient is
    finite and nonzero. (CUDA autocast adds fp32 softmax with fp16 context: the mixed case above.)"""
    from simdistill_ros.core.model.view_transform import LSSViewTransform

    depth, context, (K, T, A) = _inputs(9, 1, 3, 4)
    plan = build_bev_pool_plan(GEOM, K, T, A)
    torch.manual_seed(0)
    vt = LSSViewTransform(16, 8, GEOM.num_depth_bins, GEOM.bev_size, GEOM.bev_downsample).train()
    feats = torch.randn(1, 3, 16, *GEOM.feature_size, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bev, depth_probs = vt(feats, plan.depth_index, plan.pixel_index, plan.cell_index, recompute_backward=True)
        assert depth_probs.dtype == torch.bfloat16
        loss = bev.float().square().mean()
    loss.backward()
    for name, p in [("feats", feats), *vt.named_parameters()]:
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    assert float(vt.depthnet.weight.grad.abs().sum()) > 0 and float(feats.grad.abs().sum()) > 0
