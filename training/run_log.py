"""Training logs of rank 0: metrics.jsonl (one JSON object per logged step or evaluation, every loss term
separately) and TensorBoard scalars (torch.utils.tensorboard). On --resume both are cut back to the
resumed step, so a killed-and-resumed run leaves the same logs as an uninterrupted one: metrics.jsonl
loses the lines after the checkpoint, TensorBoard purges events after it (purge_step).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from training.fsutil import write_bytes_atomic


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class RunLog:
    """metrics.jsonl + TensorBoard under a run folder; a no-op when not enabled (ranks other than 0)."""

    def __init__(self, metrics_file: Path, tensorboard_dir: Path, enabled: bool, resume_step: int | None = None,
                 tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.metrics_file = metrics_file
        self._writer: Any = None
        if not enabled:
            return
        if resume_step is not None and metrics_file.is_file():
            kept = [line for line in metrics_file.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            write_bytes_atomic(("".join(f"{line}\n" for line in kept)).encode(), metrics_file, force=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError(f"TensorBoard logging needs the tensorboard package "
                                 f"(pip install 'simdistill_ros[train]'): {e}") from e
            purge = None if resume_step is None else resume_step + 1
            self._writer = SummaryWriter(log_dir=str(tensorboard_dir), purge_step=purge)
        self._file = metrics_file.open("a")

    def record(self, entry: dict[str, Any], scalars: dict[str, float] | None = None, step: int | None = None) -> None:
        """Append entry to metrics.jsonl and write scalars (name -> value) to TensorBoard at step."""
        if not self.enabled:
            return
        clean = {k: _finite_or_none(v) for k, v in entry.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._writer is not None and scalars and step is not None:
            for name, value in scalars.items():
                if value is not None and math.isfinite(value):
                    self._writer.add_scalar(name, value, step)
            self._writer.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._writer is not None:
            self._writer.close()
