"""Model files shipped with the package.

`BUNDLED_CHECKPOINT` is the SimDistill student trained on the synthetic world (config/models/demo.yaml,
six cameras), in core/checkpoint's deployable format: `Detector.from_checkpoint(BUNDLED_CHECKPOINT)`.
How it was trained, and what it scores, is in docs/training.md ("Demo model") and
scripts/train_demo_model.sh. It is package data (setup.py), so it is found the same way from a source
checkout, a pip install and a colcon install.
"""
from __future__ import annotations

from pathlib import Path

BUNDLED_CHECKPOINT: Path = Path(__file__).resolve().parent / "simdistill_synth.pt"

__all__ = ["BUNDLED_CHECKPOINT"]
