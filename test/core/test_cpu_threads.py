"""The shared --threads option: parsed, applied to torch, and a value below one refused by name."""
from __future__ import annotations

import argparse

import pytest
import torch

from simdistill_ros.core.cpu_threads import add_threads_argument, apply_threads


def test_threads_option_sets_torch_threads_and_refuses_zero() -> None:
    parser = argparse.ArgumentParser()
    add_threads_argument(parser, default=None)
    before = torch.get_num_threads()
    try:
        apply_threads(parser.parse_args([]).threads)
        assert torch.get_num_threads() == before
        target = 1 if before != 1 else 2
        apply_threads(parser.parse_args(["--threads", str(target)]).threads)
        assert torch.get_num_threads() == target
        with pytest.raises(ValueError, match="--threads must be >= 1, got 0"):
            apply_threads(parser.parse_args(["--threads", "0"]).threads)
    finally:
        torch.set_num_threads(before)
