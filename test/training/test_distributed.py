"""DDP on CPU (gloo, 2 processes, torchrun's environment): the replicas stay equal, and they match one process
that accumulates the same two micro-batches per optimiser step (the same global batch: BatchNorm sees
one sample at a time either way; SyncBatchNorm has no CPU kernel in torch)."""
from __future__ import annotations

import importlib
import json
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import ddp_worker
import train_helpers
from simdistill_ros.core.checkpoint import load_checkpoint
from simdistill_ros.core.config import DetectorConfig
from training.loop import TrainRequest, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_two_gloo_processes_match_one_accumulating_process(tiny_world: Path, small_config: DetectorConfig,
                                                           tmp_path: Path) -> None:
    detector = train_helpers.two_camera(small_config)
    # CBGS turns the 3 training samples into 30; each rank takes every other one (distributed CBGS)
    schedule = {"epochs": 1, "max_steps_per_epoch": 2}
    data = {"augment": True, "cbgs": True}
    train_helpers.train_config(tmp_path / "two", detector, data=data, schedule={**schedule, "accumulate": 1})
    run = tmp_path / "two" / "run"
    # two ranks forked from this process, with the environment torchrun gives each (training/distributed.py
    # reads only RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT); forking skips two interpreter
    # starts and torch imports, the slow part of a torchrun launch
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    importlib.import_module("torch._dynamo")  # AdamW imports it; once here instead of once per forked rank
    mp.start_processes(ddp_worker.run_rank, args=(2, port, str(train_helpers.config_path(tmp_path / "two")),
                                                  tiny_world, run), nprocs=2, start_method="fork")
    r0 = torch.load(run.with_name("run.rank0.pt"), weights_only=True)
    r1 = torch.load(run.with_name("run.rank1.pt"), weights_only=True)
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])
    assert (run / "student.pt").is_file() and (run / "checkpoints" / "epoch_0001.pt").is_file()

    one = train_helpers.train_config(tmp_path / "one", detector, data=data, schedule={**schedule, "accumulate": 2})
    result = train(TrainRequest("baseline", one, tiny_world, tmp_path / "one" / "run", progress=False,
                                tensorboard=False))
    _, single, _ = load_checkpoint(result.final_model)
    for name, p in r0["params"].items():
        torch.testing.assert_close(p, single[name], rtol=0, atol=2e-5, msg=name)
    # the same samples reached both runs (the logged loss is the mean over ranks / micro-batches), and the
    # first step changed the weights (the second step's loss differs)
    losses = [[json.loads(line)["loss"] for line in (r / "metrics.jsonl").read_text().splitlines()]
              for r in (run, tmp_path / "one" / "run")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) and len(losses[0]) == 2
    assert abs(losses[0][1] - losses[0][0]) > 1e-3


def test_distributed_cbgs_shards_the_class_balanced_list(tiny_world: Path) -> None:
    from training.data.dataset import CameraDetectionDataset, CBGSSampler
    from training.data.nuscenes import build_infos
    from training.distributed import DistributedCBGSSampler

    infos = build_infos(tiny_world, "v1.0-trainval", "train")
    ds = CameraDetectionDataset(infos, train_helpers.any_geometry(), load_lidar=False)
    full = CBGSSampler(ds, seed=3)
    full.set_epoch(4)
    want = list(full)
    shards = [DistributedCBGSSampler(ds, 3, r, seed=3) for r in range(3)]
    for s in shards:
        s.set_epoch(4)
    got = [list(s) for s in shards]
    assert len({len(g) for g in got}) == 1 and len(got[0]) == len(shards[0]) == -(-len(want) // 3)
    padded = want + want[: 3 * len(got[0]) - len(want)]
    assert [padded[i] for i in range(len(padded))] == [got[i % 3][i // 3] for i in range(len(padded))]
    shards[0].set_epoch(5)
    assert list(shards[0]) != got[0]
