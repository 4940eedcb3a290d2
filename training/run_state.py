"""A training run's folder and its resumable state.

Layout of RUN/:
  run.json                 stage, resolved config, teacher file, command line, start time (written once)
  checkpoints/epoch_NNNN.pt  training state after epoch N: weights, optimiser, schedule, loss scaler,
                           RNG states, epoch and step counters (the newest `keep` files are kept)
  metrics.jsonl  tensorboard/  eval/epoch_NNNN/   logs and evaluations
  teacher.pt | student.pt  the final model (student.pt in core/checkpoint's deployable format)

Every file is written atomically (temporary file, rename), so a run killed at any moment leaves the
previous checkpoint intact, and a new checkpoint replaces nothing before it is complete. Checkpoints
are read with `torch.load(weights_only=True)`: tensors and plain data only.
"""
from __future__ import annotations

import argparse
import json
import shlex
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simdistill_ros.core.checkpoint import read_payload
from training.fsutil import atomic_file, write_bytes_atomic

STATE_FORMAT = "simdistill_ros.train_state"
STATE_VERSION = 1
CHECKPOINT_RE = re.compile(r"^epoch_(\d{4,})\.pt$")
# config fields that may change on --resume without changing the result
RESUMABLE_CHANGES = ("data.workers", "data.pin_memory", "schedule.log_every", "schedule.eval_every",
                     "schedule.keep_checkpoints")


def format_command(prog: str, args: argparse.Namespace) -> str:
    """The command line that reproduces args: every option spelled out (defaults included), quoted."""
    parts = [prog]
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts += [flag, *(shlex.quote(str(v)) for v in value)]
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def capture_rng() -> dict[str, Any]:
    """Python, numpy (legacy global) and torch (CPU and CUDA) RNG states as plain data and tensors."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [str(np_state[0]), torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_torch(obj: Any, path: Path) -> Path:
    """torch.save through a temporary file and a rename (replaces an older file of that name)."""
    with atomic_file(path, force=True) as f:
        torch.save(obj, f)
    return path


@dataclass(frozen=True)
class RunDir:
    """The output folder of one run."""

    root: Path

    @property
    def run_file(self) -> Path:
        return self.root / "run.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:04d}.pt"

    def eval_dir(self, epoch: int) -> Path:
        return self.root / "eval" / f"epoch_{epoch:04d}"

    def final_model(self, stage: str) -> Path:
        return self.root / ("teacher.pt" if stage == "teacher" else "student.pt")

    def epoch_checkpoints(self) -> list[tuple[int, Path]]:
        """(epoch, path) of the epoch checkpoints present, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
        return sorted(found)

    def read_run(self) -> dict[str, Any]:
        try:
            data = json.loads(self.run_file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{self.run_file} cannot be read: {e}") from e
        if not isinstance(data, dict) or "stage" not in data or "config" not in data:
            raise ValueError(f"{self.run_file} is not a simdistill run description")
        return data

    def check_new(self) -> None:
        """FileExistsError unless the folder is absent or empty (a new run may start there)."""
        if self.root.exists():
            if not self.root.is_dir():
                raise FileExistsError(f"output {self.root} exists and is not a folder")
            entries = sorted(p.name for p in self.root.iterdir())
            if entries:
                what = "another run" if self.run_file.exists() else "other files"
                detail = ""
                if self.run_file.exists():
                    try:
                        old = self.read_run()
                        detail = f" (stage {old.get('stage')}, started {old.get('started', '?')})"
                    except ValueError:
                        pass
                raise FileExistsError(f"output folder {self.root} already holds {what}{detail}: "
                                      f"{', '.join(entries[:5])}; pass --resume to continue that run or choose "
                                      f"another --out")

    def start(self, description: dict[str, Any]) -> None:
        """Claim the folder for a new run (check_new again, then write run.json)."""
        self.check_new()
        self.root.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(json.dumps(description, indent=2).encode(), self.run_file)

    def check_resumable(self, stage: str, config: dict[str, Any]) -> dict[str, Any]:
        """The run description, after checking that stage and config match (ValueError naming fields)."""
        if not self.run_file.is_file():
            raise FileNotFoundError(f"--resume: {self.root} holds no run ({self.run_file} missing)")
        old = self.read_run()
        if old["stage"] != stage:
            raise ValueError(f"--resume: {self.root} is a {old['stage']} run, not {stage}")
        diffs = [d for d in dict_differences(old["config"], config) if d.split(":")[0] not in RESUMABLE_CHANGES]
        if diffs:
            raise ValueError(f"--resume: the config differs from the run's in {self.run_file}: " + "; ".join(diffs))
        return old

    def latest_state(self) -> tuple[int, Path] | None:
        found = self.epoch_checkpoints()
        return found[-1] if found else None

    def prune(self, keep: int) -> None:
        for _, path in self.epoch_checkpoints()[:-keep]:
            path.unlink(missing_ok=True)


def dict_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'dotted.name: old -> new' for every leaf where two plain-data trees differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += dict_differences(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def save_train_state(path: Path, state: dict[str, Any]) -> Path:
    return save_torch({"format": STATE_FORMAT, "format_version": STATE_VERSION, **state}, path)


def load_train_state(path: Path, previous: Path | None = None) -> dict[str, Any]:
    """A training state; ValueError naming the file (and the previous intact one) when unreadable."""
    hint = f"; the previous checkpoint {previous} may be intact: pass --resume {previous}" if previous else ""
    payload = read_payload(path, "checkpoint", "training", STATE_FORMAT, STATE_VERSION, hint)
    for key in ("epoch", "global_step", "model", "optimizer", "scheduler", "rng"):
        if key not in payload:
            raise ValueError(f"checkpoint {path} lacks {key!r}{hint}")
    return payload
