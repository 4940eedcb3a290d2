"""`simdistill synth --out DIR --scenes N --samples-per-scene M --seed S [...] [--stats]`."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from training.data.synth.tables import VERSIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="dataroot to write (must not exist unless --force)")
    parser.add_argument("--scenes", type=int, required=True, help="number of scenes")
    parser.add_argument("--samples-per-scene", type=int, required=True, help="key frames per scene (2 Hz), >= 2")
    parser.add_argument("--seed", type=int, required=True, help="random seed; the same seed gives identical files")
    parser.add_argument("--image-size", type=int, nargs=2, default=(900, 1600), metavar=("H", "W"),
                        help="camera image size (default 900 1600; intrinsics scale from 1600x900)")
    parser.add_argument("--sweeps", type=int, default=9, help="LiDAR sweeps between key frames (default 9, 20 Hz)")
    parser.add_argument("--version", default="v1.0-trainval", choices=sorted(VERSIONS), help="table version folder")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="render processes (default: CPUs)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--stats", action="store_true",
                        help="print the world's statistics (classes, LiDAR coverage, visibility, sizes, depth cues)")


def main(args: argparse.Namespace) -> int:
    from training.data.synth.writer import generate

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    start = time.perf_counter()
    out = generate(args.out, args.scenes, args.samples_per_scene, args.seed, image_size=tuple(args.image_size),
                   sweeps=args.sweeps, version=args.version, workers=args.workers, force=args.force)
    print(f"wrote {args.scenes} scenes x {args.samples_per_scene} samples to {out} "
          f"in {time.perf_counter() - start:.1f} s")
    if args.stats:
        from training.data.synth.stats import format_markdown, world_stats

        print(format_markdown(world_stats(out, args.version)))
    return 0
