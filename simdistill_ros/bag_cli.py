"""`simdistill bag from-nuscenes` and `simdistill bag replay`: the rosbag2 tools (docs/ros.md, Bags).

from-nuscenes resolves the scenes (a name, a split from splits.json or the devkit, or all) through
training.data.nuscenes and writes them with simdistill_ros.bag.from_nuscenes; replay runs
simdistill_ros.bag.replay with the node's params file and a Detector from the checkpoint, then prints the
table and writes the output bag and, with --report, report.json and pictures (simdistill_ros.bag_report).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from simdistill_ros.bag import BAG_MODULES, require
from simdistill_ros.bag.bagio import STORAGES
from simdistill_ros.core.cpu_threads import add_threads_argument, apply_threads


def _add_from_nuscenes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataroot", type=Path, required=True, help="nuScenes-format dataroot (real or synthetic)")
    p.add_argument("--version", default="v1.0-trainval", help="table folder, e.g. v1.0-mini")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--scene", action="append", metavar="NAME", help="a scene by name (repeatable)")
    which.add_argument("--split", help="every scene of a split (splits.json of a synthetic world, else the devkit's)")
    which.add_argument("--all", action="store_true", help="every scene of the database")
    p.add_argument("--out", type=Path, required=True, help="output bag folder (must not exist unless --force)")
    p.add_argument("--storage", choices=STORAGES, default="mcap")
    p.add_argument("--compressed", action="store_true", help="the JPEG bytes on /<cam>/image_raw/compressed")
    p.add_argument("--lidar", action="store_true", help="also /lidar_top/points (PointCloud2)")
    p.add_argument("--keyframes-only", action="store_true", help="only the key frames' camera images (2 Hz)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--no-progress", action="store_true")


def _add_replay(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bag", type=Path, required=True, help="input bag (from-nuscenes or a recording)")
    p.add_argument("--checkpoint", type=Path, required=True, help="student checkpoint, .onnx or TensorRT engine")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "tensorrt", "auto"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True, help="output bag with detections and markers")
    p.add_argument("--report", type=Path, help="folder for report.json and PNG pictures")
    p.add_argument("--params-file", type=Path, help="the node's params file (default: config/detector.param.yaml)")
    p.add_argument("--motion-frame", help="override the params file's motion_frame (e.g. map: ego-motion "
                                          "compensation through /tf)")
    p.add_argument("--compressed", action="store_true", help="read .../image_raw/compressed topics")
    p.add_argument("--score-threshold", type=float)
    p.add_argument("--max-detections", type=int)
    p.add_argument("--storage", choices=STORAGES, default="mcap", help="storage of the output bag")
    p.add_argument("--pictures", type=int, default=3, help="key-frame sets to draw (BEV and cameras)")
    add_threads_argument(p)
    p.add_argument("--force", action="store_true", help="replace an existing --out / --report")
    p.add_argument("--no-progress", action="store_true")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bag_command", metavar="SUBCOMMAND", required=True)
    _add_from_nuscenes(sub.add_parser("from-nuscenes", help="a nuScenes-format dataroot to a rosbag2 bag"))
    _add_replay(sub.add_parser("replay", help="run the detector over a bag: output bag, metrics, latency, pictures"))


def resolve_scenes(dataroot: Path, version: str, scenes: list[str] | None, split: str | None,
                   all_scenes: bool, nusc: Any) -> list[str]:
    from training.data.nuscenes import split_scene_names

    if scenes:
        return list(scenes)
    if all_scenes:
        return [s["name"] for s in nusc.scene]
    names = split_scene_names(dataroot, version, str(split))
    present = {s["name"] for s in nusc.scene}
    kept = [n for n in names if n in present]
    if not kept:
        raise ValueError(f"split {split!r} names no scene of {dataroot} ({version})")
    return kept


def from_nuscenes_main(args: argparse.Namespace) -> int:
    from simdistill_ros.bag.from_nuscenes import ConvertOptions, convert
    from training.data.nuscenes import load_nuscenes

    if args.out.exists() and not args.force:
        raise FileExistsError(f"output bag {args.out} exists; pass --force to replace it")
    nusc = load_nuscenes(args.dataroot, args.version)
    names = resolve_scenes(args.dataroot, args.version, args.scene, args.split, args.all, nusc)
    opts = ConvertOptions(storage=args.storage, compressed=args.compressed, lidar=args.lidar,
                          keyframes_only=args.keyframes_only)
    s = convert(nusc, names, args.out, opts, force=args.force, progress=not args.no_progress)
    print(f"wrote {args.out} ({args.storage}): {len(s.scenes)} scenes, {s.key_frames} key frames, "
          f"{s.camera_frames} camera images, {s.gt_boxes} ground-truth boxes, "
          f"{(s.last_ns - s.first_ns) / 1e9:.1f} s")
    return 0


def replay_main(args: argparse.Namespace) -> int:
    from simdistill_ros.bag.replay import replay
    from simdistill_ros.bag.settings import default_params_file, replay_params
    from simdistill_ros.bag_report import build_report, format_table, write_report
    from simdistill_ros.core.detector import Detector
    from simdistill_ros.ros.params import check_cameras

    for path, what in ((args.out, "output bag"), (args.report, "report folder")):
        if path is not None and path.exists() and not args.force:
            raise FileExistsError(f"{what} {path} exists; pass --force to replace it")
    if not args.bag.exists():
        raise FileNotFoundError(f"bag {args.bag} does not exist")
    apply_threads(args.threads)
    overrides: dict[str, Any] = {"backend": args.backend, "device": args.device}
    if args.motion_frame is not None:
        overrides["motion_frame"] = args.motion_frame
    if args.score_threshold is not None:
        overrides["score_threshold"] = args.score_threshold
    if args.max_detections is not None:
        overrides["max_detections"] = args.max_detections
    params_file = args.params_file or default_params_file()
    params = replay_params(params_file, args.checkpoint, overrides)
    if args.compressed and not params.compressed:
        params = replay_params(params_file, args.checkpoint, {**overrides, "compressed": True, "image_topics": [
            t if t.endswith("/compressed") else f"{t}/compressed" for t in params.image_topics]})
    detector = Detector.from_checkpoint(args.checkpoint, device=args.device, backend=args.backend,
                                        score_threshold=params.score_threshold, max_detections=params.max_detections)
    check_cameras(params, detector.config.model.camera_names)
    result = replay(args.bag, params, detector, args.out, storage=args.storage, force=args.force,
                    pictures=args.pictures if args.report else 0, progress=not args.no_progress)
    report = build_report(result, {"bag": str(args.bag), "checkpoint": str(args.checkpoint), "backend": args.backend,
                                   "device": args.device, "params_file": str(params_file),
                                   "motion_frame": params.motion_frame, "output_bag": str(args.out)})
    print(format_table(report))
    print(f"output bag: {args.out}")
    if args.report is not None:
        pictures = write_report(args.report, report, result, force=args.force)
        print(f"report: {args.report / 'report.json'}; pictures: {', '.join(p.name for p in pictures) or 'none'}")
    if result.read.first_bad_record:
        print(f"simdistill bag replay: warning: {result.read.first_bad_record}", file=sys.stderr)
        return 1
    return 0


def main(args: argparse.Namespace) -> int:
    require(BAG_MODULES, f"simdistill bag {args.bag_command}")
    if args.bag_command == "from-nuscenes":
        return from_nuscenes_main(args)
    return replay_main(args)

