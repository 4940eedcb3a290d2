"""Checkpoints: one file holding the student's weights with its DetectorConfig (geometry, model,
post-processing) and class names, so a checkpoint is all a deployment needs.

Files are written atomically (temporary file + rename) and read with `torch.load(weights_only=True)`:
only tensors and plain data, never arbitrary pickled objects. Every failure is a ValueError naming the
file and what is wrong.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from simdistill_ros.core.config import DetectorConfig, config_from_dict, config_to_dict

FORMAT = "simdistill_ros.student"
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike[str],
    state_dict: dict[str, torch.Tensor],
    config: DetectorConfig,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write weights + config to `path` atomically. metadata: plain data (epoch, metrics, git hash...)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config_to_dict(config),
        "class_names": list(config.model.class_names),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "metadata": dict(metadata or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_payload(path: str | os.PathLike[str], what: str, kind: str, fmt: str, version: int,
                 hint: str = "") -> dict[str, Any]:
    """The dict saved in a tagged checkpoint file (`torch.load(weights_only=True)`), after checking its
    format tag and version. Errors name `what` (e.g. "teacher checkpoint"), the file, and append hint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise ValueError(f"{what} {path} is corrupted or truncated ({type(e).__name__}: {e}){hint}") from e
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{what} {path} is not a simdistill_ros {kind} checkpoint (format tag {got!r}){hint}")
    if payload.get("format_version") != version:
        raise ValueError(f"{what} {path} has format_version {payload.get('format_version')}, "
                         f"this package reads {version}")
    return payload


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[DetectorConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint; returns (config, state_dict on CPU, metadata)."""
    path = Path(path)
    payload = read_payload(path, "checkpoint", "student", FORMAT, FORMAT_VERSION)
    for key in ("config", "class_names", "state_dict"):
        if key not in payload:
            raise ValueError(f"checkpoint {path} lacks the field {key!r}")
    try:
        config = config_from_dict(DetectorConfig, payload["config"])
    except ValueError as e:
        raise ValueError(f"checkpoint {path}: {e}") from e
    if tuple(payload["class_names"]) != config.model.class_names:
        raise ValueError(f"checkpoint {path}: class_names {payload['class_names']} disagree with the model config's "
                         f"{list(config.model.class_names)}")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path}: state_dict is not a mapping of tensors")
    return config, state, dict(payload.get("metadata", {}))


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights strictly; a mismatch is a ValueError listing the first differing keys/shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise ValueError(f"{source}: weights do not match the model config: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)
