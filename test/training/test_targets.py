"""training.targets: CenterPoint heatmaps and regression slots against a hand-computed case and a naive
per-box loop written the way mmdet3d's CenterHead draws them (CornerNet radius, numpy gaussian)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simdistill_ros.core.classes import DEFAULT_TASKS
from simdistill_ros.core.config import DetectorConfig
from training.config import TargetConfig
from training.targets import build_targets, gaussian_radius, object_mask


def _box(x: float, y: float, l: float = 4.0, w: float = 2.0, yaw: float = 0.3) -> list[float]:
    return [x, y, 0.8, l, w, 1.6, yaw, 1.5, -0.5]


def test_heatmap_peak_and_slot_of_a_hand_computed_box(small_config: DetectorConfig) -> None:
    g = small_config.geometry  # head grid 32 x 32 cells of 3.2 m from (-51.2, -51.2)
    assert g.head_size == (32, 32) and g.head_resolution == pytest.approx(3.2)
    x, y = -51.2 + 3.2 * 10.5, -51.2 + 3.2 * 5.25  # continuous cell (10.5, 5.25): row 5, col 10
    boxes = torch.tensor([[_box(x, y)]])
    labels = torch.tensor([[0]])  # car, task 0
    t = build_targets(boxes, labels, DEFAULT_TASKS, g, TargetConfig())[0]
    heat = t.heatmap[0, 0]
    assert heat[5, 10] == 1.0 and int((heat == 1).sum()) == 1
    # 4 m x 2 m is 1.25 x 0.625 cells: CornerNet's radius is below 1, so min_radius 2 applies:
    # sigma = (2 * 2 + 1) / 6, the window is rows 3..7 x cols 8..12
    sigma = 5 / 6
    assert heat[5, 11].item() == pytest.approx(math.exp(-1 / (2 * sigma ** 2)), rel=1e-6)
    assert heat[7, 12].item() == pytest.approx(math.exp(-8 / (2 * sigma ** 2)), rel=1e-6)
    nz = heat.nonzero()
    assert nz[:, 0].min() == 3 and nz[:, 0].max() == 7 and nz[:, 1].min() == 8 and nz[:, 1].max() == 12
    assert t.mask[0].sum() == 1 and t.index[0, 0] == 5 * 32 + 10
    code = t.code[0, 0].tolist()
    want = [0.5, 0.25, 0.8, math.log(4.0), math.log(2.0), math.log(1.6), math.sin(0.3), math.cos(0.3), 1.5, -0.5]
    np.testing.assert_allclose(code, want, rtol=1e-5, atol=1e-5)
    # the other tasks see nothing
    others = build_targets(boxes, labels, DEFAULT_TASKS, g, TargetConfig())[1:]
    assert all(o.heatmap.sum() == 0 and not o.mask.any() for o in others)


def _naive_radius(height: float, width: float, min_overlap: float) -> float:
    a1, b1, c1 = 1, height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _naive_heatmap(boxes: np.ndarray, labels: np.ndarray, n_cls: int, size: tuple[int, int], x0: float, y0: float,
                   res: float, overlap: float, min_radius: int) -> np.ndarray:
    """mmdet3d's draw_heatmap_gaussian, one box at a time."""
    H, W = size
    heat = np.zeros((n_cls, H, W))
    for box, c in zip(boxes, labels):
        cx, cy = (box[0] - x0) / res, (box[1] - y0) / res
        col, row = int(math.floor(cx)), int(math.floor(cy))
        if not (0 <= col < W and 0 <= row < H):
            continue
        r = max(min_radius, int(_naive_radius(box[3] / res, box[4] / res, overlap)))
        sigma = (2 * r + 1) / 6
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                rr, cc = row + dy, col + dx
                if 0 <= rr < H and 0 <= cc < W:
                    heat[c, rr, cc] = max(heat[c, rr, cc], math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)))
    return heat


def test_heatmaps_match_a_naive_loop_on_random_boxes(small_config: DetectorConfig) -> None:
    g = small_config.geometry
    rng = np.random.default_rng()
    B, M = 2, 15
    boxes = np.zeros((B, M, 9))
    boxes[..., :2] = rng.uniform(-56, 56, (B, M, 2))  # some off the grid
    boxes[..., 3] = rng.uniform(0.4, 14.0, (B, M))  # small cones to long trailers (radius up to ~3 cells)
    boxes[..., 4] = rng.uniform(0.4, 3.5, (B, M))
    boxes[..., 5] = 1.5
    boxes[..., 6] = rng.uniform(-3, 3, (B, M))
    labels = rng.integers(-1, 10, (B, M))  # -1 is padding
    cfg = TargetConfig(gaussian_overlap=0.1, min_radius=2, max_objects=500)
    targets = build_targets(torch.from_numpy(boxes).float(), torch.from_numpy(labels), DEFAULT_TASKS, g, cfg)
    offset = 0
    for task, t in zip(DEFAULT_TASKS, targets):
        n = len(task.class_names)
        for b in range(B):
            sel = (labels[b] >= offset) & (labels[b] < offset + n)
            want = _naive_heatmap(boxes[b][sel], labels[b][sel] - offset, n, g.head_size, g.x_range[0], g.y_range[0],
                                  g.head_resolution, 0.1, 2)
            np.testing.assert_allclose(t.heatmap[b].numpy(), want, atol=1e-6)
        offset += n
    mask = object_mask(targets)
    assert mask.shape == (B, 1, *g.head_size)
    torch.testing.assert_close(mask[:, 0], sum(t.heatmap.sum(1) for t in targets))
    r = gaussian_radius(torch.tensor([3.0, 0.5]), torch.tensor([1.0, 0.2]), 0.1)
    np.testing.assert_allclose(r.numpy(), [_naive_radius(3.0, 1.0, 0.1), _naive_radius(0.5, 0.2, 0.1)], rtol=1e-6)


def test_max_objects_caps_slots_and_peaks(small_config: DetectorConfig) -> None:
    g = small_config.geometry
    xs = [-40.0, -20.0, 0.0, 20.0]
    boxes = torch.tensor([[_box(x, 10.0) for x in xs]])
    labels = torch.zeros(1, 4, dtype=torch.int64)
    t = build_targets(boxes, labels, DEFAULT_TASKS, g, TargetConfig(max_objects=3))[0]
    assert t.index.shape == (1, 3) and bool(t.mask.all())
    assert int((t.heatmap == 1).sum()) == 3
    col_of_fourth = int((20.0 + 51.2) // 3.2)
    assert t.heatmap[0, 0, :, col_of_fourth].max() < 1
