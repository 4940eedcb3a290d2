"""A synchronised set of camera messages -> a core Frame: image conversion, calibration, TF, undistortion.

Used by the node (and by bag replay: it needs no ROS, only message fields). Per camera it
- converts the Image (a view, no copy) or CompressedImage (JPEG/PNG decoded in a thread pool: OpenCV
  releases the GIL, so six cameras decode in parallel);
- takes K, image size and distortion from that camera's latest CameraInfo (P when `use_rectified`);
  a distorted camera (non-zero D on a raw topic) is undistorted with cv2 maps computed once per
  calibration, or refused when `distorted="refuse"`: never silently treated as pinhole;
- takes cam_to_target from the transform buffer: the image's header.frame_id to target_frame, with
  ego-motion compensation to the anchor stamp through `motion_frame` when TF has it (core/tf_buffer);
- checks that the image size equals its CameraInfo's.
A camera that fails any of these is reported by name (topic and field) and is missing from the frame:
masked (Frame.valid) under `missing="mask"`, or the set is dropped under `missing="drop"`.
The calibration of the previous frame is kept, so a change is detected and counted.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from simdistill_ros.core.sync import CameraSet
from simdistill_ros.core.tf_buffer import TransformBuffer, TransformError, camera_to_target
from simdistill_ros.core.types import CameraCalibration, Frame
from simdistill_ros.ros.convert import (ConversionError, Intrinsics, camera_info_to_intrinsics, compressed_to_rgb,
                                        image_to_rgb)

SUPPORTED_DISTORTION = ("plumb_bob", "rational_polynomial", "equidistant")


@dataclass(frozen=True)
class CameraInput:
    """Where one camera's data comes from: its name (model order) and topics (for messages and diagnostics)."""

    name: str
    image_topic: str
    info_topic: str


@dataclass(frozen=True)
class BuiltFrame:
    """The result for one set: frame None when the set is dropped; problems: camera -> what is wrong."""

    frame: Frame | None
    problems: dict[str, str]
    motion_compensated: tuple[bool, ...]
    calibration_changed: bool


class _Undistorter:
    """cv2 remap tables of one (K, D, size, model), built once; undistorts to the same K and size."""

    def __init__(self, intr: Intrinsics) -> None:
        import cv2

        h, w = intr.image_size
        if intr.distortion_model == "equidistant":
            D = intr.D[:4].reshape(4, 1)
            self.maps = cv2.fisheye.initUndistortRectifyMap(intr.K, D, np.eye(3), intr.K, (w, h), cv2.CV_16SC2)
        else:
            self.maps = cv2.initUndistortRectifyMap(intr.K, intr.D, np.eye(3), intr.K, (w, h), cv2.CV_16SC2)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.remap(np.ascontiguousarray(rgb), self.maps[0], self.maps[1], cv2.INTER_LINEAR)


class FrameBuilder:
    """Builds Frames from CameraSets whose payloads are Image or CompressedImage messages.

    cameras: one CameraInput per camera, in model order; compressed: CompressedImage payloads;
    use_rectified: K from CameraInfo.P (the images are rectified); distorted: "undistort" or "refuse";
    missing: "mask" or "drop" (what a failed camera does to the set); motion_frame: "" for none.
    """

    def __init__(self, cameras: Sequence[CameraInput], target_frame: str, tf: TransformBuffer, compressed: bool,
                 use_rectified: bool = False, distorted: str = "undistort", missing: str = "drop",
                 motion_frame: str = "", decode_threads: int = 6) -> None:
        if distorted not in ("undistort", "refuse"):
            raise ValueError(f"distorted must be 'undistort' or 'refuse', got {distorted!r}")
        if missing not in ("mask", "drop"):
            raise ValueError(f"missing must be 'mask' or 'drop', got {missing!r}")
        self.cameras = tuple(cameras)
        self.target_frame = target_frame
        self.tf = tf
        self.compressed = compressed
        self.use_rectified = use_rectified
        self.distorted = distorted
        self.missing = missing
        self.motion_frame = motion_frame
        self._infos: dict[str, Any] = {}
        self._intrinsics: dict[str, Intrinsics] = {}
        self._undistorters: dict[str, tuple[Intrinsics, _Undistorter]] = {}
        self._last: dict[str, CameraCalibration] = {}
        self.calibration_changes = 0
        self._pool = ThreadPoolExecutor(max_workers=max(1, decode_threads), thread_name_prefix="decode") \
            if compressed else None

    def set_camera_info(self, camera: str, msg: Any) -> None:
        """Keep the camera's latest CameraInfo (converted when the next frame is built)."""
        self._infos[camera] = msg

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _intrinsics_of(self, cam: CameraInput) -> Intrinsics:
        msg = self._infos.get(cam.name)
        if msg is None:
            raise ConversionError(f"topic {cam.info_topic}: no CameraInfo received yet")
        intr = camera_info_to_intrinsics(msg, self.use_rectified, where=f"topic {cam.info_topic}")
        if intr.distorted:
            if self.distorted == "refuse":
                raise ConversionError(f"topic {cam.info_topic} field d: the camera is distorted ({intr.distortion_model}) "
                                      "and distorted=refuse; publish rectified images (use_rectified) or set "
                                      "distorted=undistort")
            if intr.distortion_model not in SUPPORTED_DISTORTION:
                raise ConversionError(f"topic {cam.info_topic} field distortion_model: {intr.distortion_model!r} "
                                      f"cannot be undistorted (supported: {', '.join(SUPPORTED_DISTORTION)})")
        return intr

    def _image(self, cam: CameraInput, msg: Any, intr: Intrinsics) -> np.ndarray:
        where = f"topic {cam.image_topic}"
        rgb = compressed_to_rgb(msg, where) if self.compressed else image_to_rgb(msg, where)
        if tuple(rgb.shape[:2]) != intr.image_size:
            raise ConversionError(f"{where} fields width/height: image is {rgb.shape[1]}x{rgb.shape[0]} but its "
                                  f"CameraInfo ({cam.info_topic}) says {intr.image_size[1]}x{intr.image_size[0]}")
        if intr.distorted:
            cached = self._undistorters.get(cam.name)
            if cached is None or not _same(cached[0], intr):
                cached = self._undistorters[cam.name] = (intr, _Undistorter(intr))
            rgb = cached[1](rgb)
        return rgb

    def build(self, cset: CameraSet[Any]) -> BuiltFrame:
        problems: dict[str, str] = {}
        n = len(self.cameras)
        images: list[np.ndarray | None] = [None] * n
        calibs: list[CameraCalibration | None] = [None] * n
        compensated = [False] * n
        jobs: dict[int, Any] = {}
        for i, (cam, msg, stamp) in enumerate(zip(self.cameras, cset.payloads, cset.stamps_ns)):
            if msg is None:
                problems[cam.name] = f"topic {cam.image_topic}: no image within slop of the set's stamp"
                continue
            try:
                intr = self._intrinsics_of(cam)
                frame_id = str(msg.header.frame_id).lstrip("/")
                if not frame_id:
                    raise ConversionError(f"topic {cam.image_topic} field header.frame_id: empty; TF needs the camera frame")
                try:
                    T, compensated[i] = camera_to_target(self.tf, self.target_frame, frame_id, int(stamp),
                                                         cset.stamp_ns, self.motion_frame or None)
                except TransformError as e:
                    raise ConversionError(f"topic {cam.image_topic} field header.frame_id: no transform {frame_id!r} -> "
                                          f"{self.target_frame!r}: {e}") from e
                calibs[i] = self._calibration(cam.name, intr, T)
                if self._pool is not None:
                    jobs[i] = self._pool.submit(self._image, cam, msg, intr)
                else:
                    images[i] = self._image(cam, msg, intr)
            except (ConversionError, ValueError) as e:
                problems[cam.name] = str(e)
                calibs[i] = None
        for i, job in jobs.items():
            try:
                images[i] = job.result()
            except (ConversionError, ValueError) as e:
                problems[self.cameras[i].name] = str(e)
                images[i] = None
        valid = [img is not None and cal is not None for img, cal in zip(images, calibs)]
        changed = self._note_calibration([c for c, ok in zip(calibs, valid) if ok])
        if not any(valid) or (not all(valid) and self.missing == "drop"):
            return BuiltFrame(None, problems, tuple(compensated), changed)
        for i, ok in enumerate(valid):
            if not ok:
                images[i], calibs[i] = self._placeholder(i)
        frame = Frame(tuple(images), tuple(calibs), cset.stamp_ns,  # type: ignore[arg-type]
                      valid=None if all(valid) else tuple(valid))
        return BuiltFrame(frame, problems, tuple(compensated), changed)

    def _calibration(self, name: str, intr: Intrinsics, T: np.ndarray) -> CameraCalibration:
        """The camera's last CameraCalibration when nothing changed (no re-validation per frame), else a new one."""
        prev = self._last.get(name)
        if prev is not None and prev.image_size == intr.image_size and np.array_equal(prev.K, intr.K) \
                and np.array_equal(prev.cam_to_ego, T):
            return prev
        return CameraCalibration(name, intr.K, T, intr.image_size)

    def _note_calibration(self, calibs: list[CameraCalibration | None]) -> bool:
        changed = False
        for cal in calibs:
            if cal is None:
                continue
            prev = self._last.get(cal.name)
            if prev is not None and prev is not cal:
                changed = True
            self._last[cal.name] = cal
        if changed:
            self.calibration_changes += 1
        return changed

    def _placeholder(self, i: int) -> tuple[np.ndarray, CameraCalibration]:
        """A black image and a calibration for a masked camera (its last good one, else a plain pinhole)."""
        name = self.cameras[i].name
        cal = self._last.get(name)
        if cal is None:
            h, w = next(iter(self._last.values())).image_size if self._last else (900, 1600)
            K = np.array([[float(w), 0.0, w / 2.0], [0.0, float(w), h / 2.0], [0.0, 0.0, 1.0]])
            cal = CameraCalibration(name, K, np.eye(4), (h, w))
        return np.zeros((*cal.image_size, 3), np.uint8), cal


def _same(a: Intrinsics, b: Intrinsics) -> bool:
    return (a.image_size == b.image_size and a.distortion_model == b.distortion_model and np.array_equal(a.K, b.K)
            and np.array_equal(a.D, b.D))
