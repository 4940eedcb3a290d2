"""`simdistill train --stage teacher|student|baseline --config C --dataroot D --out RUN [--teacher CKPT]
[--resume [CKPT]] [--backbone-weights FILE] [--device DEV] [--seed S]`.

Run it under torchrun for several GPUs or machines (README, "Training"); every rank runs this same
command. Errors a user can fix (bad config, missing LiDAR, a mismatched teacher, a corrupted checkpoint,
an occupied --out, a non-finite loss, out of memory) end the command with a message, exit status 2,
and leave every checkpoint in place.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from simdistill_ros.core.cpu_threads import add_threads_argument, apply_threads
from training.config import load_train_config
from training.loop import TrainingError, TrainRequest, train
from training.run_state import format_command
from training.stages import STAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", required=True, choices=STAGES, help="what to train")
    parser.add_argument("--config", required=True, help="training config: a name in config/train/ or a YAML path")
    parser.add_argument("--dataroot", type=Path, required=True, help="nuScenes(-format) dataroot")
    parser.add_argument("--out", type=Path, required=True, help="run folder (must be new unless --resume)")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="teacher checkpoint (RUN/teacher.pt of --stage teacher); needed by --stage student, "
                             "optional for baseline (initialises its image encoder the same way)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                        help="continue the run in --out from its newest checkpoint (or from CKPT)")
    parser.add_argument("--backbone-weights", type=Path, default=None, metavar="FILE",
                        help="torchvision-format ResNet ImageNet state dict (e.g. resnet50-0676ba61.pth), "
                             "downloaded by you; nothing is fetched at run time")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (default: cuda when available); under torchrun each rank uses "
                             "cuda:LOCAL_RANK")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    add_threads_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    config = load_train_config(args.config)
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    resume: bool | Path = Path(args.resume) if isinstance(args.resume, str) else bool(args.resume)
    req = TrainRequest(stage=args.stage, config=config, dataroot=args.dataroot, out=args.out, teacher=args.teacher,
                       resume=resume, backbone_weights=args.backbone_weights, device=args.device,
                       progress=not args.no_progress, command=format_command("simdistill train", args))
    try:
        result = train(req)
    except TrainingError as e:
        print(f"simdistill train: error: {e}", file=sys.stderr)
        return 2
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if isinstance(v, float))
    print(f"wrote {result.final_model} after {result.epochs} epochs ({result.global_step} steps)"
          + (f"; {metrics}" if metrics else ""))
    return 0
