"""Fixtures of the training tests: one tiny synthetic world for the whole session (2 scenes x 3 key
frames at 90x160, 2 sweeps; scene 1 is train, scene 2 val)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import train_helpers


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synth import generate

    out = tmp_path_factory.mktemp("tiny_world") / "nuscenes"
    return generate(out, workers=1, progress=False, **train_helpers.WORLD)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread for a test module (training tests share a 2-core machine with other jobs,
    where two threads per process oversubscribe the cores and run many times slower); restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
