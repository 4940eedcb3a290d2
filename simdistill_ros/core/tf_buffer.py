"""A small ROS-free transform buffer: the tf2 semantics the detector needs, for the node and for bag replay.

It holds a tree of frames (each child has one parent, as in tf2). A transform `T_parent_child` (4x4)
maps points of the child frame into the parent frame: it is what a geometry_msgs/TransformStamped with
header.frame_id = parent and child_frame_id = child carries. Static transforms (/tf_static) hold at
every time; dynamic ones (/tf) are kept for `cache_time_ns` and interpolated at the requested stamp
(linear translation, slerp rotation). `lookup` composes the chain between two frames through their
common ancestor; `lookup_through` is tf2's "time travel" form (target at one time, source at another,
through a fixed frame), which ego-motion compensation of each camera to the anchor stamp uses.

Why not tf2_ros: the PyPI ROS 2 wheels this project runs on have no tf2_ros (environment.md), bag
replay must work without ROS at all, and core may import only torch, numpy, PyYAML and the standard
library. Errors are tf2's three kinds: a frame that is not known, frames that are not connected, and a
stamp outside the data of a dynamic link (extrapolation), each naming the frames and stamps.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

import numpy as np

from simdistill_ros.core.frames import matrix_to_quaternion, quaternion_to_matrix, slerp


class TransformError(ValueError):
    """A transform cannot be looked up (base of the three kinds below)."""


class UnknownFrameError(TransformError):
    """A frame was never seen in any transform."""


class ConnectivityError(TransformError):
    """Both frames are known but no chain of transforms joins them."""


class ExtrapolationError(TransformError):
    """The requested stamp is outside the buffered data of a dynamic link."""


@dataclass
class _Link:
    """The transforms from `parent` to one child frame: static (one sample) or a time series."""

    parent: str
    static: bool
    stamps_ns: list[int] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    rotations_xyzw: list[np.ndarray] = field(default_factory=list)
    static_matrix: np.ndarray | None = None

    def insert(self, stamp_ns: int, translation: np.ndarray, rotation_xyzw: np.ndarray) -> None:
        if self.static:
            self.stamps_ns, self.translations, self.rotations_xyzw = [stamp_ns], [translation], [rotation_xyzw]
            self.static_matrix = None
            return
        i = bisect.bisect_left(self.stamps_ns, stamp_ns)
        if i < len(self.stamps_ns) and self.stamps_ns[i] == stamp_ns:  # same stamp: the newer message wins
            self.translations[i], self.rotations_xyzw[i] = translation, rotation_xyzw
            return
        self.stamps_ns.insert(i, stamp_ns)
        self.translations.insert(i, translation)
        self.rotations_xyzw.insert(i, rotation_xyzw)

    def prune(self, keep_after_ns: int) -> None:
        i = bisect.bisect_left(self.stamps_ns, keep_after_ns)
        i = min(i, len(self.stamps_ns) - 1)  # always keep the newest sample
        if i > 0:
            del self.stamps_ns[:i], self.translations[:i], self.rotations_xyzw[:i]

    def at(self, stamp_ns: int | None, child: str, tolerance_ns: int) -> np.ndarray:
        """4x4 T_parent_child at stamp_ns (None: the newest sample). Do not modify the result."""
        if self.static:
            if self.static_matrix is None:
                self.static_matrix = _matrix(self.translations[-1], self.rotations_xyzw[-1])
            return self.static_matrix
        if stamp_ns is None:
            return _matrix(self.translations[-1], self.rotations_xyzw[-1])
        first, last = self.stamps_ns[0], self.stamps_ns[-1]
        if stamp_ns < first - tolerance_ns or stamp_ns > last + tolerance_ns:
            direction = "past" if stamp_ns < first else "future"
            raise ExtrapolationError(
                f"extrapolation into the {direction}: transform {self.parent} -> {child} requested at "
                f"{_sec(stamp_ns)} s but the buffer holds {_sec(first)} .. {_sec(last)} s")
        stamp_ns = min(max(stamp_ns, first), last)
        i = bisect.bisect_left(self.stamps_ns, stamp_ns)
        if self.stamps_ns[i] == stamp_ns:
            return _matrix(self.translations[i], self.rotations_xyzw[i])
        t0, t1 = self.stamps_ns[i - 1], self.stamps_ns[i]
        a = (stamp_ns - t0) / (t1 - t0)
        trans = (1.0 - a) * self.translations[i - 1] + a * self.translations[i]
        return _matrix(trans, slerp(self.rotations_xyzw[i - 1], self.rotations_xyzw[i], a))


def _matrix(translation: np.ndarray, rotation_xyzw: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(rotation_xyzw)
    T[:3, 3] = translation
    return T


def _rigid_inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 (R^T, -R^T t): exact, and no LAPACK call on the per-frame path."""
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def _sec(stamp_ns: int) -> str:
    return f"{stamp_ns / 1e9:.6f}"


def _check_rigid(T: np.ndarray, what: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"{what}: expected a finite 4x4 matrix, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0 or not np.allclose(T[3], [0, 0, 0, 1]):
        raise ValueError(f"{what}: not a rigid transform (rotation not orthonormal or bad last row)")
    return T


class TransformBuffer:
    """Static and dynamic transforms between named frames; thread-safe.

    cache_time_ns: how long dynamic samples are kept behind the newest one of their link.
    tolerance_ns: how far beyond a dynamic link's data a lookup may reach (the edge sample is used).
    """

    def __init__(self, cache_time_ns: int = 10_000_000_000, tolerance_ns: int = 0) -> None:
        if cache_time_ns <= 0 or tolerance_ns < 0:
            raise ValueError(f"cache_time_ns must be > 0 and tolerance_ns >= 0, got {cache_time_ns}, {tolerance_ns}")
        self.cache_time_ns = int(cache_time_ns)
        self.tolerance_ns = int(tolerance_ns)
        self._links: dict[str, _Link] = {}
        self._lock = threading.Lock()

    def set_transform(self, parent: str, child: str, stamp_ns: int, translation: np.ndarray,
                      rotation_xyzw: np.ndarray, static: bool = False) -> None:
        """Add one transform: the pose of `child` in `parent` (translation in metres, quaternion x, y, z, w).

        A child given a new parent, or switched between static and dynamic, forgets its old link (tf2
        warns in that case; a re-mounted camera is the usual cause).
        """
        what = f"transform {parent!r} -> {child!r}"
        if not parent or not child:
            raise ValueError(f"{what}: frame ids must not be empty")
        if parent == child:
            raise ValueError(f"{what}: a frame cannot be its own parent")
        t = np.asarray(translation, dtype=np.float64).reshape(3)
        q = np.asarray(rotation_xyzw, dtype=np.float64).reshape(4)
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
            raise ValueError(f"{what}: translation or rotation contains NaN or infinite values")
        n = float(np.linalg.norm(q))
        if abs(n - 1.0) > 1e-3:
            raise ValueError(f"{what}: rotation quaternion has norm {n:.6f}, expected 1")
        q = q / n
        with self._lock:
            if self._creates_cycle(parent, child):
                raise ValueError(f"{what}: would close a loop ({parent!r} already descends from {child!r})")
            link = self._links.get(child)
            if link is None or link.parent != parent or link.static != static:
                link = self._links[child] = _Link(parent, static)
            link.insert(int(stamp_ns), t, q)
            if not static:
                link.prune(link.stamps_ns[-1] - self.cache_time_ns)

    def set_matrix(self, parent: str, child: str, stamp_ns: int, T_parent_child: np.ndarray,
                   static: bool = False) -> None:
        """set_transform from a 4x4 rigid T_parent_child (maps child-frame points into the parent frame)."""
        T = _check_rigid(T_parent_child, f"transform {parent!r} -> {child!r}")
        self.set_transform(parent, child, stamp_ns, T[:3, 3], matrix_to_quaternion(T[:3, :3]), static)

    def frames(self) -> set[str]:
        with self._lock:
            return self._known()

    def lookup(self, target: str, source: str, stamp_ns: int | None = None) -> np.ndarray:
        """4x4 T_target_source at stamp_ns: maps points of `source` into `target`.

        stamp_ns None: the newest data of every dynamic link on the chain (tf2's time 0 is the latest
        time common to the chain; here each link uses its newest sample).
        """
        with self._lock:
            up_source, up_target = self._path_to_root(source), self._path_to_root(target)
            common = self._common_ancestor(target, source, up_source, up_target)
            T_common_source = self._compose(up_source, common, stamp_ns)
            if up_target[0] == common:  # the target is the common ancestor: nothing to invert
                return T_common_source.copy()
            T_common_target = self._compose(up_target, common, stamp_ns)
        return _rigid_inverse(T_common_target) @ T_common_source

    def lookup_through(self, target: str, target_stamp_ns: int, source: str, source_stamp_ns: int,
                       fixed: str) -> np.ndarray:
        """4x4 from `source` at source_stamp_ns to `target` at target_stamp_ns, through a frame fixed in
        time (tf2's lookupTransform(target, target_time, source, source_time, fixed_frame))."""
        T_fixed_source = self.lookup(fixed, source, source_stamp_ns)
        T_target_fixed = self.lookup(target, fixed, target_stamp_ns)
        return T_target_fixed @ T_fixed_source

    def can_transform(self, target: str, source: str, stamp_ns: int | None = None) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
        except TransformError:
            return False
        return True

    def is_static_chain(self, target: str, source: str) -> bool:
        """True when every link between the two frames is static (False when they are not connected)."""
        with self._lock:
            try:
                up_s, up_t = self._path_to_root(source), self._path_to_root(target)
                common = self._common_ancestor(target, source, up_s, up_t)
            except TransformError:
                return False
            return all(self._links[f].static for up in (up_s, up_t) for f in up[:up.index(common)])

    # -- internals (called with the lock held) --
    def _path_to_root(self, frame: str) -> list[str]:
        known = frame in self._links or any(link.parent == frame for link in self._links.values())
        if not known:
            raise UnknownFrameError(f"frame {frame!r} does not exist in the transform buffer "
                                    f"(known: {', '.join(sorted(self._known())) or 'none'})")
        path = [frame]
        while path[-1] in self._links:
            path.append(self._links[path[-1]].parent)
        return path

    def _known(self) -> set[str]:
        return set(self._links) | {link.parent for link in self._links.values()}

    def _creates_cycle(self, parent: str, child: str) -> bool:
        frame = parent
        while frame in self._links:
            if frame == child:
                return True
            frame = self._links[frame].parent
        return frame == child

    @staticmethod
    def _common_ancestor(target: str, source: str, up_source: list[str], up_target: list[str]) -> str:
        on_target = set(up_target)
        for frame in up_source:
            if frame in on_target:
                return frame
        raise ConnectivityError(f"frames {source!r} and {target!r} are not connected: {source!r} is under "
                                f"{up_source[-1]!r}, {target!r} under {up_target[-1]!r}")

    def _compose(self, up: list[str], ancestor: str, stamp_ns: int | None) -> np.ndarray:
        """T_ancestor_frame for the frame up[0], along its path to the root."""
        T = np.eye(4)
        for frame in up[:up.index(ancestor)]:
            T = self._links[frame].at(stamp_ns, frame, self.tolerance_ns) @ T
        return T


def camera_to_target(buffer: TransformBuffer, target_frame: str, camera_frame: str, camera_stamp_ns: int,
                     anchor_stamp_ns: int, motion_frame: str | None) -> tuple[np.ndarray, bool]:
    """4x4 cam_to_target of one camera of a set stamped anchor_stamp_ns; returns (T, motion_compensated).

    With a `motion_frame` (e.g. odom or map) that TF connects to both frames at the needed stamps, the
    camera's pose at its own stamp is carried to target_frame at the anchor stamp through it: the ego
    motion between the two stamps is compensated, as training's camera-to-ego does. Otherwise the
    camera's mount at its own stamp is used (motion_compensated False; the caller reports it).
    A TransformError names the missing link when even the mount is not known.
    """
    if motion_frame:
        try:
            T = buffer.lookup_through(target_frame, anchor_stamp_ns, camera_frame, camera_stamp_ns, motion_frame)
            return T, True
        except TransformError:
            pass
    return buffer.lookup(target_frame, camera_frame, camera_stamp_ns), False
