"""Camera images (uint8 H x W x 3 RGB) -> the student's normalised input tensor, on the device.

The geometric transform of each image is its 4x4 `img_aug` matrix (geometry.image_aug_matrix): the
2D affine u' = A u + t in [:2, :2] and [:2, 3], in the OpenCV pixel convention of core/geometry.py
(pixel (row i, col j) centred at (j, i)). Internally the warp works in continuous coordinates
c = u + 1/2 (pixel (i, j) covering [j, j+1) x [i, i+1)), where resizing is exactly c' = s c and the
matrix becomes c' = A c + t + (1 - A 1) / 2. The transform is done as
  1. resize by the matrix's scale (column norms of A) with antialiased bilinear `F.interpolate`, which
     maps continuous coordinates exactly by c' = s c (rounded to whole grey levels, as PIL would);
  2. the residual affine (crop, flip, rotation) exactly: by integer indexing when it is a unit-scale
     axis-aligned map with whole-pixel translation (the test-time transform, and flips), otherwise by
     bilinear `grid_sample` of the residual affine. Pixels from outside the image are black (0).
Then ImageNet mean/std normalisation. uint8 data is uploaded first and converted on the device.
Training uses the same function with random augmentation matrices.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from simdistill_ros.core.config import GeometryConfig
from simdistill_ros.core.geometry import inference_image_aug

IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)
_EPS = 1e-6


def _check_image(i: int, image: object) -> np.ndarray | Tensor:
    """A uint8 H x W x 3 numpy array, or a torch tensor of that shape (e.g. already on the device)."""
    where = f"camera {i} field image"
    if not isinstance(image, (np.ndarray, Tensor)):
        raise ValueError(f"{where}: expected a numpy array, got {type(image).__name__}")
    if image.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"{where}: expected dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{where}: expected shape H x W x 3, got {tuple(image.shape)}")
    return image


def _check_aug(i: int, aug: object) -> np.ndarray:
    where = f"camera {i} field img_aug"
    arr = np.asarray(aug, dtype=np.float64)
    if arr.shape != (4, 4):
        raise ValueError(f"{where}: expected a 4 x 4 matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: contains NaN or infinite values")
    if abs(np.linalg.det(arr[:2, :2])) < 1e-9:
        raise ValueError(f"{where}: the 2D part [:2, :2] is singular")
    return arr


def _index_map(out_len: int, src_len: int, sign: int, shift: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Source indices (clamped) and validity for output indices 0..out_len-1 of a whole-pixel map
    u' = sign * u + shift (continuous coordinates): pixel j' reads pixel sign * (j' - shift) (sign 1)
    or shift - 1 - j' (sign -1)."""
    j = torch.arange(out_len, device=device)
    src = j - shift if sign > 0 else shift - 1 - j
    valid = (src >= 0) & (src < src_len)
    return src.clamp(0, src_len - 1), valid


def _as_tensor(img: np.ndarray | Tensor) -> Tensor:
    """A tensor view of an H x W x 3 image without a copy. Images decoded from ROS messages and bags are
    read-only numpy views of the message buffer; torch warns about those because a write would reach the
    buffer, but nothing here writes into this view (torch.stack and the resize make new tensors)."""
    if isinstance(img, Tensor):
        return img
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(img))


def _residual_exact(img: Tensor, A: np.ndarray, t: np.ndarray, out_hw: tuple[int, int]) -> Tensor | None:
    """The residual map by indexing if it is axis-aligned, unit-scale, with whole-pixel translation."""
    signs = np.diag(A)
    if np.abs(A - np.diag(signs)).max() > _EPS or np.abs(np.abs(signs) - 1.0).max() > _EPS:
        return None
    if np.abs(t - np.round(t)).max() > _EPS:
        return None
    h, w = img.shape[-2:]
    cols, vc = _index_map(out_hw[1], w, int(np.sign(signs[0])), int(round(t[0])), img.device)
    rows, vr = _index_map(out_hw[0], h, int(np.sign(signs[1])), int(round(t[1])), img.device)
    out = img.index_select(-2, rows).index_select(-1, cols)
    return out * (vr[:, None] & vc[None, :]).to(out.dtype)


def _residual_grid_sample(img: Tensor, A: np.ndarray, t: np.ndarray, out_hw: tuple[int, int]) -> Tensor:
    """The residual affine u' = A u + t by bilinear sampling at A^-1 (u' - t) of each output pixel centre."""
    h, w = img.shape[-2:]
    oh, ow = out_hw
    A_inv = np.linalg.inv(A)
    # normalised source coordinate (align_corners=False): x_n = 2 u / w - 1 with u continuous
    M = np.diag([2.0 / w, 2.0 / h]) @ A_inv
    c = -M @ t - 1.0
    dev = img.device
    ys = torch.arange(oh, device=dev, dtype=torch.float64) + 0.5
    xs = torch.arange(ow, device=dev, dtype=torch.float64) + 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    gx = M[0, 0] * xx + M[0, 1] * yy + c[0]
    gy = M[1, 0] * xx + M[1, 1] * yy + c[1]
    grid = torch.stack([gx, gy], dim=-1).to(img.dtype)[None]
    return F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def _resize(raw_nhwc: Tensor, sx: float, sy: float, uint8_kernel: bool) -> Tensor:
    """Antialiased bilinear resize of uint8 N x H x W x 3 images with the exact scale (sx, sy), i.e.
    continuous u' = s u, rounded to whole grey levels (as PIL does in training pipelines). Returns
    N x 3 x H' x W' (uint8 with uint8_kernel, torch's fast CPU kernel; float otherwise) with
    H' = floor(H * sy), a product a rounding error below a whole number nudged up to it."""
    img = raw_nhwc.permute(0, 3, 1, 2)  # channels-last view
    if abs(sx - 1.0) < _EPS and abs(sy - 1.0) < _EPS:
        return img
    if not uint8_kernel:
        img = img.float()
    nudge = 1.0 + 1e-10
    out = F.interpolate(img, scale_factor=(sy * nudge, sx * nudge), mode="bilinear", align_corners=False,
                        antialias=True, recompute_scale_factor=False)
    return out if out.dtype == torch.uint8 else out.round_().clamp_(0.0, 255.0)


def preprocess_images(
    images: Sequence[np.ndarray | Tensor],
    geometry: GeometryConfig,
    device: torch.device | str = "cpu",
    img_aug: np.ndarray | Sequence[np.ndarray] | None = None,
    dtype: torch.dtype = torch.float32,
    uint8_kernel: bool | None = None,
) -> tuple[Tensor, np.ndarray]:
    """Resize/crop(/flip/rotate) and normalise camera images for the student.

    images: N uint8 H x W x 3 RGB arrays or tensors (sizes may differ per camera; tensors may already be
    on `device`, e.g. from backends' pinned upload). img_aug: N 4x4 matrices
    mapping raw-image pixels to network-input pixels; default: geometry.inference_image_aug for each
    image's size. Returns (1 x N x 3 x H x W tensor of `dtype` on `device`, H x W = geometry.image_size,
    normalised with ImageNet mean/std; img_aug N x 4 x 4 float64 numpy). Bad input: ValueError naming
    the camera index and the field. uint8_kernel: resize with torch's uint8 CPU kernel (default: on CPU)
    or in float (the only path on CUDA); the two differ by at most one grey level (docs/benchmarks.md).
    Cameras sharing raw size, scale and residual map are transformed in one batched call.
    """
    if len(images) == 0:
        raise ValueError("images: expected at least one camera image")
    imgs = [_check_image(i, im) for i, im in enumerate(images)]
    if img_aug is None:
        augs = [inference_image_aug(tuple(im.shape[:2]), geometry)[0] for im in imgs]
    else:
        if len(img_aug) != len(imgs):
            raise ValueError(f"img_aug: {len(img_aug)} matrices for {len(imgs)} camera images")
        augs = [_check_aug(i, a) for i, a in enumerate(img_aug)]
    device = torch.device(device)
    out_hw = tuple(geometry.image_size)
    mean = torch.tensor(IMAGENET_MEAN_RGB, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD_RGB, device=device).view(3, 1, 1)

    # cameras sharing raw size and resize scale are resized together
    scales = [(float(np.linalg.norm(a[:2, 0])), float(np.linalg.norm(a[:2, 1]))) for a in augs]
    groups: dict[tuple[int, int, float, float], list[int]] = {}
    for i, (im, s) in enumerate(zip(imgs, scales)):
        groups.setdefault((im.shape[0], im.shape[1], *s), []).append(i)
    outputs: list[Tensor | None] = [None] * len(imgs)
    use_uint8 = device.type == "cpu" if uint8_kernel is None else uint8_kernel
    for (h, w, sx, sy), idx in groups.items():
        if int(h * sy * (1.0 + 1e-10)) < 1 or int(w * sx * (1.0 + 1e-10)) < 1:
            raise ValueError(f"camera {idx[0]} field img_aug: scales the {w}x{h} image by ({sx:.3g}, {sy:.3g}), "
                             f"to less than one pixel")
        raw = torch.stack([_as_tensor(imgs[i]) for i in idx])
        resized = _resize(raw.to(device, non_blocking=True), sx, sy, uint8_kernel=use_uint8)
        residuals: dict[bytes, tuple[np.ndarray, np.ndarray, list[int]]] = {}
        for k, i in enumerate(idx):
            A_full, t_full = augs[i][:2, :2], augs[i][:2, 3]
            A = A_full @ np.diag([1.0 / sx, 1.0 / sy])
            t = t_full + 0.5 * (1.0 - A_full.sum(axis=1))  # OpenCV -> continuous coordinates
            key = np.round(np.concatenate([A.ravel(), t]), 9).tobytes()
            residuals.setdefault(key, (A, t, []))[2].append(k)
        for A, t, ks in residuals.values():
            imgs_k = resized if len(ks) == len(idx) else resized[ks]
            out = _residual_exact(imgs_k, A, t, out_hw)
            if out is None:
                out = torch.stack([_residual_grid_sample(img.float(), A, t, out_hw) for img in imgs_k])
            out = ((out.float() - mean) / std).to(dtype)
            for j, k in enumerate(ks):
                outputs[idx[k]] = out[j]
    batch = torch.stack(outputs)[None]  # type: ignore[arg-type]
    return batch, np.stack(augs).astype(np.float64)
