"""The rank function of test_distributed.py (not a test): set the environment torchrun would set, train
the baseline stage, then save this rank's parameters to <out>.rank<r>.pt."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from training import distributed as D
from training.config import load_train_config
from training.loop import Trainer, TrainRequest


def run_rank(rank: int, world_size: int, port: int, config: str, dataroot: Path, out: Path) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    trainer = Trainer(TrainRequest("baseline", load_train_config(config), dataroot, out, progress=False,
                                   tensorboard=False))
    trainer.run()
    model = trainer.objective.model
    torch.save({"params": dict(model.named_parameters()), "buffers": dict(model.named_buffers())},
               out.with_name(f"{out.name}.rank{rank}.pt"))
    D.barrier(trainer.ctx)
    D.shutdown(trainer.ctx)
