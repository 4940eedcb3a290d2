"""`simdistill synth`: a synthetic driving world written as a real nuScenes-format dataroot.

world.py (road, objects, motion, timestamps), rig.py (sensor calibration), render.py (ray-cast cameras
and LiDAR), tables.py (nuScenes tables), writer.py (generate(): pool, atomic write), cli.py (the command).
"""
from __future__ import annotations

from training.data.synth.writer import generate

__all__ = ["generate"]
