"""`simdistill demo`: run the Detector on one six-camera frame of a synthetic nuScenes-format world and
print its boxes beside the ground truth.

Without --dataroot, a small synthetic world (1 scene, 2 key frames, 900x1600 cameras) is generated once
into --work and reused. Without --checkpoint the tiny preset runs with random weights (seeded): the
pipeline is exercised end to end, but the boxes mean nothing until a trained checkpoint is given.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from simdistill_ros.core.config import load_preset
from simdistill_ros.core.detector import Detector
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.types import CameraCalibration, Detections, Frame


def load_frame(dataroot: Path, version: str, index: int) -> tuple[Frame, np.ndarray, list[str], str]:
    """Frame (images + calibration) of the index-th key frame of the dataroot, with its ground truth."""
    from training.data.dataset import read_image
    from training.data.nuscenes import build_infos, split_scene_names

    split = "val" if split_scene_names(dataroot, version, "val") else "train"
    infos = build_infos(dataroot, version, split)
    if not infos:
        raise ValueError(f"dataroot {dataroot} ({version}, split {split}) has no samples")
    info = infos[index % len(infos)]
    images, calibs = [], []
    for cam in info.cameras:
        try:
            rgb = read_image(cam.image_path)
        except FileNotFoundError as e:
            raise ValueError(f"camera {cam.name!r}: {e}") from e
        images.append(rgb)
        calibs.append(CameraCalibration(cam.name, cam.K, cam.cam_to_ego, rgb.shape[:2]))
    return Frame(tuple(images), tuple(calibs), stamp_ns=int(info.timestamp) * 1000), info.gt_boxes, list(info.gt_names), info.token


def format_boxes(boxes: np.ndarray, names: list[str], scores: np.ndarray | None = None) -> str:
    head = f"{'class':<22}{'score':>7}{'x':>8}{'y':>8}{'z':>7}{'l':>7}{'w':>6}{'h':>6}{'yaw':>7}{'vx':>7}{'vy':>7}"
    rows = [head]
    for i, (b, n) in enumerate(zip(boxes, names)):
        s = f"{scores[i]:7.3f}" if scores is not None else f"{'gt':>7}"
        rows.append(f"{n:<22}{s}{b[0]:8.2f}{b[1]:8.2f}{b[2]:7.2f}{b[3]:7.2f}{b[4]:6.2f}{b[5]:6.2f}{b[6]:7.2f}"
                    f"{b[7]:7.2f}{b[8]:7.2f}")
    return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, help="trained student checkpoint (default: untrained tiny)")
    parser.add_argument("--dataroot", type=Path, help="nuScenes-format dataroot (default: generate a synthetic one)")
    parser.add_argument("--version", default="v1.0-trainval")
    parser.add_argument("--sample", type=int, default=0, help="index of the key frame in the split")
    parser.add_argument("--work", type=Path, default=Path("runs/demo"), help="where the generated world is kept")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--score-threshold", type=float, default=None)
    parser.add_argument("--top", type=int, default=15, help="print at most this many detections")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    try:
        import cv2  # noqa: F401
        import nuscenes  # noqa: F401
    except ImportError as e:
        raise ValueError(f"the demo reads nuScenes-format data and needs the training extras "
                         f"(pip install 'simdistill_ros[train]'): {e}") from e
    dataroot = args.dataroot
    if dataroot is None:
        from training.data.synth import generate

        dataroot = args.work / f"synth-seed{args.seed}"
        if not dataroot.exists():
            print(f"generating a synthetic nuScenes-format world in {dataroot} ...")
            generate(dataroot, scenes=1, samples_per_scene=2, seed=args.seed, image_size=(900, 1600), sweeps=2,
                     version=args.version, workers=1)
    frame, gt_boxes, gt_names, token = load_frame(dataroot, args.version, args.sample)
    if args.checkpoint is not None:
        detector = Detector.from_checkpoint(args.checkpoint, device=args.device, score_threshold=args.score_threshold)
        source = str(args.checkpoint)
    else:
        config = load_preset("tiny")
        torch.manual_seed(args.seed)
        detector = Detector(Student(config.model, config.geometry), config, device=args.device,
                            score_threshold=0.05 if args.score_threshold is None else args.score_threshold)
        source = f"tiny preset, UNTRAINED random weights (seed {args.seed}); pass --checkpoint for real detections"
    detector.detect(frame)  # warm-up: builds the view-transform plan for this rig
    det: Detections = detector.detect(frame)
    print(f"sample {token} of {dataroot} ({len(frame.images)} cameras "
          f"{frame.images[0].shape[1]}x{frame.images[0].shape[0]})")
    print(f"model: {source}")
    t = det.timings_ms
    print(f"{len(det)} detections in {t['total']:.0f} ms on {args.device} (preprocess {t['preprocess']:.0f}, "
          f"network {t['network']:.0f}, postprocess {t['postprocess']:.0f}); boxes in base_link "
          f"(x fwd, y left, z up; z = box centre), top {min(args.top, len(det))}:")
    print(format_boxes(det.boxes[: args.top], det.names[: args.top], det.scores[: args.top]))
    print(f"ground truth: {len(gt_boxes)} boxes")
    print(format_boxes(gt_boxes, gt_names))
    return 0
