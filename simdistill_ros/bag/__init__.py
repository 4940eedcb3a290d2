"""rosbag2 tools (rosbags, no ROS install needed): nuScenes-format dataroots to bags, and replay evaluation."""
from __future__ import annotations

BAG_MODULES = ("rosbags", "mcap", "nuscenes", "cv2", "matplotlib")


def require(modules: tuple[str, ...], what: str) -> None:
    """ValueError naming the missing modules and the extras that bring them."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"{what} needs {', '.join(missing)}: pip install 'simdistill_ros[train,bag]'")
