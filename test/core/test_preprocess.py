"""preprocess_images: the output is exactly the img_aug map of the raw image (bright dots land where the
matrix sends them), for the test-time transform and random resize/crop/flip/rotate; normalisation,
padding, mixed image sizes; bad input names the camera and the field."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from simdistill_ros.core import preprocess as pre
from simdistill_ros.core.config import GeometryConfig, load_preset
from simdistill_ros.core.geometry import image_aug_matrix, inference_image_aug
from simdistill_ros.core.preprocess import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, preprocess_images

MEAN = np.array(IMAGENET_MEAN_RGB)[:, None, None]
STD = np.array(IMAGENET_STD_RGB)[:, None, None]
DOT = 2  # dots are 5 x 5 pixels: rows/cols r-2..r+2, centre (c, r) in OpenCV's pixel convention


@pytest.fixture
def geometry() -> GeometryConfig:
    return load_preset("r50").geometry  # 256 x 704, 1600 -> 768


def _dotted(rng: np.random.Generator, aug: np.ndarray, raw_hw: tuple[int, int], out_hw: tuple[int, int],
            n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A black raw image with n bright dots whose images under `aug` lie inside the output, spaced apart.
    Returns (image, expected output positions n x 2, OpenCV convention)."""
    img = np.zeros((*raw_hw, 3), dtype=np.uint8)
    want: list[np.ndarray] = []
    while len(want) < n:
        r, c = int(rng.integers(DOT, raw_hw[0] - DOT)), int(rng.integers(DOT, raw_hw[1] - DOT))
        uv = aug[:2, :2] @ np.array([c, r]) + aug[:2, 3]
        if not (8 <= uv[0] <= out_hw[1] - 8 and 8 <= uv[1] <= out_hw[0] - 8):
            continue
        if any(np.abs(uv - w).max() < 16 for w in want):
            continue
        img[r - DOT:r + DOT + 1, c - DOT:c + DOT + 1] = 255
        want.append(uv)
    return img, np.array(want)


def _centroids(out_chw: np.ndarray, want: np.ndarray, half: int = 6) -> np.ndarray:
    """Intensity centroids (OpenCV convention: pixel (i, j) at (j, i)) of the output around each expected
    position."""
    inten = (out_chw * STD + MEAN).mean(0)
    got = []
    for u, v in want:
        c0, r0 = int(round(u)) - half, int(round(v)) - half
        win = np.clip(inten[r0:r0 + 2 * half, c0:c0 + 2 * half], 0, None)
        rr, cc = np.mgrid[r0:r0 + 2 * half, c0:c0 + 2 * half]
        got.append([(cc * win).sum() / win.sum(), (rr * win).sum() / win.sum()])
    return np.array(got)


def test_inference_transform_maps_dots_exactly(geometry: GeometryConfig) -> None:
    rng = np.random.default_rng(0)
    out_hw = geometry.image_size
    aug0 = inference_image_aug((900, 1600), geometry)[0]
    images, wants = zip(*[_dotted(rng, aug0, (900, 1600), out_hw) for _ in range(3)])
    x, augs = preprocess_images(list(images), geometry, "cpu")
    assert x.shape == (1, 3, 3, *out_hw) and x.dtype == torch.float32
    assert augs.shape == (3, 4, 4) and augs.dtype == np.float64
    np.testing.assert_allclose(augs[0], aug0)
    for i in range(3):
        np.testing.assert_allclose(_centroids(x[0, i].numpy(), wants[i]), wants[i], atol=0.05)


def _random_aug(rng: np.random.Generator, geometry: GeometryConfig, raw_hw: tuple[int, int]) -> np.ndarray:
    """BEVFusion-style training aug: resize 0.38-0.55, bottom-ish crop, flip, rotate +-5.4 deg."""
    h, w = geometry.image_size
    s = rng.uniform(0.38, 0.55)
    new_w, new_h = int(raw_hw[1] * s), int(raw_hw[0] * s)
    crop_h = int((1 - rng.uniform(0.0, 0.22)) * new_h) - h
    crop_w = int(rng.uniform(0, max(0, new_w - w)))
    return image_aug_matrix((s, s), (crop_w, crop_h), (w, h), flip=bool(rng.random() < 0.5),
                            rotate_deg=float(rng.uniform(-5.4, 5.4)))


def test_random_training_transforms_map_dots(geometry: GeometryConfig) -> None:
    rng = np.random.default_rng(1)
    out_hw = geometry.image_size
    augs = [_random_aug(rng, geometry, (900, 1600)) for _ in range(4)]
    # exercise the exact paths too: a pure flip with whole-pixel crop, and a whole-pixel crop only
    augs.append(image_aug_matrix((0.5, 0.5), (20, 150), (704, 256), flip=True))
    augs.append(image_aug_matrix((1.0, 1.0), (300, 500), (704, 256)))
    images, wants = zip(*[_dotted(rng, a, (900, 1600), out_hw) for a in augs])
    x, back = preprocess_images(list(images), geometry, "cpu", img_aug=np.stack(augs))
    np.testing.assert_array_equal(back, np.stack(augs))
    for i in range(len(augs)):
        np.testing.assert_allclose(_centroids(x[0, i].numpy(), wants[i]), wants[i], atol=0.1)


def test_exact_path_equals_grid_sample_path(geometry: GeometryConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (900, 1600, 3), dtype=np.uint8) for _ in range(2)]
    augs = np.stack([inference_image_aug((900, 1600), geometry)[0],
                     image_aug_matrix((0.48, 0.48), (40, 180), (704, 256), flip=True)])
    fast, _ = preprocess_images(images, geometry, "cpu", img_aug=augs)
    monkeypatch.setattr(pre, "_residual_exact", lambda *a: None)
    slow, _ = preprocess_images(images, geometry, "cpu", img_aug=augs)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)


def test_uint8_and_float_resize_kernels_agree() -> None:
    """CPU resizes with torch's uint8 kernel, CUDA in float then rounds: the same image within a grey level."""
    rng = np.random.default_rng(4)
    raw = torch.from_numpy(rng.integers(0, 256, (2, 300, 500, 3), dtype=np.uint8))
    for s in (0.48, 0.4137):
        a = pre._resize(raw, s, s, uint8_kernel=True)
        b = pre._resize(raw, s, s, uint8_kernel=False)
        assert a.dtype == torch.uint8 and a.shape == b.shape == (2, 3, int(300 * s), int(500 * s))
        assert float((a.float() - b).abs().max()) <= 1.0


def test_normalisation_padding_mixed_sizes_and_dtype(geometry: GeometryConfig) -> None:
    grey = np.full((900, 1600, 3), (10, 128, 250), dtype=np.uint8)
    small = np.full((720, 1280, 3), 77, dtype=np.uint8)
    x, augs = preprocess_images([grey, small], geometry, "cpu", dtype=torch.float16)
    assert x.dtype == torch.float16 and x.shape == (1, 2, 3, 256, 704)
    want = (np.array([10, 128, 250.0])[:, None, None] - MEAN) / STD
    np.testing.assert_allclose(x[0, 0].float().numpy(), np.broadcast_to(want, (3, 256, 704)), atol=2e-3)
    np.testing.assert_allclose(augs[1], inference_image_aug((720, 1280), geometry)[0])
    # a crop reaching past the image bottom is padded black (normalised -mean/std)
    aug = image_aug_matrix((0.48, 0.48), (32, 300), (704, 256))  # resized height 432: rows 132.. are outside
    x, _ = preprocess_images([grey], geometry, "cpu", img_aug=[aug])
    np.testing.assert_allclose(x[0, 0, :, 140:].numpy(), np.broadcast_to(-MEAN / STD, (3, 116, 704)), atol=1e-5)
    np.testing.assert_allclose(x[0, 0, :, :120].numpy(), np.broadcast_to(want, (3, 120, 704)), atol=1e-4)


def test_bad_input_names_camera_and_field(geometry: GeometryConfig) -> None:
    ok = np.zeros((900, 1600, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="camera 1 field image.*uint8"):
        preprocess_images([ok, ok.astype(np.float32)], geometry, "cpu")
    with pytest.raises(ValueError, match="camera 2 field image.*H x W x 3"):
        preprocess_images([ok, ok, ok[..., 0]], geometry, "cpu")
    with pytest.raises(ValueError, match="camera 0 field image.*H x W x 3"):
        preprocess_images([np.zeros((900, 1600, 4), dtype=np.uint8)], geometry, "cpu")
    with pytest.raises(ValueError, match="camera 0 field image.*numpy array"):
        preprocess_images([[[1, 2, 3]]], geometry, "cpu")  # type: ignore[list-item]
    aug = inference_image_aug((900, 1600), geometry)[0]
    with pytest.raises(ValueError, match="camera 1 field img_aug.*4 x 4"):
        preprocess_images([ok, ok], geometry, "cpu", img_aug=[aug, aug[:3]])
    with pytest.raises(ValueError, match="camera 0 field img_aug.*NaN"):
        preprocess_images([ok], geometry, "cpu", img_aug=[np.full((4, 4), np.nan)])
    with pytest.raises(ValueError, match="camera 0 field img_aug.*singular"):
        preprocess_images([ok], geometry, "cpu", img_aug=[np.zeros((4, 4))])
    with pytest.raises(ValueError, match="img_aug: 1 matrices for 2"):
        preprocess_images([ok, ok], geometry, "cpu", img_aug=[aug])
    with pytest.raises(ValueError, match="at least one"):
        preprocess_images([], geometry, "cpu")
    with pytest.raises(ValueError, match="camera 0 field img_aug: scales the 1600x2 image .* less than one pixel"):
        preprocess_images([np.zeros((2, 1600, 3), np.uint8)], geometry, "cpu",
                          img_aug=[image_aug_matrix((0.3, 0.3), (0, 0), (704, 256))])
    # smaller than the network input in both directions: upscaled and padded, not an error
    tiny, _ = preprocess_images([np.full((3, 5, 3), 90, np.uint8)], geometry, "cpu")
    assert tiny.shape == (1, 1, 3, 256, 704) and bool(torch.isfinite(tiny).all())
