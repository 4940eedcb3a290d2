"""Rotated BEV IoU against shapely; greedy, circle and rotated NMS on constructed and random cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from shapely import affinity
from shapely.geometry import box as shapely_box

from simdistill_ros.core.classes import DEFAULT_TASKS, TaskSpec
from simdistill_ros.core.postprocess import circle_nms, greedy_keep, rotated_nms, task_nms
from simdistill_ros.core.rotated_iou import rotated_intersection_pairs, rotated_iou_matrix, rotated_iou_pairs


def _shapely_poly(b: np.ndarray):  # noqa: ANN202
    x, y, l, w, yaw = (float(v) for v in b)
    p = shapely_box(x - l / 2, y - w / 2, x + l / 2, y + w / 2)
    return affinity.rotate(p, yaw, origin=(x, y), use_radians=True)


def _shapely_iou(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = _shapely_poly(a), _shapely_poly(b)
    inter = pa.intersection(pb).area
    union = pa.area + pb.area - inter
    return inter / union if union > 0 else 0.0


def _random_boxes(rng: np.random.Generator, n: int, spread: float = 4.0) -> np.ndarray:
    xy = rng.uniform(-spread, spread, (n, 2))
    lw = rng.uniform(0.2, 5.0, (n, 2))
    yaw = rng.uniform(-math.pi, math.pi, (n, 1))
    return np.concatenate([xy, lw, yaw], axis=1)


def _special_pairs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Identical, contained, disjoint, edge- and corner-touching, tiny, crossed and 45-degree pairs."""
    a, b = [], []
    for _ in range(10):
        base = _random_boxes(rng, 1)[0]
        x, y, l, w, yaw = base
        c, s = math.cos(yaw), math.sin(yaw)
        a.append(base); b.append(base.copy())                                           # identical
        a.append(base); b.append(np.array([x, y, l * 0.5, w * 0.3, yaw + rng.uniform(-0.2, 0.2)]))  # contained
        a.append(base); b.append(np.array([x + 40.0, y - 30.0, l, w, rng.uniform(-3, 3)]))   # disjoint
        a.append(base); b.append(np.array([x + c * l, y + s * l, l, w, yaw]))            # edge-touching
        a.append(base); b.append(np.array([x + c * l - s * w, y + s * l + c * w, l, w, yaw]))  # corner-touching
        a.append(base); b.append(np.array([x, y, l, w, yaw + math.pi / 2]))              # crossed
        a.append(base); b.append(np.array([x + 0.3, y - 0.2, l, w, yaw + math.pi / 4]))  # 45 degrees
        a.append(base); b.append(np.array([x + 0.5 * c * l, y + 0.5 * s * l, l, w, yaw]))  # half overlap
        a.append(base); b.append(np.array([x, y, l, w, yaw + math.pi]))                  # same box, flipped
        tiny = np.array([x, y, 1e-3, 2e-3, yaw])
        a.append(tiny); b.append(np.array([x + 4e-4, y, 1e-3, 1e-3, yaw + 0.3]))         # tiny
    return np.array(a), np.array(b)


def test_rotated_iou_pairs_match_shapely_random_and_special() -> None:
    rng = np.random.default_rng(1)
    a = _random_boxes(rng, 400)
    b = a + np.concatenate([rng.normal(0, 1.5, (400, 2)), np.zeros((400, 3))], 1)
    b[:, 2:] = _random_boxes(rng, 400)[:, 2:]
    sa, sb = _special_pairs(rng)
    a, b = np.concatenate([a, sa]), np.concatenate([b, sb])
    got = rotated_iou_pairs(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = np.array([_shapely_iou(p, q) for p, q in zip(a, b)])
    assert 0 < (want > 0).mean() < 1, "test set has overlapping and non-overlapping pairs"
    np.testing.assert_allclose(got, want, atol=1e-9, rtol=1e-9)
    # identical boxes: exactly 1 (up to rounding); touching: 0
    np.testing.assert_allclose(got[400::10], 1.0, atol=1e-12)
    np.testing.assert_allclose(got[403::10], 0.0, atol=1e-9)
    np.testing.assert_allclose(got[404::10], 0.0, atol=1e-9)
    # intersection areas themselves, including the tiny boxes
    inter = rotated_intersection_pairs(torch.from_numpy(sa), torch.from_numpy(sb)).numpy()
    want_inter = np.array([_shapely_poly(p).intersection(_shapely_poly(q)).area for p, q in zip(sa, sb)])
    np.testing.assert_allclose(inter, want_inter, atol=1e-12, rtol=1e-9)


def test_rotated_iou_matrix_matches_shapely_and_is_symmetric() -> None:
    rng = np.random.default_rng(2)
    a, b = _random_boxes(rng, 40, spread=8.0), _random_boxes(rng, 30, spread=8.0)
    got = rotated_iou_matrix(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = np.array([[_shapely_iou(p, q) for q in b] for p in a])
    np.testing.assert_allclose(got, want, atol=1e-9)
    got_t = rotated_iou_matrix(torch.from_numpy(b), torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got_t, got.T, atol=1e-9)
    # float32 works too, within float32 precision
    got32 = rotated_iou_matrix(torch.from_numpy(a).float(), torch.from_numpy(b).float()).numpy()
    np.testing.assert_allclose(got32, want, atol=2e-5)
    assert rotated_iou_matrix(torch.zeros(0, 5), torch.from_numpy(b).float()).shape == (0, 30)


def _naive_greedy(suppress: np.ndarray) -> np.ndarray:
    n = len(suppress)
    keep = np.zeros(n, dtype=bool)
    removed = np.zeros(n, dtype=bool)
    for i in range(n):
        if removed[i]:
            continue
        keep[i] = True
        removed |= suppress[i] & (np.arange(n) > i)
    return keep


@pytest.mark.parametrize("density", [0.02, 0.1, 0.5])
def test_greedy_keep_equals_sequential_greedy(density: float) -> None:
    rng = np.random.default_rng(int(density * 100))
    for n in (1, 2, 7, 60, 300):
        s = rng.random((n, n)) < density
        s = s | s.T
        np.testing.assert_array_equal(greedy_keep(torch.from_numpy(s)).numpy(), _naive_greedy(s))


def test_greedy_keep_chain_keeps_the_third() -> None:
    # 0 suppresses 1, 1 would suppress 2 but is itself suppressed: 2 stays
    s = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    assert greedy_keep(s).tolist() == [True, False, True]


def test_circle_nms_overlap_and_far_apart() -> None:
    xy = torch.tensor([[0.0, 0.0], [1.5, 0.0], [10.0, 0.0], [10.0, 1.9], [30.0, 0.0]])
    # radius 4 (m^2): 1.5^2 = 2.25 < 4 suppressed; 1.9^2 = 3.61 < 4 suppressed; 30 m away kept
    assert circle_nms(xy, 4.0).tolist() == [True, False, True, False, True]
    # radius 2: 2.25 is not < 2, so everything survives
    assert circle_nms(xy, 2.0).tolist() == [True, True, True, True, True]


def test_rotated_nms_overlap_far_and_random_against_shapely() -> None:
    boxes = torch.tensor([[0.0, 0.0, 4.0, 2.0, 0.0], [0.5, 0.1, 4.0, 2.0, 0.1], [20.0, 0.0, 4.0, 2.0, 0.0],
                          [24.0, 0.0, 4.0, 2.0, 0.0]], dtype=torch.float64)
    assert rotated_nms(boxes, 0.2).tolist() == [True, False, True, True]  # touching boxes do not suppress
    rng = np.random.default_rng(3)
    b = _random_boxes(rng, 80, spread=6.0)
    iou = np.array([[_shapely_iou(p, q) for q in b] for p in b])
    for thr in (0.05, 0.2, 0.5):
        want = _naive_greedy(iou > thr)
        np.testing.assert_array_equal(rotated_nms(torch.from_numpy(b), thr).numpy(), want)


def test_pedestrian_size_scaling_changes_the_nms_result() -> None:
    ped_task = next(t for t in DEFAULT_TASKS if "pedestrian" in t.class_names)
    unscaled = TaskSpec(ped_task.class_names, "rotate", ped_task.circle_radius, ped_task.nms_iou, (1.0, 1.0))
    # two 0.6 x 0.6 m pedestrians 0.7 m apart: disjoint as they are, IoU 0.8*1.5/(2*2.25-1.2)=0.36 at x2.5
    boxes = torch.tensor([[5.0, 5.0, 0.0, 0.6, 0.6, 1.7, 0.0, 0.0, 0.0],
                          [5.7, 5.0, 0.0, 0.6, 0.6, 1.7, 0.3, 0.0, 0.0]])
    peds = torch.tensor([0, 0])
    assert task_nms(boxes, peds, unscaled).tolist() == [True, True]
    assert task_nms(boxes, peds, ped_task).tolist() == [True, False]
    # traffic cones (x4): 0.4 x 0.4 cones 0.9 m apart overlap once scaled, not before
    cones = torch.tensor([[5.0, 5.0, 0.0, 0.4, 0.4, 1.0, 0.0, 0.0, 0.0],
                          [5.9, 5.0, 0.0, 0.4, 0.4, 1.0, 0.0, 0.0, 0.0]])
    assert task_nms(cones, torch.tensor([1, 1]), ped_task).tolist() == [True, False]
    assert task_nms(cones, torch.tensor([0, 0]), ped_task).tolist() == [True, True]  # as peds: x2.5 -> 1.0 m, apart
