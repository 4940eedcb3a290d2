"""Detector: a synchronised camera Frame in, 3D Detections in the ego frame out.

It owns an inference backend (core/backends: the torch reference, compiled, CUDA graphs, onnxruntime,
TensorRT), the per-calibration view-transform plan cache, pre-processing and decoding, which are the
same for every backend. On CUDA the uint8 images are uploaded once through pinned memory and resized,
cropped and normalised on the device. The live ROS node and bag replay both call `detect`, so they see
exactly the same pipeline.
"""
from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import torch

from simdistill_ros.core.backends.base import InferenceBackend
from simdistill_ros.core.backends.factory import load_backend
from simdistill_ros.core.backends.torch_backend import TorchBackend
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.geometry import inference_image_aug
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.postprocess import decode, to_detections
from simdistill_ros.core.preprocess import preprocess_images
from simdistill_ros.core.types import Detections, Frame
from simdistill_ros.core.upload import PinnedUploader
from simdistill_ros.core.view_plan import BEVPoolPlan, PlanCache


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Detector:
    """Runs the camera-only student on Frames.

    network: a Student (run by the eager torch backend on `device` at `precision`: fp32, fp16 (CUDA) or
    bf16) or an InferenceBackend (which fixes device and precision itself). config: the DetectorConfig
    the network was built for. score_threshold / max_detections override the config's post-processing.
    """

    def __init__(
        self,
        network: Student | InferenceBackend,
        config: DetectorConfig,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> None:
        self.backend = TorchBackend(network, device, precision) if isinstance(network, Student) else network
        self.device = self.backend.device
        self.precision = self.backend.precision
        self.config = config
        post = config.postprocess
        if score_threshold is not None:
            post = replace(post, score_threshold=float(score_threshold))
        if max_detections is not None:
            post = replace(post, max_detections=int(max_detections))
        self.postprocess = post
        self.plans = PlanCache(config.geometry, self.device)
        self.uploader = PinnedUploader(self.device)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu",
                        precision: str = "fp32", backend: str = "torch", score_threshold: float | None = None,
                        max_detections: int | None = None) -> "Detector":
        """A Detector for a model file: a checkpoint (backends torch, compiled, cudagraph), an exported
        .onnx file (onnxruntime, tensorrt) or a TensorRT engine (tensorrt); backend auto picks the
        fastest that can run it here (core/backends/factory.py). The config comes from the file."""
        network, config = load_backend(path, backend, device, precision)
        return cls(network, config, score_threshold=score_threshold, max_detections=max_detections)

    @property
    def model(self) -> Student:
        """The Student of a torch backend (for per-stage benchmarks); AttributeError for other backends."""
        if not isinstance(self.backend, TorchBackend):
            raise AttributeError(f"the {self.backend.name} backend has no PyTorch model")
        return self.backend.model

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
        """The torch backend's autocast (fp16/bf16), else a no-op context."""
        return self.backend.autocast() if isinstance(self.backend, TorchBackend) else nullcontext()

    def preprocess(self, frame: Frame, img_aug: np.ndarray) -> torch.Tensor:
        """1 x N x 3 x H x W normalised float32 images on the device (pinned upload on CUDA)."""
        images, _ = preprocess_images(self.uploader.upload(frame.images), self.config.geometry, self.device,
                                      img_aug=img_aug)
        return images

    @torch.inference_mode()
    def detect(self, frame: Frame) -> Detections:
        """Detect objects in one synchronised frame. Timings (ms) per stage are in Detections.timings_ms."""
        self.check_frame(frame)
        dev = self.device
        t0 = time.perf_counter()
        img_aug = self.image_augs(frame)
        images = self.preprocess(frame, img_aug)
        _sync(dev)
        t1 = time.perf_counter()
        plan = self.plan_for(frame, img_aug)
        t2 = time.perf_counter()
        heads = self.backend(images, plan)
        _sync(dev)
        t3 = time.perf_counter()
        decoded = decode(heads, self.config.model.tasks, self.config.geometry, self.postprocess)[0]
        out = to_detections(decoded, self.class_names, stamp_ns=frame.stamp_ns)
        t4 = time.perf_counter()
        out.timings_ms.update(preprocess=(t1 - t0) * 1e3, plan=(t2 - t1) * 1e3, network=(t3 - t2) * 1e3,
                              postprocess=(t4 - t3) * 1e3, total=(t4 - t0) * 1e3)
        return out
