"""Exact rotated bird's-eye-view IoU of boxes (x, y, length, width, yaw) in pure PyTorch.

Each pair is intersected by Sutherland-Hodgman clipping, vectorised over all pairs: box a's corners
are expressed in box b's frame, where b is the axis-aligned rectangle |x| <= l/2, |y| <= w/2, and the
polygon is clipped by b's four half-planes in turn (at most 8 vertices result). The intersection
area is the shoelace area of the clipped polygon. Works on CPU and CUDA tensors of any float dtype.
"""
from __future__ import annotations

import torch
from torch import Tensor

# corner order (counter-clockwise) in units of (length/2, width/2)
_CORNER_SIGNS = ((1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0), (1.0, -1.0))


def box_corners_bev(boxes_n5: Tensor) -> Tensor:
    """N x 4 x 2 BEV corners (counter-clockwise) of boxes (x, y, length, width, yaw)."""
    cx, cy, length, width, yaw = (v[:, None] for v in boxes_n5.t().contiguous())
    signs = boxes_n5.new_tensor(_CORNER_SIGNS)
    hx, hy = 0.5 * length * signs[:, 0], 0.5 * width * signs[:, 1]
    c, s = torch.cos(yaw), torch.sin(yaw)
    return torch.stack([c * hx - s * hy + cx, s * hx + c * hy + cy], dim=-1)


def _clip_half_plane(poly: Tensor, count: Tensor, dist: Tensor) -> tuple[Tensor, Tensor]:
    """Clip polygons (P x K x 2, first `count` vertices valid) by the half-plane dist >= 0.

    dist: P x K signed distance of each vertex to the clipping line (positive inside).
    Returns the clipped polygons (P x K' x 2) and their vertex counts.
    """
    P, K, _ = poly.shape
    idx = torch.arange(K, device=poly.device)
    valid = idx[None, :] < count[:, None]
    prev_idx = (idx[None, :] - 1) % count.clamp(min=1)[:, None]
    prev = torch.gather(poly, 1, prev_idx[..., None].expand(P, K, 2))
    d_prev = torch.gather(dist, 1, prev_idx)
    in_cur, in_prev = dist >= 0, d_prev >= 0
    crossing = valid & (in_cur != in_prev)
    # the signs differ where crossing, so the denominator is nonzero there
    denom = torch.where(crossing, d_prev - dist, torch.ones_like(dist))
    t = (d_prev / denom).clamp(0.0, 1.0)
    inter = prev + t[..., None] * (poly - prev)
    # each input vertex emits [intersection if the edge prev->cur crosses] then [cur if inside]
    cand = torch.stack([inter, poly], dim=2).reshape(P, 2 * K, 2)
    emit = torch.stack([crossing, valid & in_cur], dim=2).reshape(P, 2 * K)
    new_count = emit.sum(dim=1)
    k_out = int(new_count.max()) if P > 0 else 0
    k_out = max(k_out, 1)
    pos = torch.where(emit, emit.cumsum(dim=1) - 1, torch.full_like(new_count[:, None], k_out))
    out = poly.new_zeros(P, k_out + 1, 2)
    out.scatter_(1, pos[..., None].expand(P, 2 * K, 2), cand)
    return out[:, :k_out], new_count


def _polygon_area(poly: Tensor, count: Tensor) -> Tensor:
    """Absolute shoelace area of polygons P x K x 2 with `count` valid vertices."""
    P, K, _ = poly.shape
    idx = torch.arange(K, device=poly.device)
    valid = idx[None, :] < count[:, None]
    nxt_idx = (idx[None, :] + 1) % count.clamp(min=1)[:, None]
    nxt = torch.gather(poly, 1, nxt_idx[..., None].expand(P, K, 2))
    cross = poly[..., 0] * nxt[..., 1] - poly[..., 1] * nxt[..., 0]
    return (torch.where(valid, cross, torch.zeros_like(cross)).sum(dim=1) * 0.5).abs()


def rotated_intersection_pairs(a_p5: Tensor, b_p5: Tensor) -> Tensor:
    """Intersection area (P) of box pairs a[i], b[i], boxes as (x, y, length, width, yaw)."""
    P = a_p5.shape[0]
    if P == 0:
        return a_p5.new_zeros(0)
    corners = box_corners_bev(a_p5)
    bx, by, bl, bw, byaw = (v[:, None] for v in b_p5.t().contiguous())
    # a's corners in b's frame: translate by -centre_b, rotate by -yaw_b
    c, s = torch.cos(byaw), torch.sin(byaw)
    dx = corners[..., 0] - bx
    dy = corners[..., 1] - by
    poly = torch.stack([c * dx + s * dy, -s * dx + c * dy], dim=-1)
    hl, hw = bl * 0.5, bw * 0.5
    count = torch.full((P,), 4, dtype=torch.long, device=a_p5.device)
    for axis, sign, half in ((0, -1.0, hl), (0, 1.0, hl), (1, -1.0, hw), (1, 1.0, hw)):
        # inside: half + sign * coord >= 0  (sign -1: coord <= half; sign +1: coord >= -half)
        poly, count = _clip_half_plane(poly, count, half + sign * poly[..., axis])
    return _polygon_area(poly, count)


def rotated_iou_pairs(a_p5: Tensor, b_p5: Tensor) -> Tensor:
    """IoU (P) of box pairs a[i], b[i] in BEV; boxes (x, y, length, width, yaw). Zero-area pairs give 0."""
    inter = rotated_intersection_pairs(a_p5, b_p5)
    area_a = a_p5[:, 2] * a_p5[:, 3]
    area_b = b_p5[:, 2] * b_p5[:, 3]
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)),
                       torch.zeros_like(union))


def rotated_iou_matrix(a_n5: Tensor, b_m5: Tensor) -> Tensor:
    """N x M BEV IoU of boxes a (N x 5) against boxes b (M x 5), boxes (x, y, length, width, yaw).

    Only pairs whose circumscribed circles overlap are clipped; the rest are 0.
    """
    N, M = a_n5.shape[0], b_m5.shape[0]
    out = a_n5.new_zeros(N, M)
    if N == 0 or M == 0:
        return out
    ra = 0.5 * torch.hypot(a_n5[:, 2], a_n5[:, 3])
    rb = 0.5 * torch.hypot(b_m5[:, 2], b_m5[:, 3])
    ax, ay = a_n5[:, :2].t().contiguous()  # contiguous columns: much faster broadcasting on CPU
    bx, by = b_m5[:, :2].t().contiguous()
    dx = ax[:, None] - bx[None, :]
    dy = ay[:, None] - by[None, :]
    reach = ra[:, None] + rb[None, :]
    near = dx * dx + dy * dy <= reach * reach * (1.0 + 1e-6) + 1e-12
    ii, jj = near.nonzero(as_tuple=True)
    if ii.numel():
        out[ii, jj] = rotated_iou_pairs(a_n5[ii], b_m5[jj])
    return out
