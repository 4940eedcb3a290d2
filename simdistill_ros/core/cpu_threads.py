"""The `--threads` option that every command shares: torch's CPU intra-op thread count, checked in one place.

On a small CPU shared by several processes (two trainings side by side, a node and a bag player) one thread
each is usually faster than torch's default of one per core, so every long-running command offers it.
"""
from __future__ import annotations

import argparse

HELP = "torch CPU intra-op threads (default: torch's choice, one per core); 1 helps on a CPU shared with other jobs"


def add_threads_argument(parser: argparse.ArgumentParser, default: int | None = None, help: str = HELP) -> None:
    """Add `--threads N` to a command's parser (None: leave torch's default)."""
    parser.add_argument("--threads", type=int, default=default, metavar="N", help=help)


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count; None leaves torch's default. Raises ValueError below 1."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    import torch  # here, so that a command's --help does not import torch

    torch.set_num_threads(threads)
