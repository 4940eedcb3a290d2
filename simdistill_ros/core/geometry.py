"""Frames, transforms and camera geometry: image augmentation matrices, the test-time crop, the
frustum, lifting frustum points to the ego frame, projecting ego points into images, and BEV cells.

Conventions (REP 103): ego x forward, y left, z up; camera optical frame z forward, x right, y down.
`img_aug` (4x4) maps a raw-image point (u, v, depth, 1) to the network-input image: the 2D affine part
(resize, crop, flip, rotate) sits in [:2, :2] and [:2, 3]; depth passes through. `bev_aug` (4x4) maps
ego points to the augmented ego frame used in training (identity at inference).
BEV grids are indexed [row, col] = [y, x]: col = floor((x - x_min) / res), row = floor((y - y_min) / res).

Pixel convention, everywhere (K, img_aug, the frustum, preprocess's warp, flips, the synthetic
renderer): OpenCV's, the one sensor_msgs/CameraInfo users assume. The centre of pixel (row i,
column j) is at (u, v) = (j, i); the pixel covers [j - 0.5, j + 0.5) x [i - 0.5, i + 0.5); K maps
camera points to these coordinates. In it, resizing a W-pixel row to s W pixels is u' = s u + (s - 1) / 2,
a horizontal flip of a W-pixel row is u' = (W - 1) - u, the centre of a W x H image is
((W - 1) / 2, (H - 1) / 2), and a feature cell of stride S at column j is centred on u = (j + 0.5) S - 0.5.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from simdistill_ros.core.config import GeometryConfig


def image_aug_matrix(
    scale_xy: tuple[float, float],
    crop_xy: tuple[float, float],
    crop_size_wh: tuple[int, int],
    flip: bool = False,
    rotate_deg: float = 0.0,
) -> np.ndarray:
    """4x4 image-augmentation matrix in the module's (OpenCV) pixel convention: resize by scale_xy,
    crop at crop_xy (the resized image's pixel that becomes the crop's top-left pixel) to crop_size_wh,
    optionally mirror horizontally, then rotate by rotate_deg about the crop centre (counter-clockwise
    as seen on screen, PIL's `Image.rotate` sense). Same order as BEVFusion."""
    s = np.array([float(scale_xy[0]), float(scale_xy[1])])
    rot = np.diag(s)
    tran = (s - 1.0) / 2.0 - np.asarray(crop_xy, dtype=np.float64)
    w, h = crop_size_wh
    if flip:
        A = np.array([[-1.0, 0.0], [0.0, 1.0]])
        rot = A @ rot
        tran = A @ tran + np.array([w - 1.0, 0.0])
    a = math.radians(rotate_deg)
    A = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    centre = (np.array([w, h], dtype=np.float64) - 1.0) / 2.0
    rot = A @ rot
    tran = A @ tran + (centre - A @ centre)
    out = np.eye(4)
    out[:2, :2] = rot
    out[:2, 3] = tran
    return out


# The test-time crop keeps the principal point on the rows it has for the cameras a model is trained on:
# nuScenes' 1600 x 900 images with principal rows cy between these fractions of the image height
# (nuScenes' calibrations have cy ~ 0.53-0.56 x 900; the band leaves a margin, so a 16:9 image with a
# centred principal point keeps the bottom-aligned crop too).
REFERENCE_IMAGE_HW: tuple[int, int] = (900, 1600)
REFERENCE_PRINCIPAL_BAND: tuple[float, float] = (0.49, 0.62)


class HorizonWarning(UserWarning):
    """A camera's horizon falls outside the network input: monocular depth cues (the ground-contact row
    against the horizon) learnt on level nuScenes cameras do not carry over to it."""


def _resized_size(raw_size_hw: tuple[int, int], geometry: GeometryConfig) -> tuple[int, int]:
    raw_h, raw_w = raw_size_hw
    return max(1, int(round(raw_h * geometry.resize_width / raw_w))), geometry.resize_width


def principal_row_band(geometry: GeometryConfig) -> tuple[float, float]:
    """Network-input rows (OpenCV convention) where the test-time transform puts the principal point
    of a REFERENCE_IMAGE_HW camera whose cy lies in REFERENCE_PRINCIPAL_BAND (bottom-aligned crop)."""
    ref_h, ref_w = REFERENCE_IMAGE_HW
    s = geometry.resize_width / ref_w
    crop_y = _resized_size(REFERENCE_IMAGE_HW, geometry)[0] - geometry.image_size[0]
    lo, hi = (s * f * ref_h + (s - 1) / 2 - crop_y for f in REFERENCE_PRINCIPAL_BAND)
    return lo, hi


def inference_image_aug(raw_size_hw: tuple[int, int], geometry: GeometryConfig, K: np.ndarray | None = None,
                        cam_to_ego: np.ndarray | None = None,
                        camera: str = "camera") -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """The deterministic test-time transform for a raw image of raw_size_hw: resize to
    geometry.resize_width (aspect kept), crop geometry.image_size horizontally centred. Vertically the
    crop is bottom-aligned (BEVFusion's test transform, nuScenes 1600 x 900: rows 176..432 of 432 at
    r50) unless that puts the principal point (K's cy; the image centre without K) outside
    `principal_row_band`; then the crop moves so it lands on the band's nearest row. An image shorter
    than the crop is padded (black rows), keeping all of it in view. With cam_to_ego as well, a
    HorizonWarning names `camera` when its horizon falls outside the crop (`horizon_message`).

    Returns (img_aug 4x4, resized size (H, W), crop top-left (x0, y0) in resized pixels; y0 < 0 pads).
    """
    raw_h, raw_w = raw_size_hw
    if raw_h < 1 or raw_w < 1:
        raise ValueError(f"{camera}: image size must be positive, got {raw_size_hw}")
    out_h, out_w = geometry.image_size
    new_h, new_w = _resized_size(raw_size_hw, geometry)
    s = new_w / raw_w
    cy = (raw_h - 1) / 2 if K is None else float(np.asarray(K)[1, 2])
    cy_resized = s * cy + (s - 1) / 2
    lo, hi = principal_row_band(geometry)
    crop_y = new_h - out_h
    row = cy_resized - crop_y
    if not lo <= row <= hi:
        crop_y = int(round(cy_resized - min(max(row, lo), hi)))
    if new_h < out_h:  # too short: pad, never cut
        crop_y = min(max(crop_y, new_h - out_h), 0)
    crop_x = (new_w - out_w) // 2
    aug = image_aug_matrix((s, new_h / raw_h), (crop_x, crop_y), (out_w, out_h))
    if K is not None and cam_to_ego is not None:
        message = horizon_message(K, cam_to_ego, aug, raw_size_hw, geometry.image_size, camera)
        if message is not None:
            warnings.warn(message, HorizonWarning, stacklevel=2)
    return aug, (new_h, new_w), (crop_x, crop_y)


def _horizon_side(K: np.ndarray, cam_to_ego: np.ndarray, img_aug: np.ndarray, corners_uv: np.ndarray) -> np.ndarray:
    """Per network-input point (n x 2): +1 above the ego-frame horizon, -1 below, 0 on it."""
    A, t = img_aug[:2, :2], img_aug[:2, 3]
    raw = (corners_uv - t) @ np.linalg.inv(A).T
    rays = np.linalg.solve(K, np.concatenate([raw, np.ones((len(raw), 1))], 1).T)  # optical frame, z = 1
    up = cam_to_ego[:3, :3].T @ np.array([0.0, 0.0, 1.0])  # ego z in the optical frame
    return np.sign(up @ rays)


def horizon_message(K: np.ndarray, cam_to_ego: np.ndarray, img_aug: np.ndarray, raw_size_hw: tuple[int, int],
                    image_size_hw: tuple[int, int], camera: str = "camera") -> str | None:
    """None when the camera's horizon (the image of the ego frame's level directions) crosses the
    network input given by img_aug; else a message naming the camera and saying whether any crop of
    the raw image could show it."""
    K = np.asarray(K, dtype=np.float64)
    T = np.asarray(cam_to_ego, dtype=np.float64)
    aug = np.asarray(img_aug, dtype=np.float64)
    h, w = image_size_hw
    crop = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
    sides = _horizon_side(K, T, aug, crop)
    if sides.min() < 0 < sides.max():
        return None
    where = "above" if sides.max() <= 0 else "below"
    looks = "down" if where == "above" else "up"
    rh, rw = raw_size_hw
    raw_corners = np.array([[-0.5, -0.5], [rw - 0.5, -0.5], [-0.5, rh - 0.5], [rw - 0.5, rh - 0.5]])
    raw_sides = _horizon_side(K, T, np.eye(4), raw_corners)
    if raw_sides.min() < 0 < raw_sides.max():
        return (f"{camera}: the horizon lies {where} the network input (the test-time crop of its "
                f"{rw}x{rh} image); depth from the image rows is unreliable for this camera")
    return (f"{camera}: the horizon lies {where} the whole {rw}x{rh} image (the camera looks {looks} too "
            f"steeply), so no crop can show it; depth learnt on level cameras is unreliable for it")


def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """Apply 4x4 transforms T (... x 4 x 4) to points (... x P x 3); leading dims broadcast."""
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def frustum(geometry: GeometryConfig, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """D x fH x fW x 3 grid of (u, v, depth): feature-cell centres in network-input pixels (OpenCV
    convention: cell j of stride S is centred on u = (j + 0.5) S - 0.5) times depth bins."""
    fh, fw = geometry.feature_size
    s = geometry.feature_stride
    d = geometry.depth_min + geometry.depth_step * torch.arange(geometry.num_depth_bins, dtype=torch.float64)
    v = (torch.arange(fh, dtype=torch.float64) + 0.5) * s - 0.5
    u = (torch.arange(fw, dtype=torch.float64) + 0.5) * s - 0.5
    dd, vv, uu = torch.meshgrid(d, v, u, indexing="ij")
    return torch.stack([uu, vv, dd], dim=-1).to(dtype=dtype, device=device)


def lift_to_ego(
    frustum_dhw3: Tensor,
    K_bn33: Tensor,
    cam_to_ego_bn44: Tensor,
    img_aug_bn44: Tensor,
    bev_aug_b44: Tensor | None = None,
) -> Tensor:
    """Lift frustum points (u, v, depth) of network-input images to the (augmented) ego frame.

    Returns B x N x D x fH x fW x 3 points in metres.
    """
    B, N = K_bn33.shape[:2]
    D, H, W, _ = frustum_dhw3.shape
    pts = frustum_dhw3.reshape(1, 1, -1, 3).to(K_bn33.dtype)
    # undo the image augmentation: (u', v') = A (u, v) + t  =>  (u, v) = A^-1 ((u', v') - t)
    A = img_aug_bn44[..., :2, :2]
    t = img_aug_bn44[..., :2, 3]
    uv = (pts[..., :2] - t[:, :, None, :]) @ torch.linalg.inv(A).transpose(-1, -2)
    depth = pts[..., 2:3].expand(B, N, -1, 1)
    cam = torch.cat([uv * depth, depth], dim=-1) @ torch.linalg.inv(K_bn33).transpose(-1, -2)
    ego = transform_points(cam_to_ego_bn44, cam)
    if bev_aug_b44 is not None:
        ego = transform_points(bev_aug_b44[:, None], ego)
    return ego.reshape(B, N, D, H, W, 3)


def project_to_image(
    points_ego_bnp3: Tensor,
    K_bn33: Tensor,
    cam_to_ego_bn44: Tensor,
    img_aug_bn44: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Project ego points into each camera's (augmented) image.

    points_ego_bnp3: B x N x P x 3 (or broadcastable). Returns (uv B x N x P x 2 pixels in the module's
    (OpenCV) convention, depth B x N x P
    metres along the optical axis; points behind the camera have depth <= 0 and meaningless uv).
    """
    ego_to_cam = torch.linalg.inv(cam_to_ego_bn44)
    cam = transform_points(ego_to_cam, points_ego_bnp3)
    depth = cam[..., 2]
    pix = cam @ K_bn33.transpose(-1, -2)
    uv = pix[..., :2] / depth.clamp(min=1e-6).unsqueeze(-1)
    if img_aug_bn44 is not None:
        uv = uv @ img_aug_bn44[..., :2, :2].transpose(-1, -2) + img_aug_bn44[..., None, :2, 3]
    return uv, depth


def bev_cell_index(points_ego: Tensor, geometry: GeometryConfig) -> tuple[Tensor, Tensor]:
    """Flat BEV cell index (row * nx + col) of each point (... x 3) and whether it lies inside the
    BEV volume (x, y and z ranges). Indices of points outside are 0."""
    ny, nx = geometry.bev_size
    res = geometry.bev_resolution
    col = torch.floor((points_ego[..., 0] - geometry.x_range[0]) / res).long()
    row = torch.floor((points_ego[..., 1] - geometry.y_range[0]) / res).long()
    z = points_ego[..., 2]
    inside = (col >= 0) & (col < nx) & (row >= 0) & (row < ny) & (z >= geometry.z_range[0]) & (z < geometry.z_range[1])
    flat = torch.where(inside, row * nx + col, torch.zeros_like(col))
    return flat, inside

