"""A torch Dataset over SampleInfos: augmented, normalised camera images with their geometry, LiDAR
points and ground-truth boxes; a collate function; class-balanced (CBGS) resampling.

Per sample (`__getitem__`), tensors:
  images     N x 3 x H x W float32, ImageNet-normalised network input (core.preprocess.preprocess_images)
  K          N x 3 x 3 float32;   cam_to_ego N x 4 x 4 float32 (unaugmented: optical -> key ego)
  img_aug    N x 4 x 4 float32 (raw pixel -> network pixel);  bev_aug 4 x 4 float32 (ego -> augmented ego)
  points     P x 5 float32 (x, y, z, intensity, dt) in the augmented ego frame, inside point_range
  gt_boxes   M x 9 float32 (x, y, z_centre, l, w, h, yaw, vx, vy) in the augmented ego frame
  gt_labels  M int64 indices into class_names
  token      the sample token (str)
`collate` stacks the fixed-size tensors and pads points (num_points) and boxes (gt_mask, labels -1).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from simdistill_ros.core.classes import CLASS_NAMES
from simdistill_ros.core.config import GeometryConfig
from simdistill_ros.core.preprocess import preprocess_images
from training.data.augment import (
    BevAugConfig,
    ImageAugConfig,
    eval_image_aug,
    sample_bev_aug,
    sample_image_aug,
    transform_boxes,
    transform_points,
)
from training.data.lidar import load_points
from training.data.nuscenes import SampleInfo

# BEVFusion's point range [-54, 54] x [-54, 54] x [-5, 3] is in the LiDAR frame; ours applies in the ego
# frame, whose origin is on the ground ~1.84 m below nuScenes' LIDAR_TOP. Shifting z keeps the same slab
# of space (up to 4.84 m above ground: tops of buses, trailers, construction vehicles).
LIDAR_HEIGHT = 1.84
DEFAULT_POINT_RANGE: tuple[float, ...] = (-54.0, -54.0, -5.0 + LIDAR_HEIGHT, 54.0, 54.0, 3.0 + LIDAR_HEIGHT)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """H x W x 3 uint8 RGB; FileNotFoundError naming the path when it cannot be read."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class CameraDetectionDataset(Dataset):
    """Samples for camera-only detection training/evaluation (and the LiDAR teacher).

    image_aug / bev_aug: None = test-time (deterministic inference_image_aug, identity bev_aug).
    max_sweeps: LiDAR sweeps loaded with each key frame; load_lidar=False skips points (P = 0).
    point_range: (xmin, ymin, zmin, xmax, ymax, zmax) kept points, and (x, y) kept box centres after aug,
    in the (augmented) ego frame (default: BEVFusion's LiDAR-frame range shifted by LIDAR_HEIGHT).
    Randomness comes from torch's generator (seeded per DataLoader worker and epoch), so
    `torch.manual_seed` makes runs reproducible.
    """

    def __init__(
        self,
        infos: Sequence[SampleInfo],
        geometry: GeometryConfig,
        image_aug: ImageAugConfig | None = None,
        bev_aug: BevAugConfig | None = None,
        max_sweeps: int = 9,
        load_lidar: bool = True,
        point_range: Sequence[float] = DEFAULT_POINT_RANGE,
        class_names: Sequence[str] = CLASS_NAMES,
    ) -> None:
        self.infos = list(infos)
        self.geometry = geometry
        self.image_aug = image_aug
        self.bev_aug = bev_aug
        self.max_sweeps = max_sweeps
        self.load_lidar = load_lidar
        self.point_range = tuple(float(v) for v in point_range)
        self.class_names = tuple(class_names)

    def __len__(self) -> int:
        return len(self.infos)

    def sample_classes(self, index: int) -> set[int]:
        """Class indices present in a sample's (unaugmented) ground truth; used by CBGS."""
        return {self.class_names.index(n) for n in self.infos[index].gt_names if n in self.class_names}

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self.infos[index]
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        raw = [read_image(cam.image_path) for cam in info.cameras]
        if self.image_aug is None:
            augs = [eval_image_aug(im.shape[:2], self.geometry, cam.K, cam.cam_to_ego, f"camera {cam.name!r}")
                    for im, cam in zip(raw, info.cameras)]
        else:
            augs = [sample_image_aug(im.shape[:2], self.geometry, self.image_aug, rng) for im in raw]
        images, img_aug = preprocess_images(raw, self.geometry, "cpu", img_aug=augs)
        bev = np.eye(4) if self.bev_aug is None else sample_bev_aug(self.bev_aug, rng)

        keep = np.asarray([n in self.class_names for n in info.gt_names], dtype=bool)
        boxes = transform_boxes(info.gt_boxes[keep], bev)
        labels = np.asarray([self.class_names.index(n) for n, k in zip(info.gt_names, keep) if k], dtype=np.int64)
        r = self.point_range
        in_range = (boxes[:, 0] >= r[0]) & (boxes[:, 0] <= r[3]) & (boxes[:, 1] >= r[1]) & (boxes[:, 1] <= r[4])
        boxes, labels = boxes[in_range], labels[in_range]
        boxes[:, 6] = (boxes[:, 6] + np.pi) % (2 * np.pi) - np.pi

        if self.load_lidar:
            pts = transform_points(load_points(info, self.max_sweeps).astype(np.float64), bev)
            inside = np.all((pts[:, :3] >= r[:3]) & (pts[:, :3] <= r[3:]), axis=1)
            pts = pts[inside]
        else:
            pts = np.zeros((0, 5))
        return {
            "images": images[0],
            "K": torch.from_numpy(np.stack([c.K for c in info.cameras])).float(),
            "cam_to_ego": torch.from_numpy(np.stack([c.cam_to_ego for c in info.cameras])).float(),
            "img_aug": torch.from_numpy(np.asarray(img_aug)).float(),
            "bev_aug": torch.from_numpy(bev).float(),
            "points": torch.from_numpy(pts).float(),
            "gt_boxes": torch.from_numpy(boxes).float(),
            "gt_labels": torch.from_numpy(labels),
            "token": info.token,
        }


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: stack images/K/cam_to_ego/img_aug/bev_aug (B x ...); pad points to B x Pmax x 5
    with `num_points` B; pad boxes to B x Mmax x 9 (zeros) with `gt_labels` B x Mmax (-1 where padded)
    and `gt_mask` B x Mmax bool; `tokens` is a list. At least one padded slot is kept (Mmax, Pmax >= 1)."""
    out: dict[str, Any] = {k: torch.stack([b[k] for b in batch]) for k in ("images", "K", "cam_to_ego", "img_aug", "bev_aug")}
    B = len(batch)
    n_pts = torch.tensor([len(b["points"]) for b in batch], dtype=torch.int64)
    points = torch.zeros(B, max(1, int(n_pts.max())), 5)
    n_box = [len(b["gt_boxes"]) for b in batch]
    m = max([1, *n_box])
    boxes = torch.zeros(B, m, 9)
    labels = torch.full((B, m), -1, dtype=torch.int64)
    for i, b in enumerate(batch):
        points[i, : n_pts[i]] = b["points"]
        boxes[i, : n_box[i]] = b["gt_boxes"]
        labels[i, : n_box[i]] = b["gt_labels"]
    out.update(points=points, num_points=n_pts, gt_boxes=boxes, gt_labels=labels, gt_mask=labels >= 0,
               tokens=[b["token"] for b in batch])
    return out


def cbgs_indices(sample_classes: Sequence[set[int]], num_classes: int, rng: np.random.Generator) -> list[int]:
    """Class-balanced grouping and sampling (Zhu et al. 2019, mmdet3d's CBGSDataset): for each class,
    draw (with replacement) len(samples with it) * (1 / num_present_classes) / (its share of all
    sample-class pairs) samples that contain it. Samples without boxes drop out; absent classes are skipped."""
    per_class: list[list[int]] = [[] for _ in range(num_classes)]
    for i, classes in enumerate(sample_classes):
        for c in classes:
            per_class[c].append(i)
    present = [idx for idx in per_class if idx]
    total = sum(len(idx) for idx in present)
    if total == 0:
        return []
    frac = 1.0 / len(present)
    out: list[int] = []
    for idx in present:
        ratio = frac / (len(idx) / total)
        out += rng.choice(idx, int(len(idx) * ratio)).tolist()
    return out


class CBGSSampler(Sampler[int]):
    """Yields a class-balanced index list, redrawn each epoch from seed + epoch (call set_epoch)."""

    def __init__(self, dataset: CameraDetectionDataset, seed: int = 0, shuffle: bool = True) -> None:
        self.classes = [dataset.sample_classes(i) for i in range(len(dataset))]
        self.num_classes = len(dataset.class_names)
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self._length = len(self._indices())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        idx = cbgs_indices(self.classes, self.num_classes, rng)
        if self.shuffle:
            rng.shuffle(idx)
        return idx

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return self._length
