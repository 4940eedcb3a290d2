"""The training loop behind `simdistill train`: one process or many (torchrun + DDP), one stage.

Per optimiser step: `accumulate` micro-batches, each moved to the device (pinned, non-blocking), its
view-transform plan, CenterPoint targets and (optionally) LiDAR depth labels built there, the frozen
teacher run under no_grad (student stage), the objective under autocast (bf16 or fp16), the loss
checked finite on every rank, backward (DDP synchronises on the last micro-batch only); then gradient
clipping, AdamW, the one-cycle schedule. Rank 0 shows a progress bar (loss, samples/s), writes
metrics.jsonl and TensorBoard, an atomic checkpoint after every epoch (the newest `keep_checkpoints`
kept), devkit evaluations every `eval_every` epochs, and the final model.

Exact resume: a checkpoint holds weights, optimiser, schedule, loss scaler, RNG states and counters,
and data order and augmentation are functions of (seed, epoch, sample) (training/loader.py), so a run
resumed from epoch k ends with exactly the weights of one that was never stopped (on CPU; CUDA kernels
such as scatter_add are not bitwise deterministic).
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from simdistill_ros.core.checkpoint import save_checkpoint
from simdistill_ros.core.config import DetectorConfig, config_to_dict
from training import distributed as D
from training.config import TrainConfig
from training.loader import check_lidar_files, load_split, make_dataset, make_eval_loader, make_train_loader
from training.run_log import RunLog
from training.run_state import RunDir, capture_rng, load_train_state, restore_rng, save_train_state
from training.stages import STAGES, StageSetup, build_stage, file_sha256, param_groups
from training.step import loss_terms, to_device
from training.teacher.checkpoint import save_teacher
from training.teacher.model import Teacher
from training.validate import evaluate_model


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, out of memory); the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainRequest:
    """One `simdistill train` invocation. resume: False, True (newest checkpoint of out) or a checkpoint."""

    stage: str
    config: TrainConfig
    dataroot: Path
    out: Path
    teacher: Path | None = None
    resume: bool | Path = False
    backbone_weights: Path | None = None
    device: str = "cpu"
    progress: bool = True
    tensorboard: bool = True
    command: str = ""


@dataclass
class TrainResult:
    """final_model: teacher.pt / student.pt; metrics: the last evaluation (empty when none ran)."""

    final_model: Path
    epochs: int
    global_step: int
    metrics: dict[str, Any] = field(default_factory=dict)


def autocast_factory(device: torch.device, precision: str) -> Callable[[], AbstractContextManager[Any]]:
    if precision == "fp32":
        return nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _resolve_device(name: str, precision: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("schedule.precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return device


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class Trainer:
    """State of one run on one process; `run()` trains the remaining epochs."""

    def __init__(self, req: TrainRequest, on_step: Callable[[int, int], None] | None = None) -> None:
        if req.stage not in STAGES:
            raise ValueError(f"unknown stage {req.stage!r}; expected one of {', '.join(STAGES)}")
        self.req = req
        self.cfg = req.config
        self.on_step = on_step
        self.detector: DetectorConfig = self.cfg.detector_config()
        sched = self.cfg.schedule
        device = _resolve_device(req.device, sched.precision)
        self.ctx = D.init_distributed(device.type)
        self.device = torch.device("cuda", self.ctx.local_rank) if device.type == "cuda" else device
        self.autocast = autocast_factory(self.device, sched.precision)
        self.run_dir = RunDir(Path(req.out))
        self.config_dict = config_to_dict(self.cfg)
        self._seed_everything(self.cfg.seed)
        self._check_run_dir()
        self._build_data()
        self._build_model()
        self._build_optimiser()
        self.start_epoch, self.global_step = 0, 0
        self.last_metrics: dict[str, Any] = {}
        resume_step = self._maybe_resume()
        if not req.resume:  # everything checked: claim the folder
            self._on_main(lambda: self.run_dir.start(self.run_info))
        self.log = RunLog(self.run_dir.metrics_file, self.run_dir.tensorboard, self.ctx.is_main, resume_step,
                          tensorboard=req.tensorboard)

    # ---- set-up ------------------------------------------------------------------------------
    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _on_main(self, fn: Callable[[], None]) -> None:
        """Run fn on rank 0 and raise its error on every rank (so no rank waits forever)."""
        error: str | None = None
        if self.ctx.is_main:
            try:
                fn()
            except (ValueError, FileNotFoundError, FileExistsError) as e:
                error = f"{type(e).__name__}:{e}"
        error = D.broadcast_object(self.ctx, error)  # type: ignore[assignment]
        if error is not None:
            kind, _, message = error.partition(":")
            raise {"FileNotFoundError": FileNotFoundError, "FileExistsError": FileExistsError}.get(kind, ValueError)(message)

    def _check_run_dir(self) -> None:
        """For --resume: the run's stage, config and teacher must match. Else: the folder must be free
        (it is claimed only after data, models and teacher have been checked)."""
        req = self.req
        teacher_sha = file_sha256(req.teacher) if req.teacher is not None and req.teacher.is_file() else None
        if req.resume:
            self.run_info = self.run_dir.check_resumable(req.stage, self.config_dict)
            if self.run_info.get("teacher_sha256") != teacher_sha:
                raise ValueError(f"--resume: the teacher checkpoint differs from the one the run started with "
                                 f"({self.run_info.get('teacher')}, sha256 {self.run_info.get('teacher_sha256')})")
            return
        self.run_info = {
            "stage": req.stage, "config": self.config_dict, "dataroot": str(req.dataroot),
            "teacher": None if req.teacher is None else str(req.teacher), "teacher_sha256": teacher_sha,
            "backbone_weights": None if req.backbone_weights is None else str(req.backbone_weights),
            "command": req.command or " ".join(sys.argv), "world_size": self.ctx.world_size,
            "device": str(self.device), "torch": torch.__version__,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self._on_main(self.run_dir.check_new)

    def _build_data(self) -> None:
        cfg, req = self.cfg, self.req
        sweeps = cfg.lidar.max_sweeps
        # rank 0 builds (and caches) the infos first; the others then read the cache
        infos: dict[str, list] = {}

        def load(split: str) -> None:
            infos[split] = load_split(req.dataroot, cfg, split, sweeps)

        self._on_main(lambda: load(cfg.data.train_split))
        D.barrier(self.ctx)
        if not self.ctx.is_main:
            load(cfg.data.train_split)
        self.train_infos = infos[cfg.data.train_split]
        if not self.train_infos:
            raise ValueError(f"split {cfg.data.train_split!r} of {req.dataroot} has no samples")
        self.val_infos: list = []
        if cfg.schedule.eval_every and self.ctx.is_main:
            load(cfg.data.val_split)
            self.val_infos = infos[cfg.data.val_split]
            if not self.val_infos:
                raise ValueError(f"schedule.eval_every is {cfg.schedule.eval_every} but split {cfg.data.val_split!r} "
                                 f"of {req.dataroot} has no samples")
        self.pin = cfg.data.pin_memory and self.device.type == "cuda"

    def _build_model(self) -> None:
        cfg, req = self.cfg, self.req
        self.setup: StageSetup = build_stage(req.stage, cfg, self.detector, req.teacher, req.backbone_weights)
        if self.setup.needs_lidar:
            why = {"teacher": "teacher training", "student": "distillation (the teacher's input)"}.get(
                req.stage, "depth supervision")
            check_lidar_files(self.train_infos, cfg.lidar.max_sweeps, why)
        if self.val_infos and isinstance(self.setup.model, Teacher):
            check_lidar_files(self.val_infos, cfg.lidar.max_sweeps, "evaluating the teacher")
        train_ds = make_dataset(self.train_infos, self.detector, cfg, train=True, load_lidar=self.setup.needs_lidar)
        self.train_loader, self.sampler = make_train_loader(train_ds, cfg, self.ctx, self.pin)
        self.val_loader = None
        if self.val_infos:
            val_ds = make_dataset(self.val_infos, self.detector, cfg, train=False,
                                  load_lidar=isinstance(self.setup.model, Teacher))
            self.val_loader = make_eval_loader(val_ds, cfg.schedule.batch_size, cfg.data.workers, self.pin)
        sched = cfg.schedule
        objective: nn.Module = self.setup.objective
        if sched.sync_bn and self.ctx.distributed:
            if self.device.type != "cuda":
                raise ValueError("schedule.sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel)")
            objective = nn.SyncBatchNorm.convert_sync_batchnorm(objective)
            self.setup.model = objective.model  # type: ignore[assignment]
        objective.to(self.device)
        if self.setup.teacher is not None:
            self.setup.teacher.to(self.device)
        if sched.channels_last and self.device.type == "cuda":
            objective.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
            if self.setup.teacher is not None:
                self.setup.teacher.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
        self.objective = objective
        self.wrapped: nn.Module = objective
        if self.ctx.distributed:
            ids = [self.ctx.local_rank] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(objective, device_ids=ids)

    def _build_optimiser(self) -> None:
        o, sched = self.cfg.optim, self.cfg.schedule
        groups = param_groups(self.setup, o.lr, o.weight_decay)
        self.params = [p for g in groups for p in g["params"]]  # type: ignore[union-attr]
        self.optimizer = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)  # type: ignore[arg-type]
        micro = len(self.train_loader)
        if sched.max_steps_per_epoch:
            micro = min(micro, sched.max_steps_per_epoch * sched.accumulate)
        self.micro_per_epoch = micro
        self.steps_per_epoch = math.ceil(micro / sched.accumulate)
        total = max(2, self.steps_per_epoch * sched.epochs)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=[g["lr"] * o.peak_ratio for g in groups], total_steps=total,  # type: ignore[operator]
            pct_start=o.up_fraction, anneal_strategy="cos", cycle_momentum=True, base_momentum=o.momentum_range[0],
            max_momentum=o.momentum_range[1], div_factor=o.peak_ratio, final_div_factor=1.0 / o.final_ratio)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=sched.precision == "fp16")

    def _maybe_resume(self) -> int | None:
        if not self.req.resume:
            return None
        found = self.run_dir.epoch_checkpoints()
        if isinstance(self.req.resume, Path):
            path, previous = self.req.resume, None
        else:
            if not found:  # stopped before its first epoch ended: nothing to restore, start over
                if self.ctx.is_main and self.req.progress:
                    print(f"--resume: {self.run_dir.checkpoints} holds no epoch checkpoint yet; starting at epoch 1",
                          file=sys.stderr)
                return 0
            path = found[-1][1]
            previous = found[-2][1] if len(found) > 1 else None
        state = load_train_state(path, previous)
        try:
            self.objective.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(f"checkpoint {path} does not fit this run's model or optimiser: {e}") from e
        restore_rng(state["rng"])
        self.start_epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.last_metrics = state.get("metrics", {})
        return self.global_step

    # ---- one step ----------------------------------------------------------------------------
    def _micro_batch(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return loss_terms(self.wrapped, isinstance(self.setup.model, Teacher), self.setup.teacher,
                          to_device(batch, self.device, self.pin), self.detector, self.cfg, self.autocast)

    def _fail_non_finite(self, epoch: int, step_in_epoch: int, terms: dict[str, float], what: str) -> None:
        ckpt = self.run_dir.latest_state()
        kept = f"the last good checkpoint {ckpt[1]} is kept" if ckpt else "no checkpoint was written yet"
        values = ", ".join(f"{k}={v:.6g}" for k, v in terms.items())
        raise TrainingError(f"non-finite {what} at epoch {epoch} step {step_in_epoch} (global step "
                            f"{self.global_step + 1}): {values}; {kept}. Lower optim.lr, check the inputs, or "
                            f"use fp32 to find the term that overflows")

    def _fail_oom(self, epoch: int, e: BaseException) -> None:
        s = self.cfg.schedule
        ckpt = self.run_dir.latest_state()
        kept = f"the last good checkpoint {ckpt[1]} is kept" if ckpt else "no checkpoint was written yet"
        g = self.detector.geometry
        raise TrainingError(
            f"out of memory in epoch {epoch} on {self.device} with schedule.batch_size {s.batch_size} per process "
            f"(accumulate {s.accumulate}, {self.ctx.world_size} process(es), precision {s.precision}, images "
            f"{g.image_size[0]}x{g.image_size[1]} x {self.detector.model.num_cameras} cameras, BEV grid "
            f"{g.bev_size[0]}x{g.bev_size[1]}): lower schedule.batch_size and raise schedule.accumulate to keep the "
            f"effective batch of {s.batch_size * s.accumulate * self.ctx.world_size}, or use precision bf16/fp16 or a "
            f"smaller preset; {kept}") from e

    # ---- epochs ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        epochs = self.cfg.schedule.epochs
        try:
            for epoch in range(self.start_epoch + 1, epochs + 1):
                self._train_epoch(epoch)
                self._end_epoch(epoch)
            final = self.run_dir.final_model(self.req.stage)
            if self.ctx.is_main and (self.start_epoch < epochs or not final.exists()):
                self._save_final(final)
            D.barrier(self.ctx)
        finally:
            self.log.close()
        return TrainResult(final, epochs, self.global_step, self.last_metrics)

    def _train_epoch(self, epoch: int) -> None:
        sched = self.cfg.schedule
        self.sampler.set_epoch(epoch)
        self.objective.train()
        bar = tqdm(total=self.steps_per_epoch, desc=f"{self.req.stage} epoch {epoch}/{sched.epochs}",
                   disable=not (self.req.progress and self.ctx.is_main), dynamic_ncols=True, leave=True)
        sums: dict[str, float] = {}
        t_step = time.perf_counter()
        micro_in_step = 0
        step_in_epoch = 0
        samples_per_micro = sched.batch_size * self.ctx.world_size
        for i, batch in enumerate(self.train_loader):
            if i >= self.micro_per_epoch:
                break
            group = i // sched.accumulate
            group_size = min(sched.accumulate, self.micro_per_epoch - group * sched.accumulate)
            last = micro_in_step + 1 == group_size
            sync = last or not self.ctx.distributed
            try:
                with nullcontext() if sync else self.wrapped.no_sync():  # type: ignore[operator]
                    terms = self._micro_batch(batch)
                    total = torch.stack([v.float() for v in terms.values()]).sum()
                    finite = bool(torch.isfinite(total).item())
                    if not D.all_true(self.ctx, finite, self.device):
                        self._fail_non_finite(epoch, step_in_epoch + 1,
                                              {"total": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}, "loss")
                    self.scaler.scale(total / group_size).backward()
            except TrainingError:
                raise
            except Exception as e:
                if _is_oom(e):
                    self._fail_oom(epoch, e)
                raise
            values = torch.stack([*(v.detach().float() for v in terms.values()), total.detach()]).tolist()
            for k, v in zip([*terms, "loss"], values):
                sums[k] = sums.get(k, 0.0) + v / group_size
            micro_in_step += 1
            if not last:
                continue
            self.scaler.unscale_(self.optimizer)
            clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
            if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
                self._fail_non_finite(epoch, step_in_epoch + 1, {"grad_norm": grad_norm, **sums}, "gradient norm")
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.global_step += 1
            step_in_epoch += 1
            now = time.perf_counter()
            rate = samples_per_micro * group_size / max(now - t_step, 1e-9)
            t_step = now
            micro_in_step = 0
            if step_in_epoch % sched.log_every == 0 or step_in_epoch == self.steps_per_epoch:
                self._log_step(epoch, sums, grad_norm, lrs, rate)
            bar.set_postfix(loss=f"{sums['loss']:.4f}", samples_s=f"{rate:.2f}")
            bar.update(1)
            sums = {}
            if self.on_step is not None:
                self.on_step(epoch, step_in_epoch)
        bar.close()

    def _log_step(self, epoch: int, sums: dict[str, float], grad_norm: float, lrs: list[float], rate: float) -> None:
        values = D.mean_over_ranks(self.ctx, sums, self.device)
        entry = {"step": self.global_step, "epoch": epoch, "lr": lrs[-1], "lr_encoder": lrs[0],
                 "grad_norm": grad_norm, "samples_per_s": rate, **values}
        scalars = {f"train/{k}": v for k, v in values.items()}
        scalars.update({"train/lr": lrs[-1], "train/lr_encoder": lrs[0], "train/grad_norm": grad_norm,
                        "train/samples_per_s": rate})
        self.log.record(entry, scalars, self.global_step)

    def _end_epoch(self, epoch: int) -> None:
        sched = self.cfg.schedule
        if self.ctx.is_main:
            due = sched.eval_every and (epoch % sched.eval_every == 0 or epoch == sched.epochs)
            if due and self.val_loader is not None:
                self._evaluate(epoch)
            state = {
                "stage": self.req.stage, "epoch": epoch, "global_step": self.global_step,
                "model": self.objective.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": capture_rng(), "metrics": self.last_metrics, "config": self.config_dict,
            }
            save_train_state(self.run_dir.checkpoint_path(epoch), state)
            self.run_dir.prune(sched.keep_checkpoints)
        D.barrier(self.ctx)

    def _evaluate(self, epoch: int) -> None:
        assert self.val_loader is not None
        m = evaluate_model(self.objective.model, self.val_loader, self.val_infos, self.detector, self.device,
                           self.autocast, self.req.dataroot, self.cfg.data.version, self.cfg.data.val_split,
                           self.run_dir.eval_dir(epoch))
        keys = ("mAP", "NDS", "mATE", "mASE", "mAOE", "mAVE", "mAAE")
        summary = {k: m.get(k) for k in keys}
        self.last_metrics = {**summary, "epoch": epoch}
        self.log.record({"step": self.global_step, "epoch": epoch, "eval": summary},
                        {f"val/{k}": v for k, v in summary.items() if v is not None}, self.global_step)
        if self.req.progress:
            print(f"{self.req.stage} epoch {epoch}: " + "  ".join(
                f"{k} {v:.4f}" for k, v in summary.items() if v is not None), file=sys.stderr)

    def _save_final(self, path: Path) -> None:
        meta = {"stage": self.req.stage, "epochs": self.cfg.schedule.epochs, "global_step": self.global_step,
                "seed": self.cfg.seed, "encoder_init": self.setup.encoder_init, "metrics": self.last_metrics,
                "teacher": self.run_info.get("teacher"), "train_config": self.config_dict}
        model = self.objective.model
        if isinstance(model, Teacher):
            save_teacher(path, model, self.detector, meta)
        else:
            save_checkpoint(path, model.state_dict(), self.detector, meta)


def train(req: TrainRequest, on_step: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train one stage (see TrainRequest); in a torchrun process group every rank calls this."""
    trainer = Trainer(req, on_step)
    try:
        return trainer.run()
    finally:
        if os.environ.get("WORLD_SIZE", "1") != "1":
            D.shutdown(trainer.ctx)
