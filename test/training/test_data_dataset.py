"""training.data.dataset: samples, collate and CBGS on the hand-made mini dataroot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from simdistill_ros.core.config import GeometryConfig
from training.data.augment import BevAugConfig, ImageAugConfig, transform_boxes
from training.data.dataset import CameraDetectionDataset, CBGSSampler, cbgs_indices, collate
from training.data.lidar import load_points
from training.data.nuscenes import build_infos

import test_data_minidb as minidb
import box_helpers
points_in_boxes = box_helpers.points_in_boxes

GEOMETRY = GeometryConfig(image_size=(32, 64), resize_width=64, feature_stride=8, depth_min=1.0, depth_max=60.0,
                          depth_step=1.0, x_range=(-54.0, 54.0), y_range=(-54.0, 54.0), z_range=(-5.0, 3.0),
                          bev_resolution=0.6, bev_downsample=2)


@pytest.fixture(scope="module")
def infos(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = minidb.write_mini_dataroot(tmp_path_factory.mktemp("ds") / "db", splits={"train": ["scene-a"], "val": ["scene-b"]})
    return build_infos(root, "v1.0-trainval", "train", cache_dir=root / "cache")


def test_train_sample_is_consistent(infos: list) -> None:
    torch.manual_seed(0)
    ds = CameraDetectionDataset(infos, GEOMETRY, ImageAugConfig(resize_range=(0.4, 0.55)), BevAugConfig())
    item = ds[2]
    assert item["images"].shape == (6, 3, 32, 64) and item["images"].dtype == torch.float32
    assert item["K"].shape == (6, 3, 3) and item["cam_to_ego"].shape == (6, 4, 4) and item["img_aug"].shape == (6, 4, 4)
    bev = item["bev_aug"].double().numpy()
    assert not np.allclose(bev, np.eye(4))
    np.testing.assert_allclose(item["cam_to_ego"].numpy(), np.stack([c.cam_to_ego for c in infos[2].cameras]), atol=1e-5)
    want = transform_boxes(infos[2].gt_boxes, bev)
    np.testing.assert_allclose(np.sort(item["gt_boxes"].numpy()[:, 0]), np.sort(want[:, 0]), atol=1e-4)
    assert item["gt_labels"].dtype == torch.int64 and len(item["gt_labels"]) == len(item["gt_boxes"]) == 11
    pts = item["points"].double().numpy()
    assert pts.shape[1] == 5 and len(pts) <= len(load_points(infos[2]))
    key = pts[pts[:, 4] == 0]
    counts = points_in_boxes(key[:, :3], item["gt_boxes"].double().numpy(), margin=1e-4).sum(0)
    np.testing.assert_array_equal(counts, infos[2].gt_num_lidar_pts)
    # the image augmentation differs per camera and the same seed reproduces the sample
    assert len({tuple(np.round(a[:2].numpy().ravel(), 4)) for a in item["img_aug"]}) > 1
    torch.manual_seed(0)
    again = ds[2]
    assert torch.equal(again["bev_aug"], item["bev_aug"]) and torch.equal(again["images"], item["images"])


def test_eval_sample_and_collate(infos: list) -> None:
    ds = CameraDetectionDataset(infos, GEOMETRY, load_lidar=True, max_sweeps=2)
    item = ds[1]
    assert torch.equal(item["bev_aug"], torch.eye(4))
    np.testing.assert_allclose(item["gt_boxes"].double().numpy(), infos[1].gt_boxes, atol=1e-4)
    np.testing.assert_allclose(item["points"].numpy(), load_points(infos[1], 2), atol=1e-5)
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate)))
    assert batch["images"].shape == (3, 6, 3, 32, 64) and batch["bev_aug"].shape == (3, 4, 4)
    n = batch["num_points"]
    assert batch["points"].shape == (3, int(n.max()), 5) and len(set(n.tolist())) > 1
    for i in range(3):
        assert torch.all(batch["points"][i, n[i]:] == 0)
    assert batch["gt_boxes"].shape == (3, 11, 9) and batch["gt_mask"].all() and batch["tokens"][0] == infos[0].token


def test_default_point_range_is_bevfusions_lidar_range_in_ego(infos: list, tmp_path: Path) -> None:
    """BEVFusion keeps z in [-5, 3] in the LiDAR frame; ego z = LiDAR z + 1.84 (nuScenes LIDAR_TOP height),
    so points 3..4.84 m above the ground (the 3.8 m trailer's top) stay and points below -3.16 m go."""
    from dataclasses import replace

    from training.data.dataset import DEFAULT_POINT_RANGE, LIDAR_HEIGHT

    assert LIDAR_HEIGHT == pytest.approx(1.84) and DEFAULT_POINT_RANGE[2::3] == pytest.approx((-3.16, 4.84))
    lidar = infos[0].lidar_to_ego.copy()
    lidar[2, 3] = LIDAR_HEIGHT
    z = np.array([-3.5, -3.0, 4.0, 4.5, 5.0])  # ego z of points straight ahead of the car
    raw = np.zeros((len(z), 5), np.float32)
    raw[:, 0], raw[:, 2] = 10.0, z - LIDAR_HEIGHT
    path = tmp_path / "probe.pcd.bin"
    raw.tofile(path)
    probe = CameraDetectionDataset([replace(infos[0], lidar_path=path, sweeps=(), lidar_to_ego=lidar)], GEOMETRY,
                                   max_sweeps=0)
    np.testing.assert_allclose(np.sort(probe[0]["points"].numpy()[:, 2]), [-3.0, 4.0, 4.5], atol=1e-5)


def test_collate_pads_empty_samples() -> None:
    def item(m: int, p: int) -> dict:
        return {"images": torch.zeros(6, 3, 8, 8), "K": torch.eye(3).repeat(6, 1, 1), "cam_to_ego": torch.eye(4).repeat(6, 1, 1),
                "img_aug": torch.eye(4).repeat(6, 1, 1), "bev_aug": torch.eye(4), "points": torch.ones(p, 5),
                "gt_boxes": torch.ones(m, 9), "gt_labels": torch.zeros(m, dtype=torch.int64), "token": f"t{m}"}
    batch = collate([item(0, 0), item(2, 3)])
    assert batch["gt_boxes"].shape == (2, 2, 9) and batch["gt_labels"][0].tolist() == [-1, -1]
    assert batch["gt_mask"].tolist() == [[False, False], [True, True]] and batch["num_points"].tolist() == [0, 3]
    assert collate([item(0, 0)])["gt_boxes"].shape == (1, 1, 9)


def test_cbgs_balances_classes() -> None:
    rng = np.random.default_rng(0)
    # class 0 in 90 samples, class 1 in 10, class 2 in 5 (105 sample-class pairs), 20 empty samples
    classes = [{0}] * 85 + [{0, 1}] * 5 + [{1}] * 5 + [{2}] * 5 + [set()] * 20
    idx = cbgs_indices(classes, num_classes=10, rng=rng)
    counts = np.zeros(3)
    for i in idx:
        for c in classes[i]:
            counts[c] += 1
    assert all(i < 100 for i in idx)  # empty samples drop out
    assert counts.min() / counts.max() > 0.25  # was 5/90 before resampling
    per_class_draws = [sum(1 for i in idx if c in classes[i]) for c in range(3)]
    # each present class gets (sample-class pairs) / (present classes) = 105 / 3 draws
    assert per_class_draws[2] == 35 and len(idx) == 105


def test_cbgs_sampler(infos: list) -> None:
    ds = CameraDetectionDataset(infos, GEOMETRY, load_lidar=False)
    sampler = CBGSSampler(ds, seed=1)
    first = list(sampler)
    assert len(first) == len(sampler) > 0 and all(0 <= i < len(ds) for i in first)
    sampler.set_epoch(1)
    assert len(list(sampler)) == len(first)


def test_missing_image_is_named(infos: list, tmp_path: Path) -> None:
    from dataclasses import replace

    cams = list(infos[0].cameras)
    cams[2] = replace(cams[2], image_path=tmp_path / "nope.jpg")
    ds = CameraDetectionDataset([replace(infos[0], cameras=tuple(cams))], GEOMETRY)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        ds[0]
