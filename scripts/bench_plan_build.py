"""A/B timing of build_bev_pool_plan: this checkout against the builder of a git revision (default: the
foundation's, 1039546), in one process, interleaved, medians; the sample rig, test-time img_aug, batch 1.

    .venv/bin/python scripts/bench_plan_build.py [--rev REV] [--iters N] [--threads T]
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from simdistill_ros.core.config import load_preset
from simdistill_ros.core.geometry import inference_image_aug
from simdistill_ros.core.rig import nuscenes_like_rig
from simdistill_ros.core.view_plan import build_bev_pool_plan


def _old_builder(rev: str):  # type: ignore[no-untyped-def]
    src = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "show",
                          f"{rev}:simdistill_ros/core/view_plan.py"], capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "view_plan_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("view_plan_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["view_plan_old"] = module
    spec.loader.exec_module(module)
    return module.build_bev_pool_plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rev", default="1039546")
    parser.add_argument("--iters", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    old = _old_builder(args.rev)
    for preset in ("tiny", "r50"):
        cfg = load_preset(preset)
        g = cfg.geometry
        calib = nuscenes_like_rig(cfg.model.camera_names)
        inputs = [torch.tensor(np.stack(m))[None] for m in ([c.K for c in calib], [c.cam_to_ego for c in calib],
                                                             [inference_image_aug(c.image_size, g, c.K)[0] for c in calib])]
        times: dict[str, list[float]] = {"old": [], "new": []}
        builders = {"old": old, "new": build_bev_pool_plan}
        for f in builders.values():
            f(g, *inputs)
        for _ in range(args.iters):
            for name, f in builders.items():
                t = time.perf_counter()
                f(g, *inputs)
                times[name].append((time.perf_counter() - t) * 1e3)
        m_old, m_new = float(np.median(times["old"])), float(np.median(times["new"]))
        points = build_bev_pool_plan(g, *inputs).num_points
        print(f"{preset}: {args.rev} {m_old:.1f} ms, this checkout {m_new:.1f} ms, ratio {m_old / m_new:.1f}x, "
              f"{points} points, {args.threads} thread(s), {args.iters} iterations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
