"""What an exported network file says about itself, and the checks run when one is loaded.

An ONNX file written by `simdistill export` carries, in its metadata_props (string key/value pairs,
readable through onnxruntime without the onnx package), the full DetectorConfig, the class names, the
opset, the SHA-256 of the checkpoint it came from and the graph's input/output names. A TensorRT
engine carries the same record in a JSON sidecar (`<engine>.json`) plus the SHA-256 of the ONNX file
it was built from, the TensorRT version and the GPU it was built on.

On load, `check_metadata` refuses a file that lacks the record, a record of another format version,
a config that does not parse, a graph whose input/output shapes disagree with the recorded geometry
(a file whose record was edited), and, when the caller names one, a different checkpoint or config.
Plain data and the standard library only.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simdistill_ros.core.config import DetectorConfig, config_from_dict, config_to_dict

FORMAT = "simdistill_ros.student.onnx"
FORMAT_VERSION = 1
INPUT_NAMES: tuple[str, ...] = ("images", "depth_index", "pixel_index", "cell_index")
POINTS_DIM = "num_points"
KEY_PREFIX = "simdistill."


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def output_names(config: DetectorConfig) -> tuple[str, ...]:
    """One raw head tensor per task: heads_0 ... heads_{T-1}."""
    return tuple(f"heads_{i}" for i in range(len(config.model.tasks)))


def input_shapes(config: DetectorConfig) -> dict[str, tuple[int | str, ...]]:
    """Graph input shapes for batch 1: images 1 x N x 3 x H x W float32, index tensors P int64."""
    h, w = config.geometry.image_size
    return {"images": (1, config.model.num_cameras, 3, h, w), "depth_index": (POINTS_DIM,),
            "pixel_index": (POINTS_DIM,), "cell_index": (POINTS_DIM,)}


def output_shapes(config: DetectorConfig) -> dict[str, tuple[int, ...]]:
    """Head shapes for batch 1: 1 x (10 + n_cls_t) x Hh x Wh per task."""
    hh, wh = config.geometry.head_size
    return {name: (1, 10 + len(task.class_names), hh, wh)
            for name, task in zip(output_names(config), config.model.tasks)}


@dataclass(frozen=True)
class ExportRecord:
    """The self-description of an exported network (see the module docstring)."""

    config: DetectorConfig
    checkpoint_sha256: str
    opset: int

    def to_props(self) -> dict[str, str]:
        """String key/value pairs for ONNX metadata_props (or a JSON sidecar)."""
        return {
            f"{KEY_PREFIX}format": FORMAT,
            f"{KEY_PREFIX}format_version": str(FORMAT_VERSION),
            f"{KEY_PREFIX}config": json.dumps(config_to_dict(self.config), sort_keys=True),
            f"{KEY_PREFIX}class_names": json.dumps(list(self.config.model.class_names)),
            f"{KEY_PREFIX}checkpoint_sha256": self.checkpoint_sha256,
            f"{KEY_PREFIX}opset": str(self.opset),
            f"{KEY_PREFIX}inputs": json.dumps(list(INPUT_NAMES)),
            f"{KEY_PREFIX}outputs": json.dumps(list(output_names(self.config))),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> "ExportRecord":
        """Parse metadata written by `to_props`; ValueError naming `source` and the field otherwise."""
        def get(key: str) -> str:
            value = props.get(KEY_PREFIX + key)
            if value is None:
                raise ValueError(f"{source}: metadata field {KEY_PREFIX + key!r} is missing; "
                                 f"was it written by `simdistill export`?")
            return value

        if get("format") != FORMAT:
            raise ValueError(f"{source}: metadata format {get('format')!r} is not {FORMAT!r}")
        if get("format_version") != str(FORMAT_VERSION):
            raise ValueError(f"{source}: metadata format_version {get('format_version')}, "
                             f"this package reads {FORMAT_VERSION}")
        try:
            config = config_from_dict(DetectorConfig, json.loads(get("config")))
            class_names = tuple(json.loads(get("class_names")))
            inputs = tuple(json.loads(get("inputs")))
            outputs = tuple(json.loads(get("outputs")))
            opset = int(get("opset"))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{source}: metadata is not valid JSON: {e}") from e
        except ValueError as e:
            raise ValueError(f"{source}: metadata: {e}") from e
        if class_names != config.model.class_names:
            raise ValueError(f"{source}: metadata class_names {list(class_names)} disagree with its config's "
                             f"{list(config.model.class_names)}")
        if inputs != INPUT_NAMES or outputs != output_names(config):
            raise ValueError(f"{source}: metadata inputs/outputs {list(inputs)}/{list(outputs)}, expected "
                             f"{list(INPUT_NAMES)}/{list(output_names(config))}")
        return cls(config, get("checkpoint_sha256"), opset)


def check_graph(record: ExportRecord, inputs: Mapping[str, Sequence[Any]], outputs: Mapping[str, Sequence[Any]],
                source: str) -> None:
    """The graph's declared input/output shapes must be what the recorded config implies.

    inputs/outputs: name -> shape with ints for fixed dimensions and anything else (a name, None) for
    dynamic ones. A recorded geometry that the graph was not built for is refused here."""
    def norm(shape: Sequence[Any]) -> tuple[int | str, ...]:
        return tuple(int(d) if isinstance(d, int) and d > 0 else POINTS_DIM for d in shape)

    want_in, want_out = input_shapes(record.config), output_shapes(record.config)
    for kind, got, want in (("input", inputs, want_in), ("output", outputs, want_out)):
        if set(got) != set(want):
            raise ValueError(f"{source}: graph {kind}s {sorted(got)} differ from the recorded {sorted(want)}")
        for name, shape in want.items():
            if norm(got[name]) != tuple(shape):
                raise ValueError(f"{source}: graph {kind} {name!r} has shape {list(got[name])} but the recorded "
                                 f"geometry/model ({record.config.name}) needs {list(shape)}: the file and its "
                                 f"metadata disagree")


def check_expected(record: ExportRecord, source: str, config: DetectorConfig | None = None,
                   checkpoint: str | os.PathLike[str] | None = None) -> None:
    """Refuse a file exported from another checkpoint or for another config than the caller's."""
    if checkpoint is not None:
        digest = sha256_file(checkpoint)
        if digest != record.checkpoint_sha256:
            raise ValueError(f"{source} was exported from a checkpoint with SHA-256 "
                             f"{record.checkpoint_sha256[:12]}..., not from {checkpoint} ({digest[:12]}...): "
                             f"re-export it")
    if config is not None and config != record.config:
        diff = [f.name for f in config.__dataclass_fields__.values()
                if getattr(config, f.name) != getattr(record.config, f.name)]
        raise ValueError(f"{source} was exported for another config (differs in {', '.join(diff)}): re-export it")


def write_sidecar(record: ExportRecord, path: str | os.PathLike[str], extra: Mapping[str, str]) -> Path:
    """Write the record plus `extra` (engine facts) as JSON next to an engine, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({**record.to_props(), **extra}, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, str]:
    """The JSON sidecar of an engine; ValueError naming the file when it is missing or unreadable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ValueError(f"{path} is missing: a TensorRT engine needs the metadata file written beside it by "
                         f"`simdistill export --format tensorrt`") from e
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON: {e}") from e
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object of strings")
    return data
