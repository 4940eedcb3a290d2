"""`simdistill train-bench`: training throughput, a benchmark command (not a test).

Measures, for a preset on a device:
- the DataLoader alone (JPEG decoding, augmentation, LiDAR loading and collation in `--workers` worker
  processes, pinned on CUDA): samples/s with LiDAR (teacher and student stages) and camera-only (baseline);
- one training step per stage on batches already in memory: teacher (detection loss), student (the
  frozen teacher's forward plus the student with every distillation term) and baseline; median step time
  and samples/s. A step is the whole micro-batch of the loop (plan, targets, forward, backward) plus
  gradient clipping and the AdamW step, exactly as `simdistill train` runs it (training/step.py).
Weights are random (throughput does not depend on them). Without --dataroot a small synthetic world
(2 scenes x 4 key frames, 900x1600 cameras, 9 sweeps) is generated once into --work and reused.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from training.config import DataConfig, LidarConfig, ScheduleConfig, TrainConfig
from training.distributed import DistContext
from training.fsutil import check_absent, write_bytes_atomic
from training.loader import load_split, make_dataset, make_train_loader
from training.loop import autocast_factory
from training.machine import machine_description
from training.run_state import format_command
from training.stages import STAGES, build_stage, param_groups
from training.step import loss_terms, to_device
from training.teacher.checkpoint import save_teacher
from training.teacher.model import Teacher


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cuda = torch.cuda.is_available()
    parser.add_argument("--preset", default="tiny", help="model preset (tiny, r50, toy or a YAML path)")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="bf16" if cuda else "fp32")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--sweeps", type=int, default=9, help="LiDAR sweeps per sample")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (and timed loader batches)")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to time")
    parser.add_argument("--dataroot", type=Path, default=None, help="nuScenes(-format) dataroot (train split)")
    parser.add_argument("--version", default="v1.0-trainval")
    parser.add_argument("--work", type=Path, default=Path("runs/train_bench"), help="where the generated world is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--force", action="store_true", help="replace an existing --json file")


def _cycle(loader: Any, sampler: Any) -> Iterator[dict[str, Any]]:
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from loader


def _loader_rate(loader: Any, sampler: Any, warmup: int, steps: int, batch_size: int) -> float:
    it = _cycle(loader, sampler)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * batch_size / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_times(stage: str, config: TrainConfig, batches: list[dict[str, torch.Tensor]], teacher_file: Path,
                device: torch.device, warmup: int, steps: int) -> list[float]:
    detector = config.detector_config()
    setup = build_stage(stage, config, detector, None if stage == "teacher" else teacher_file, None)
    setup.objective.to(device).train()
    if setup.teacher is not None:
        setup.teacher.to(device)
    if config.schedule.channels_last and device.type == "cuda":
        setup.objective.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
    groups = param_groups(setup, config.optim.lr, config.optim.weight_decay)
    params = [p for g in groups for p in g["params"]]  # type: ignore[union-attr]
    optimizer = torch.optim.AdamW(groups, lr=config.optim.lr)  # type: ignore[arg-type]
    scaler = torch.amp.GradScaler(device.type, enabled=config.schedule.precision == "fp16")
    autocast = autocast_factory(device, config.schedule.precision)
    times = []
    for i in range(warmup + steps):
        batch = batches[i % len(batches)]
        _sync(device)
        t0 = time.perf_counter()
        terms = loss_terms(setup.objective, stage == "teacher", setup.teacher, batch, detector, config, autocast)
        scaler.scale(torch.stack([v.float() for v in terms.values()]).sum()).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available")
    if args.precision == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs --device cuda")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"--stages: unknown {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    dataroot = args.dataroot
    if dataroot is None:
        from training.data.synth import generate

        dataroot = args.work / "synth-2x4-900x1600"
        if not dataroot.exists():
            generate(dataroot, scenes=2, samples_per_scene=4, seed=0, image_size=(900, 1600), sweeps=args.sweeps,
                     version=args.version, workers=max(1, args.workers))
    pin = device.type == "cuda"
    config = TrainConfig(model=args.preset,
                         data=DataConfig(version=args.version, cbgs=False, workers=args.workers, pin_memory=pin),
                         schedule=ScheduleConfig(batch_size=args.batch_size, accumulate=1, precision=args.precision),
                         lidar=LidarConfig(max_sweeps=min(args.sweeps, 10)))
    detector = config.detector_config()
    infos = load_split(dataroot, config, config.data.train_split, config.lidar.max_sweeps)
    result: dict[str, Any] = {"command": format_command("simdistill train-bench", args), "preset": detector.name,
                              "device": str(device), "precision": args.precision, "batch_size": args.batch_size,
                              "workers": args.workers, "machine": machine_description(), "loader_samples_per_s": {},
                              "step": {}}
    if device.type == "cuda":
        result["machine"]["gpu"] = torch.cuda.get_device_name(device)
    loaders = {}
    for name, lidar in (("with_lidar", True), ("camera_only", False)):
        ds = make_dataset(infos, detector, config, train=True, load_lidar=lidar)
        loaders[name] = make_train_loader(ds, config, DistContext(), pin)
        result["loader_samples_per_s"][name] = _loader_rate(*loaders[name], args.warmup, args.steps, args.batch_size)
    it = _cycle(*loaders["with_lidar"])
    batches = [to_device(next(it), device, pin) for _ in range(min(3, args.warmup + args.steps))]
    with tempfile.TemporaryDirectory() as tmp:
        teacher_file = Path(tmp) / "teacher.pt"
        save_teacher(teacher_file, Teacher(detector.model, detector.geometry, config.lidar), detector)
        for stage in stages:
            times = _step_times(stage, config, batches, teacher_file, device, args.warmup, args.steps)
            med = statistics.median(times)
            result["step"][stage] = {"median_ms": med * 1e3, "samples_per_s": args.batch_size / med,
                                     "times_ms": [t * 1e3 for t in times]}
    if device.type == "cuda":
        result["peak_allocated_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def main(args: argparse.Namespace) -> int:
    if args.json is not None:
        check_absent(args.json, args.force, "--json file")
    r = run_bench(args)
    print(f"{r['preset']} on {r['device']} ({r['precision']}), batch {r['batch_size']}, {r['workers']} workers")
    for name, rate in r["loader_samples_per_s"].items():
        print(f"  loader alone ({name.replace('_', ' ')}): {rate:8.2f} samples/s")
    for stage, s in r["step"].items():
        print(f"  {stage:<8} training step: {s['median_ms']:9.1f} ms median, {s['samples_per_s']:7.2f} samples/s")
    if args.json is not None:
        write_bytes_atomic(json.dumps(r, indent=2).encode(), args.json, force=args.force)
        print(f"wrote {args.json}")
    return 0
