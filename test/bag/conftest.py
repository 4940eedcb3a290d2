"""Shared by the bag tests: one tiny synthetic world (2 scenes of 2 key frames, 90x160 cameras, one LiDAR
sweep between key frames), its devkit database, two bags converted from it once per session (mcap with raw
images and LiDAR; sqlite3 with the JPEG bytes, key frames only) and a random-weight checkpoint of the shrunk
tiny preset."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from simdistill_ros.core.checkpoint import save_checkpoint
from simdistill_ros.core.config import DetectorConfig

VERSION = "v1.0-trainval"


@dataclass(frozen=True)
class World:
    root: Path
    nusc: Any
    scenes: tuple[str, ...]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    from training.data.nuscenes import load_nuscenes
    from training.data.synth import generate

    root = generate(tmp_path_factory.mktemp("bagworld") / "synth", scenes=2, samples_per_scene=2, seed=3,
                    image_size=(90, 160), sweeps=1, version=VERSION, workers=1, progress=False)
    nusc = load_nuscenes(root, VERSION)
    return World(root, nusc, tuple(sorted(s["name"] for s in nusc.scene)))


@pytest.fixture(scope="session")
def raw_bag(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simdistill_ros.bag.from_nuscenes import ConvertOptions, convert

    out = tmp_path_factory.mktemp("bags") / "raw_mcap"
    convert(world.nusc, world.scenes, out, ConvertOptions(storage="mcap", lidar=True), progress=False)
    return out


@pytest.fixture(scope="session")
def jpeg_bag(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simdistill_ros.bag.from_nuscenes import ConvertOptions, convert

    out = tmp_path_factory.mktemp("bags") / "jpeg_sqlite3"
    convert(world.nusc, world.scenes[:1], out, ConvertOptions(storage="sqlite3", compressed=True, keyframes_only=True),
            progress=False)
    return out


@pytest.fixture(scope="session")
def checkpoint(small_config: DetectorConfig, make_student, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    return save_checkpoint(path, make_student(small_config).state_dict(), small_config)
