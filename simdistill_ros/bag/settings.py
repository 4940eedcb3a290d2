"""The node's parameters for bag replay: the same params file and validation as detector_node, so replay
groups, calibrates and thresholds exactly as the live node started with that file would.

`replay_params(params_file, model, overrides)` reads `ros__parameters` of the file's `/**` entry (or its
only node entry) with yaml.safe_load, fills the rest from ros/params.SPECS' defaults, applies the
overrides and runs ros/params.validate (a ParameterError names a bad one). Relative topic names resolve
against the root namespace, as for a node started without a namespace.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from simdistill_ros.ros.params import SPECS, NodeParams, ParameterError, validate

DEFAULT_PARAMS_FILE = Path(__file__).resolve().parents[2] / "config" / "detector.param.yaml"


def default_params_file() -> Path:
    """config/detector.param.yaml of a source checkout, else of a colcon install (share/simdistill_ros/config)."""
    if DEFAULT_PARAMS_FILE.is_file():
        return DEFAULT_PARAMS_FILE
    return Path(sys.prefix) / "share" / "simdistill_ros" / "config" / "detector.param.yaml"


def read_params_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ros__parameters of a ROS 2 params file (`/**` or the only node entry)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"params file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict) or not data:
        raise ValueError(f"params file {path}: expected a mapping of node names to ros__parameters")
    entry = data.get("/**") or data.get("detector_node") or (next(iter(data.values())) if len(data) == 1 else None)
    if not isinstance(entry, dict) or not isinstance(entry.get("ros__parameters"), dict):
        raise ValueError(f"params file {path}: no '/**' (or detector_node) entry with ros__parameters")
    return dict(entry["ros__parameters"])


def replay_params(params_file: str | os.PathLike[str], model: str | os.PathLike[str],
                  overrides: dict[str, Any] | None = None) -> NodeParams:
    values: dict[str, Any] = {s.name: s.default for s in SPECS}
    known = set(values)
    from_file = read_params_file(params_file)
    unknown = sorted(set(from_file) - known - {"use_sim_time"})
    if unknown:
        raise ParameterError(unknown[0], f"in {params_file} is not a parameter of detector_node")
    values.update({k: v for k, v in from_file.items() if k in known})
    values.update(overrides or {})
    values["model"] = str(model)
    return validate(values)


def absolute_topic(name: str) -> str:
    """A relative topic name resolved in the root namespace ('cam_front/image_raw' -> '/cam_front/image_raw')."""
    return name if name.startswith("/") else "/" + name
