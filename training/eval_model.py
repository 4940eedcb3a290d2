"""`simdistill eval-model (--checkpoint CKPT | --untrained PRESET) --dataroot D --out DIR`: score a
deployable student checkpoint, or a seeded random-weight student of a preset, with the devkit on a split.

The model runs exactly as `simdistill train` evaluates it at the end of a run (training/validate.py:
test-time transform, the deployable `forward`, core's decoding), so a trained checkpoint scores here what
its run's last evaluation reported. `--untrained` is the random-weight reference row of
docs/training.md ("Demo model"): the weights a Student of that preset gets from `torch.manual_seed(seed)`.
Writes DIR/results.json, DIR/metrics/ (the devkit's files) and DIR/summary.json; an existing DIR is only
replaced with --force.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from simdistill_ros.core.cpu_threads import add_threads_argument, apply_threads
from simdistill_ros.core.config import DetectorConfig, load_preset
from simdistill_ros.core.model.student import Student
from training.config import DataConfig, LidarConfig, TrainConfig
from training.export import load_student
from training.fsutil import atomic_dir, check_absent, write_bytes_atomic
from training.loader import load_split, make_dataset, make_eval_loader
from training.loop import autocast_factory
from training.validate import evaluate_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", type=Path, help="deployable student checkpoint (RUN/student.pt)")
    which.add_argument("--untrained", metavar="PRESET", help="a random-weight student of this preset")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the --untrained weights")
    parser.add_argument("--dataroot", type=Path, required=True, help="nuScenes(-format) dataroot")
    parser.add_argument("--version", default="v1.0-trainval", help="table folder")
    parser.add_argument("--split", default="val", help="split to score (splits.json of a synthetic dataroot)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (must be new unless --force)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    add_threads_argument(parser)
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def build_model(args: argparse.Namespace) -> tuple[Student, DetectorConfig, str]:
    """The student to score, its config and a description of where its weights come from."""
    if args.checkpoint is not None:
        model, config, _ = load_student(args.checkpoint)
        return model, config, str(args.checkpoint)
    config = load_preset(args.untrained)
    torch.manual_seed(args.seed)
    return Student(config.model, config.geometry), config, f"{args.untrained} preset, random weights (seed {args.seed})"


def main(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    check_absent(args.out, args.force, "--out")
    model, config, source = build_model(args)
    train_config = TrainConfig(model=config.name, data=DataConfig(version=args.version, workers=args.workers,
                                                                  pin_memory=False),
                               lidar=LidarConfig(max_sweeps=0))
    infos = load_split(args.dataroot, train_config, args.split, max_sweeps=0)
    if not infos:
        raise ValueError(f"split {args.split!r} of {args.dataroot} has no samples")
    dataset = make_dataset(infos, config, train_config, train=False, load_lidar=False)
    loader = make_eval_loader(dataset, args.batch_size, args.workers, pin_memory=False)
    device = torch.device("cpu")
    with atomic_dir(args.out, args.force) as tmp:
        metrics: dict[str, Any] = evaluate_model(model, loader, infos, config, device,
                                                 autocast_factory(device, "fp32"),
                                                 args.dataroot, args.version, args.split, tmp)
        summary = {"model": source, "split": args.split, "samples": len(infos),
                   **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                   "AP": {name: c["AP"] for name, c in metrics["per_class"].items()}}
        write_bytes_atomic((json.dumps(summary, indent=1) + "\n").encode(), tmp / "summary.json", force=True)
    print(f"{source} on {args.split} ({len(infos)} samples): "
          + "  ".join(f"{k} {metrics[k]:.4f}" for k in ("mAP", "NDS", "mATE") if k in metrics))
    return 0
