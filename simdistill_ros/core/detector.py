"""Detector: a synchronised camera Frame in, 3D Detections in the ego frame out.

It owns the student network, the per-calibration view-transform plan cache, pre-processing and
decoding. The live ROS node and bag replay both call `detect`, so they see exactly the same pipeline.
"""
from __future__ import annotations

import os
import time
from contextlib import nullcontext

import numpy as np
import torch

from simdistill_ros.core.checkpoint import load_checkpoint, load_state_into
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.geometry import inference_image_aug
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.postprocess import decode, to_detections
from simdistill_ros.core.preprocess import preprocess_images
from simdistill_ros.core.types import Detections, Frame
from simdistill_ros.core.view_plan import BEVPoolPlan, PlanCache


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Detector:
    """Runs the camera-only student on Frames.

    model: a Student built from `config`; device: where it runs; precision: "fp32" or "fp16" (CUDA only).
    score_threshold / max_detections override the config's post-processing when given.
    """

    def __init__(
        self,
        model: Student,
        config: DetectorConfig,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device")
        self.config = config
        self.precision = precision
        post = config.postprocess
        if score_threshold is not None or max_detections is not None:
            from dataclasses import replace

            post = replace(post,
                           score_threshold=post.score_threshold if score_threshold is None else float(score_threshold),
                           max_detections=post.max_detections if max_detections is None else int(max_detections))
        self.postprocess = post
        self.model = model.to(self.device).eval()
        self.plans = PlanCache(config.geometry, self.device)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu",
                        precision: str = "fp32", backend: str = "torch",
                        **overrides: float | int | None) -> "Detector":
        """Load a student checkpoint. backend: "torch" or "auto" (which is torch here); any other value is
        a ValueError naming it."""
        if backend not in ("torch", "auto"):
            raise ValueError(f"backend {backend!r} is unavailable (available: torch, auto)")
        config, state, _ = load_checkpoint(path)
        model = Student(config.model, config.geometry)
        load_state_into(model, state, f"checkpoint {path}")
        return cls(model, config, device=device, precision=precision, **overrides)  # type: ignore[arg-type]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.model.class_names

    def check_frame(self, frame: Frame) -> None:
        n = self.config.model.num_cameras
        if len(frame.images) != n:
            raise ValueError(f"frame has {len(frame.images)} images but the model expects {n} cameras "
                             f"({', '.join(self.config.model.camera_names)})")

    def image_augs(self, frame: Frame) -> np.ndarray:
        """N x 4 x 4 test-time image-augmentation matrices for the frame's cameras (image size and
        principal point; a HorizonWarning names a camera whose horizon the crop cannot show)."""
        g = self.config.geometry
        return np.stack([inference_image_aug(c.image_size, g, c.K, c.cam_to_ego, f"camera {c.name!r}")[0]
                         for c in frame.calibrations])

    def plan_for(self, frame: Frame, img_aug: np.ndarray) -> BEVPoolPlan:
        """The view-transform plan of the frame's calibration and camera mask (cached per calibration)."""
        valid = None if frame.valid is None else np.asarray(frame.valid, dtype=bool)
        return self.plans.get(np.stack([c.K for c in frame.calibrations]),
                              np.stack([c.cam_to_ego for c in frame.calibrations]), img_aug, valid)

    def autocast(self) -> torch.autocast | nullcontext[None]:
        """fp16 autocast on CUDA when precision is fp16, else a no-op context."""
        return torch.autocast("cuda", dtype=torch.float16) if self.precision == "fp16" else nullcontext()

    @torch.inference_mode()
    def detect(self, frame: Frame) -> Detections:
        """Detect objects in one synchronised frame. Timings (ms) per stage are in Detections.timings_ms."""
        self.check_frame(frame)
        dev = self.device
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        img_aug = self.image_augs(frame)
        images, img_aug = preprocess_images(list(frame.images), self.config.geometry, dev, img_aug=img_aug)
        _sync(dev)
        t1 = time.perf_counter()
        plan = self.plan_for(frame, img_aug)
        t2 = time.perf_counter()
        with self.autocast():
            heads = self.model(images, plan.depth_index, plan.pixel_index, plan.cell_index)
        heads = tuple(h.float() for h in heads)
        _sync(dev)
        t3 = time.perf_counter()
        decoded = decode(heads, self.config.model.tasks, self.config.geometry, self.postprocess)[0]
        out = to_detections(decoded, self.class_names, stamp_ns=frame.stamp_ns)
        t4 = time.perf_counter()
        times.update(preprocess=(t1 - t0) * 1e3, plan=(t2 - t1) * 1e3, network=(t3 - t2) * 1e3,
                     postprocess=(t4 - t3) * 1e3, total=(t4 - t0) * 1e3)
        out.timings_ms.update(times)
        return out
