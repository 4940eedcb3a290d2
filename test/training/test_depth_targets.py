"""training.depth_targets: LiDAR points land in the feature cell and depth bin a hand computation gives,
the nearest point wins, sweeps are ignored, and a BEV augmentation of the points is undone."""
from __future__ import annotations

import numpy as np
import torch

from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.geometry import frustum, inference_image_aug
from simdistill_ros.core.rig import nuscenes_like_rig
from training.data.augment import bev_aug_matrix, transform_points
from training.depth_targets import lidar_depth_bins


def test_points_land_in_the_expected_cell_and_bin(small_config: DetectorConfig) -> None:
    g = small_config.geometry  # 12 depth bins from 1 m, step 4 m; 8 x 22 feature cells of stride 8
    cams = nuscenes_like_rig(small_config.model.camera_names)
    K = torch.tensor(np.stack([c.K for c in cams]))[None]
    T = torch.tensor(np.stack([c.cam_to_ego for c in cams]))[None]
    A = torch.tensor(np.stack([inference_image_aug(c.image_size, g)[0] for c in cams]))[None]
    fr = frustum(g, torch.float64)
    row, col = 5, 7
    u, v = fr[0, row, col, 0].item(), fr[0, row, col, 1].item()
    # a ray of CAM_FRONT through the centre of feature cell (row, col), at depths 13.9 m and 21.2 m
    uv_raw = np.linalg.inv(A[0, 0, :2, :2].numpy()) @ (np.array([u, v]) - A[0, 0, :2, 3].numpy())
    ray = np.linalg.inv(cams[0].K) @ np.array([*uv_raw, 1.0])
    pts_cam = np.stack([ray * 13.9, ray * 21.2, ray * 5.0])
    ego = pts_cam @ cams[0].cam_to_ego[:3, :3].T + cams[0].cam_to_ego[:3, 3]
    points = np.zeros((3, 5))
    points[:, :3] = ego
    points[2, 4] = 0.05  # a sweep point, nearer: ignored
    bev = bev_aug_matrix(0.4, 1.03, flip_x=True)
    aug_points = transform_points(points, bev)
    out = lidar_depth_bins(torch.tensor(aug_points)[None].float(), torch.tensor([3]), K, T, A,
                           torch.tensor(bev)[None], g)
    assert out.shape == (1, 6, *g.feature_size)
    hit = (out >= 0).nonzero().tolist()
    assert hit == [[0, 0, row, col]]
    # 13.9 m: bins lift at 1, 5, 9, 13, 17 m -> nearest is bin 3 (13 m), where floor((13.9 - 1) / 4) is also 3;
    # the nearer point wins over 21.2 m
    assert out[0, 0, row, col] == 3
    points[0, :3] = cams[0].cam_to_ego[:3, :3] @ (ray * 16.0) + cams[0].cam_to_ego[:3, 3]  # 16 m: floor would give bin 3, the nearest lifted depth is 17 m (bin 4)
    out = lidar_depth_bins(torch.tensor(transform_points(points, bev))[None].float(), torch.tensor([3]), K, T, A,
                           torch.tensor(bev)[None], g)
    assert out[0, 0, row, col] == 4
    # padding beyond num_points is ignored
    out = lidar_depth_bins(torch.tensor(aug_points)[None].float(), torch.tensor([0]), K, T, A,
                           torch.tensor(bev)[None], g)
    assert (out < 0).all()
