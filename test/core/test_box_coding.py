"""Box code: known values, floor (not truncation) of the cell, and the encode/decode round trip."""
from __future__ import annotations

import math

import pytest
import torch

from simdistill_ros.core.box_coding import cells_inside, decode_code, encode_boxes
from simdistill_ros.core.config import load_preset


def _random_boxes(gen: torch.Generator, n: int, geometry) -> torch.Tensor:  # noqa: ANN001
    u = torch.rand(n, 9, generator=gen, dtype=torch.float64)
    x0, x1 = geometry.x_range
    y0, y1 = geometry.y_range
    return torch.stack([
        x0 + u[:, 0] * (x1 - x0), y0 + u[:, 1] * (y1 - y0), -3 + 6 * u[:, 2],
        0.2 + 15 * u[:, 3], 0.2 + 4 * u[:, 4], 0.3 + 4 * u[:, 5],
        -math.pi + 2 * math.pi * u[:, 6], -20 + 40 * u[:, 7], -20 + 40 * u[:, 8]], dim=1)


@pytest.mark.parametrize("preset", ["tiny", "r50"])
def test_encode_decode_round_trip(preset: str) -> None:
    geometry = load_preset(preset).geometry
    gen = torch.Generator().manual_seed(11)
    boxes = _random_boxes(gen, 500, geometry)
    cell, code = encode_boxes(boxes, geometry)
    assert cell.dtype == torch.int64 and cell.shape == (500, 2) and code.shape == (500, 10)
    assert bool(cells_inside(cell, geometry).all())
    assert bool(((code[:, :2] >= 0) & (code[:, :2] < 1)).all())
    back = decode_code(cell, code, geometry)
    torch.testing.assert_close(back, boxes, atol=1e-9, rtol=1e-9)


def test_known_code_values_and_floor_outside_the_grid() -> None:
    geometry = load_preset("r50").geometry  # x, y in [-54, 54], 0.6 m cells, 180 x 180
    res = geometry.head_resolution
    boxes = torch.tensor([
        [-54.0 + 2.25 * res, -54.0 + 7.75 * res, 1.0, 4.0, 2.0, 1.5, 0.5, 3.0, -1.0],
        [-54.0 - 0.25 * res, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
    ], dtype=torch.float64)
    cell, code = encode_boxes(boxes, geometry)
    assert cell[0].tolist() == [7, 2]
    torch.testing.assert_close(code[0], torch.tensor([0.25, 0.75, 1.0, math.log(4), math.log(2), math.log(1.5),
                                                      math.sin(0.5), math.cos(0.5), 3.0, -1.0], dtype=torch.float64))
    assert cell[1].tolist() == [90, -1]  # floor, not truncation towards zero
    assert abs(float(code[1, 0]) - 0.75) < 1e-9
    assert cells_inside(cell, geometry).tolist() == [True, False]


def test_decode_code_handles_leading_dims_and_bad_shapes() -> None:
    geometry = load_preset("tiny").geometry
    gen = torch.Generator().manual_seed(5)
    boxes = _random_boxes(gen, 24, geometry)
    cell, code = encode_boxes(boxes, geometry)
    back = decode_code(cell.reshape(2, 12, 2), code.reshape(2, 12, 10), geometry)
    torch.testing.assert_close(back.reshape(24, 9), boxes)
    with pytest.raises(ValueError, match="M x 9"):
        encode_boxes(boxes[:, :7], geometry)
    with pytest.raises(ValueError, match="code"):
        decode_code(cell, code[:, :9], geometry)
