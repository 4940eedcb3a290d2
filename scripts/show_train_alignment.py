"""Draw the ground-truth box centres of one augmented training sample onto its six network images.

A visual check that the training geometry is consistent: each centre is taken back from the augmented
ego frame (inverse bev_aug) to the camera (inverse cam_to_ego), projected with K, and then moved into the
network image with the sample's own img_aug (which acts on pixels, after the perspective division). The
dots must sit on the rendered objects, for random resize, crop, flip and rotation and for the BEV
flip/rotation/scale. Writes one PNG (2 x 3 tiles, network resolution scaled by 3).

    python scripts/show_train_alignment.py --dataroot W/world --config demo_synth --index 2 --out align.png
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from simdistill_ros.core.config import load_preset
from simdistill_ros.core.preprocess import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from training.config import load_train_config
from training.data.dataset import CameraDetectionDataset
from training.data.nuscenes import build_infos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataroot", required=True)
    ap.add_argument("--version", default="v1.0-trainval")
    ap.add_argument("--config", default="demo_synth", help="training config (its model preset and augmentation)")
    ap.add_argument("--index", type=int, default=0, help="train sample index")
    ap.add_argument("--seed", type=int, default=0, help="torch seed of the augmentation draw")
    ap.add_argument("--no-aug", action="store_true", help="the test-time transform instead of random augmentation")
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args()

    cfg = load_train_config(args.config)
    geometry = load_preset(cfg.model).geometry
    infos = build_infos(args.dataroot, args.version, "train")
    ds = CameraDetectionDataset(infos, geometry, image_aug=None if args.no_aug else cfg.data.image_aug,
                                bev_aug=None if args.no_aug else cfg.data.bev_aug, load_lidar=False)
    torch.manual_seed(args.seed)
    s = ds[args.index]
    mean = np.asarray(IMAGENET_MEAN_RGB)[:, None, None]
    std = np.asarray(IMAGENET_STD_RGB)[:, None, None]
    ego_from_aug = np.linalg.inv(s["bev_aug"].numpy().astype(np.float64))
    centres_aug = np.c_[s["gt_boxes"].numpy()[:, :3], np.ones(len(s["gt_boxes"]))]
    tiles = []
    for n in range(s["images"].shape[0]):
        img = s["images"][n].numpy() * std + mean
        img = np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()
        K4 = np.eye(4)
        K4[:3, :3] = s["K"][n].numpy()
        cam = (K4 @ np.linalg.inv(s["cam_to_ego"][n].numpy()) @ ego_from_aug @ centres_aug.T).T
        aug = s["img_aug"][n].numpy().astype(np.float64)
        for p in cam[cam[:, 2] > 0.5]:
            u, v = aug[:2, :2] @ (p[:2] / p[2]) + aug[:2, 3]
            if 0 <= u < img.shape[1] and 0 <= v < img.shape[0]:
                cv2.circle(img, (int(round(u)), int(round(v))), 2, (255, 0, 0), -1)
        tiles.append(cv2.resize(img, (img.shape[1] * 3, img.shape[0] * 3), interpolation=cv2.INTER_NEAREST))
    while len(tiles) % 3:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + 3], axis=1) for i in range(0, len(tiles), 3)]
    cv2.imwrite(args.out, cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}: {len(centres_aug)} box centres on {s['images'].shape[0]} cameras of sample {s['token']}")


if __name__ == "__main__":
    main()
