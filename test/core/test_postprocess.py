"""decode() on constructed head outputs: peaks with known codes come back as exactly those boxes (all
yaw quadrants, velocity, global labels); score threshold, range filter, NMS, caps, batch, Detections."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from simdistill_ros.core.box_coding import encode_boxes
from simdistill_ros.core.classes import DEFAULT_TASKS
from simdistill_ros.core.config import GeometryConfig, PostprocessConfig, load_preset
from simdistill_ros.core.postprocess import decode, to_detections

TASKS = DEFAULT_TASKS
CLASSES = tuple(n for t in TASKS for n in t.class_names)
BACKGROUND = -30.0


@pytest.fixture
def geometry() -> GeometryConfig:
    return load_preset("tiny").geometry  # 64 x 64 head, 1.6 m cells, x, y in [-51.2, 51.2]


def _empty_heads(geometry: GeometryConfig, batch: int = 1) -> list[torch.Tensor]:
    hh, wh = geometry.head_size
    heads = []
    for t in TASKS:
        h = torch.zeros(batch, 10 + len(t.class_names), hh, wh)
        h[:, 10:] = BACKGROUND
        heads.append(h)
    return heads


def _place(heads: list[torch.Tensor], geometry: GeometryConfig, box: list[float], cls_name: str, score: float,
           b: int = 0) -> None:
    """Write the code of `box` and a heatmap logit giving `score` at the box's cell."""
    t = next(i for i, task in enumerate(TASKS) if cls_name in task.class_names)
    c = TASKS[t].class_names.index(cls_name)
    cell, code = encode_boxes(torch.tensor([box], dtype=torch.float64), geometry)
    r, col = cell[0].tolist()
    heads[t][b, :10, r, col] = code[0].float()
    heads[t][b, 10 + c, r, col] = math.log(score / (1 - score))


def _by_position(boxes: torch.Tensor, xy: tuple[float, float]) -> int:
    d = (boxes[:, :2] - torch.tensor(xy)).norm(dim=1)
    i = int(d.argmin())
    assert float(d[i]) < 1e-3, f"no box near {xy}"
    return i


def test_constructed_peaks_decode_to_their_boxes_all_quadrants(geometry: GeometryConfig) -> None:
    gen = torch.Generator().manual_seed(7)
    heads = _empty_heads(geometry)
    yaws = [0.4, 1.9, -2.6, -0.9, math.pi - 1e-3, -math.pi / 2, 0.0, math.pi / 2, 3.0, -3.0]
    placed = []
    for k, name in enumerate(CLASSES):  # one box per class on a 15 m lattice (no NMS interaction)
        u = torch.rand(7, generator=gen).tolist()
        box = [-40.0 + 15.0 * (k % 5) + u[0], -30.0 + 15.0 * (k // 5) + u[1], -1.0 + 2 * u[2], 1.0 + 4 * u[3],
               0.5 + 2 * u[4], 0.8 + 2 * u[5], yaws[k], -8 + 16 * u[6], 5.0 - k]
        score = 0.2 + 0.07 * k
        _place(heads, geometry, box, name, score)
        placed.append((box, name, score))
    cfg = PostprocessConfig()
    [(boxes, scores, labels)] = decode(tuple(heads), TASKS, geometry, cfg)
    assert len(boxes) == len(placed)
    assert torch.all(scores[:-1] >= scores[1:])
    for box, name, score in placed:
        i = _by_position(boxes, (box[0], box[1]))
        torch.testing.assert_close(boxes[i], torch.tensor(box), atol=2e-5, rtol=1e-5)
        assert abs(float(scores[i]) - score) < 1e-5
        assert CLASSES[int(labels[i])] == name


def test_decode_uses_cell_plus_offset_explicitly(geometry: GeometryConfig) -> None:
    """Independent of encode_boxes: reg (0.25, 0.75) at cell (row 10, col 40)."""
    heads = _empty_heads(geometry)
    res = geometry.head_resolution
    code = torch.tensor([0.25, 0.75, 0.5, math.log(4.5), math.log(1.9), math.log(1.6), -1.0, 0.0, 2.0, -3.0])
    heads[0][0, :10, 10, 40] = code
    heads[0][0, 10, 10, 40] = 2.0
    [(boxes, scores, labels)] = decode(tuple(heads), TASKS, geometry, PostprocessConfig())
    want = torch.tensor([-51.2 + 40.25 * res, -51.2 + 10.75 * res, 0.5, 4.5, 1.9, 1.6, -math.pi / 2, 2.0, -3.0])
    torch.testing.assert_close(boxes[0], want, atol=1e-5, rtol=1e-5)
    assert labels.tolist() == [0] and abs(float(scores[0]) - 1 / (1 + math.exp(-2.0))) < 1e-6


def test_score_threshold_and_range_filter(geometry: GeometryConfig) -> None:
    heads = _empty_heads(geometry)
    _place(heads, geometry, [0.0, 0.0, 0.0, 4, 2, 1.5, 0, 0, 0], "car", 0.31)
    _place(heads, geometry, [20.0, 0.0, 0.0, 4, 2, 1.5, 0, 0, 0], "car", 0.29)
    _place(heads, geometry, [40.0, 30.0, 0.0, 4, 2, 1.5, 0, 0, 0], "truck", 0.9)   # x beyond 35
    _place(heads, geometry, [-20.0, 10.0, 8.0, 1, 1, 1.0, 0, 0, 0], "barrier", 0.9)  # z beyond 5
    _place(heads, geometry, [-20.0, -34.9, 0.0, 0.6, 0.6, 1.7, 0, 0, 0], "pedestrian", 0.5)  # inside
    cfg = PostprocessConfig(score_threshold=0.3, post_center_range=(-35.0, -35.0, -5.0, 35.0, 35.0, 5.0))
    [(boxes, scores, labels)] = decode(tuple(heads), TASKS, geometry, cfg)
    assert sorted(CLASSES[i] for i in labels.tolist()) == ["car", "pedestrian"]
    assert float(boxes[labels == 0][0, 0]) == pytest.approx(0.0, abs=1e-5)
    cfg_low = dataclasses.replace(cfg, score_threshold=0.1, post_center_range=(-61.2, -61.2, -10, 61.2, 61.2, 10))
    [(boxes, _, labels)] = decode(tuple(heads), TASKS, geometry, cfg_low)
    assert len(boxes) == 5


def test_nms_inside_decode_circle_rotate_and_scaling(geometry: GeometryConfig) -> None:
    heads = _empty_heads(geometry)
    # cars 1.2 m apart (1.44 < 4): circle NMS keeps the better; a third car far away stays
    _place(heads, geometry, [0.0, 0.0, 0.0, 4, 2, 1.5, 0.1, 0, 0], "car", 0.6)
    _place(heads, geometry, [1.2 + 0.4, 0.0, 0.0, 4, 2, 1.5, 0.1, 0, 0], "car", 0.8)
    _place(heads, geometry, [20.0, 20.0, 0.0, 4, 2, 1.5, 0.1, 0, 0], "car", 0.5)
    # a truck and a construction vehicle overlapping (class-agnostic within the task): one survives
    _place(heads, geometry, [-20.0, 0.0, 0.0, 8, 3, 3, 0.0, 0, 0], "truck", 0.7)
    _place(heads, geometry, [-18.4, 0.0, 0.0, 8, 3, 3, 0.2, 0, 0], "construction_vehicle", 0.4)
    # a car overlapping the truck: other task, not suppressed
    _place(heads, geometry, [-20.0, 1.6, 0.0, 4, 2, 1.5, 0.0, 0, 0], "car", 0.3)
    # pedestrians 1.6 m apart, 1.0 x 1.0: disjoint as is, IoU (0.9 * 2.5)/(2 * 6.25 - 2.25) = 0.22 at x2.5
    _place(heads, geometry, [-30.0, -30.0, 0.0, 1.0, 1.0, 1.7, 0.0, 0, 0], "pedestrian", 0.9)
    _place(heads, geometry, [-28.4, -30.0, 0.0, 1.0, 1.0, 1.7, 0.0, 0, 0], "pedestrian", 0.8)
    [(boxes, scores, labels)] = decode(tuple(heads), TASKS, geometry, PostprocessConfig())
    names = sorted(CLASSES[i] for i in labels.tolist())
    assert names == ["car", "car", "car", "pedestrian", "truck"]
    assert sorted(round(float(s), 3) for s in scores[labels == 0]) == [0.3, 0.5, 0.8]
    no_scaling = tuple(dataclasses.replace(t, size_scale=(1.0,) * len(t.class_names)) for t in TASKS)
    [(_, _, labels)] = decode(tuple(heads), no_scaling, geometry, PostprocessConfig())
    assert sorted(CLASSES[i] for i in labels.tolist()).count("pedestrian") == 2


def test_post_nms_max_max_detections_and_batch(geometry: GeometryConfig) -> None:
    heads = _empty_heads(geometry, batch=2)
    rng = np.random.default_rng(3)
    scores0 = rng.uniform(0.2, 0.95, 12)
    for k, s in enumerate(scores0):  # 12 cars 8 m apart in batch element 0
        _place(heads, geometry, [-45.0 + 8 * k, 5.0, 0, 4, 2, 1.5, 0, 0, 0], "car", float(s), b=0)
    _place(heads, geometry, [10.0, -10.0, 0, 0.5, 0.5, 1.0, 0, 0, 0], "traffic_cone", 0.7, b=1)
    cfg = PostprocessConfig(post_nms_max=5)
    out = decode(tuple(heads), TASKS, geometry, cfg)
    assert len(out) == 2
    np.testing.assert_allclose(np.sort(out[0][1].numpy())[::-1], np.sort(scores0)[::-1][:5], atol=1e-5)
    assert out[1][2].tolist() == [CLASSES.index("traffic_cone")]
    [(boxes, scores, _), _] = decode(tuple(heads), TASKS, geometry, dataclasses.replace(cfg, max_detections=3))
    np.testing.assert_allclose(scores.numpy(), np.sort(scores0)[::-1][:3], atol=1e-5)


def test_pre_nms_top_k_limits_candidates(geometry: GeometryConfig) -> None:
    heads = _empty_heads(geometry)
    for k in range(6):
        _place(heads, geometry, [-40.0 + 10 * k, 0.0, 0, 4, 2, 1.5, 0, 0, 0], "car", 0.5 + 0.05 * k)
    [(_, scores, _)] = decode(tuple(heads), TASKS, geometry, PostprocessConfig(pre_nms_top_k=4))
    np.testing.assert_allclose(scores.numpy(), [0.75, 0.7, 0.65, 0.6], atol=1e-5)


def test_empty_output_fp16_heads_and_bad_heads(geometry: GeometryConfig) -> None:
    heads = _empty_heads(geometry)
    [(boxes, scores, labels)] = decode(tuple(heads), TASKS, geometry, PostprocessConfig())
    assert boxes.shape == (0, 9) and scores.shape == (0,) and labels.shape == (0,) and labels.dtype == torch.int64
    _place(heads, geometry, [3.0, 4.0, 0, 4, 2, 1.5, 0.7, 1, 2], "bus", 0.6)
    [(boxes, _, _)] = decode(tuple(h.half() for h in heads), TASKS, geometry, PostprocessConfig())
    assert boxes.dtype == torch.float32
    torch.testing.assert_close(boxes[0], torch.tensor([3.0, 4.0, 0, 4, 2, 1.5, 0.7, 1, 2]), atol=5e-3, rtol=2e-3)
    with pytest.raises(ValueError, match=r"heads\[2\]"):
        decode(tuple(heads[:2]) + (heads[2][:, :11],) + tuple(heads[3:]), TASKS, geometry, PostprocessConfig())
    with pytest.raises(ValueError, match="6 tasks"):
        decode(tuple(heads[:5]), TASKS, geometry, PostprocessConfig())


def test_to_detections(geometry: GeometryConfig) -> None:
    heads = _empty_heads(geometry)
    _place(heads, geometry, [3.0, 4.0, 0, 4, 2, 1.5, 0.7, 1, 2], "bicycle", 0.6)
    out = decode(tuple(heads), TASKS, geometry, PostprocessConfig())[0]
    det = to_detections(out, CLASSES, stamp_ns=42, frame_id="ego")
    assert det.names == ["bicycle"] and det.stamp_ns == 42 and det.frame_id == "ego"
    assert det.boxes.dtype == np.float32 and det.boxes.shape == (1, 9)
