"""Started by torchrun in test_distributed.py (not a test): train the baseline stage on every rank, then
save this rank's parameters and buffers to <out>.rank<r>.pt."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from training import distributed as D
from training.config import load_train_config
from training.loop import Trainer, TrainRequest


def main() -> None:
    config, dataroot, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)
    trainer = Trainer(TrainRequest("baseline", load_train_config(config), dataroot, out, progress=False,
                                   tensorboard=False))
    trainer.run()
    model = trainer.objective.model
    torch.save({"params": dict(model.named_parameters()), "buffers": dict(model.named_buffers())},
               out.with_name(f"{out.name}.rank{trainer.ctx.rank}.pt"))
    D.barrier(trainer.ctx)
    D.shutdown(trainer.ctx)


if __name__ == "__main__":
    main()
