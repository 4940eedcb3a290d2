"""Geometry Compensation Module: identity behaviour, a naive per-cell reference, init, chunking."""
from __future__ import annotations

import math

import torch

from simdistill_ros.core.model.gcm import GeometryCompensation


def _bilinear_zero_pad(value_chw: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Bilinear sample at continuous pixel coordinates (x, y) (pixel centres at integers), zero outside."""
    C, H, W = value_chw.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(C, dtype=value_chw.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= xx < W and 0 <= yy < H:
                out += wx * wy * value_chw[:, yy, xx]
    return out


def naive_gcm_cell(m: GeometryCompensation, s_a_chw: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """S_l[:, i, j] computed for one cell with explicit loops over heads and points."""
    C, H, W = s_a_chw.shape
    heads, points, ch = m.num_heads, m.num_points, C // m.num_heads
    pos = torch.cat([m.col_embed[j], m.row_embed[i]])
    query = s_a_chw[:, i, j] + pos
    offsets = (m.sampling_offsets.weight @ query + m.sampling_offsets.bias).reshape(heads, points, 2)
    attn = (m.attention_weights.weight @ query + m.attention_weights.bias).reshape(heads, points).softmax(-1)
    value = torch.einsum("oc,chw->ohw", m.value_proj.weight, s_a_chw) + m.value_proj.bias[:, None, None]
    out = torch.zeros(C, dtype=s_a_chw.dtype)
    for h in range(heads):
        for k in range(points):
            # location (j + 0.5)/W + dx/W in [0, 1]; pixel coordinate = loc * W - 0.5 = j + dx
            x = j + float(offsets[h, k, 0])
            y = i + float(offsets[h, k, 1])
            out[h * ch:(h + 1) * ch] += attn[h, k] * _bilinear_zero_pad(value[h * ch:(h + 1) * ch], x, y)
    return s_a_chw[:, i, j] + m.output_proj.weight @ out + m.output_proj.bias


def test_reference_points_with_identity_projections_reproduce_the_map() -> None:
    torch.manual_seed(0)
    C, H, W = 8, 5, 7
    m = GeometryCompensation(C, num_heads=2, num_points=3, bev_size=(H, W))
    with torch.no_grad():
        m.sampling_offsets.bias.zero_()  # all points at the reference point (cell centre)
        for lin in (m.value_proj, m.output_proj):
            lin.weight.copy_(torch.eye(C))
            lin.bias.zero_()
    s_a = torch.randn(2, C, H, W)
    with torch.no_grad():
        torch.testing.assert_close(m.deformable_attention(s_a), s_a, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(m(s_a), 2 * s_a, atol=1e-6, rtol=1e-6)


def test_matches_naive_loop_with_random_parameters() -> None:
    torch.manual_seed(1)
    C, H, W = 8, 6, 5
    m = GeometryCompensation(C, num_heads=2, num_points=3, bev_size=(H, W), point_chunk=2).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.7)
        m.sampling_offsets.bias.mul_(3.0)  # some points fall outside the map (zero padding)
    s_a = torch.randn(2, C, H, W, dtype=torch.float64)
    with torch.no_grad():
        out = m(s_a)
        for b, i, j in ((0, 0, 0), (1, 3, 2), (0, 5, 4), (1, 2, 0)):
            torch.testing.assert_close(out[b, :, i, j], naive_gcm_cell(m, s_a[b], i, j), atol=1e-6, rtol=1e-6)


def test_deformable_detr_init() -> None:
    m = GeometryCompensation(16, num_heads=8, num_points=4, bev_size=(4, 4))
    bias = m.sampling_offsets.bias.detach().reshape(8, 4, 2)
    compass = torch.tensor([[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]], dtype=torch.float32)
    for k in range(4):
        torch.testing.assert_close(bias[:, k], compass * (k + 1), atol=1e-5, rtol=0)
    assert torch.count_nonzero(m.sampling_offsets.weight) == 0
    assert torch.count_nonzero(m.attention_weights.weight) == 0
    assert torch.count_nonzero(m.attention_weights.bias) == 0


def test_point_chunking_and_gradients() -> None:
    torch.manual_seed(2)
    C, H, W = 8, 6, 6
    a = GeometryCompensation(C, 4, 5, (H, W), point_chunk=1)
    b = GeometryCompensation(C, 4, 5, (H, W), point_chunk=5)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    b.load_state_dict(a.state_dict())
    s_a = torch.randn(1, C, H, W, requires_grad=True)
    out = a(s_a)
    torch.testing.assert_close(out, b(s_a))
    with torch.no_grad():  # the in-place inference path
        torch.testing.assert_close(out, b(s_a))
    out.square().sum().backward()
    assert s_a.grad is not None
    for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
        grad = getattr(a, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert a.row_embed.grad is not None and a.row_embed.grad.abs().sum() > 0
