"""The .msg definitions of vision_msgs and tf2_msgs kept in simdistill_ros/ros/msg: one source for the
rosidl build at set-up (scripts/build_interfaces.py) and for rosbags' type registration.

rosbags' type stores hold no vision_msgs (environment.md): `register_with(typestore)` adds them from
this text. Nothing here imports ROS; rosbags is imported only by `register_with`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

MSG_DIR = Path(__file__).resolve().parent / "msg"


def message_definitions() -> dict[str, str]:
    """Type name ('vision_msgs/msg/Detection3DArray') -> .msg text, for every file under msg/<package>/."""
    out = {}
    for path in sorted(MSG_DIR.glob("*/*.msg")):
        out[f"{path.parent.name}/msg/{path.stem}"] = path.read_text()
    if not out:
        raise FileNotFoundError(f"no .msg files under {MSG_DIR}: the package is installed without its msg/ data")
    return out


def register_with(typestore: Any) -> None:
    """Register every definition with a rosbags Typestore (types it already has are left as they are)."""
    from rosbags.typesys import get_types_from_msg

    types: dict[str, Any] = {}
    for name, text in message_definitions().items():
        if name not in typestore.types:
            types.update(get_types_from_msg(text, name))
    typestore.register(types)
