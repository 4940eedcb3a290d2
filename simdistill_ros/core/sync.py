"""Frame assembly: group per-camera messages into synchronised camera sets (ros.md), for the node and bag replay.

The policy, in stamp time only (no wall clock, so a bag replays exactly like the live stream):
- each camera's messages go to a bounded buffer; a stamp not newer than that camera's newest is refused
  (a duplicate or out-of-order message: `SyncError`, counted);
- every message of the anchor camera opens a set stamped with the anchor's stamp;
- for each other camera the set takes the message nearest to the anchor stamp within `slop_ns`. That
  choice is final once the camera has a message at or after the anchor stamp (later ones are further
  away), or once any camera has delivered a stamp more than `timeout_ns` past the anchor (the camera is
  then missing from this set): a complete set leaves as soon as its last camera arrives, a set with a
  silent camera leaves `timeout_ns` of stream time later;
- a camera with no message within slop is missing: `missing="drop"` drops the set, `missing="mask"`
  emits it with that camera marked invalid (a partial set; Frame.valid masks it at inference);
- a set whose stamps spread over more than `max_skew_ns` is dropped;
- a message a set took (emitted or dropped), and every older one of its camera, is consumed; more than
  queue_size open anchor sets force the oldest to be decided.
Sets leave in anchor-stamp order. `LatestSlot` hands them to an inference worker, newest wins: a set
that the worker had not started yet is replaced and counted as skipped.

message_filters' ApproximateTimeSynchronizer is not used: it is not in the PyPI ROS 2 wheels, it tries
every combination of queued messages across topics (costly over six cameras), and it runs the user
callback inside its lock (ros.md).
"""
from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

P = TypeVar("P")
T = TypeVar("T")

MissingPolicy = Literal["drop", "mask"]


class SyncError(ValueError):
    """A message the policy refuses: unknown camera, duplicate or out-of-order stamp."""


@dataclass(frozen=True)
class SyncPolicy:
    """Parameters of the frame-assembly policy (stamps in nanoseconds).

    cameras: camera names in model order; anchor: the camera whose messages open sets; slop_ns: the
    furthest another camera's stamp may be from the anchor's; max_skew_ns: the largest spread of stamps
    in a set; timeout_ns: stream time to wait for a late camera; missing: "drop" or "mask";
    queue_size: messages kept per camera.
    """

    cameras: tuple[str, ...]
    anchor: str
    slop_ns: int = 80_000_000
    max_skew_ns: int = 100_000_000
    timeout_ns: int = 150_000_000
    missing: MissingPolicy = "drop"
    queue_size: int = 8

    def __post_init__(self) -> None:
        if not self.cameras or len(set(self.cameras)) != len(self.cameras) or not all(self.cameras):
            raise ValueError(f"sync field cameras: expected distinct non-empty names, got {list(self.cameras)}")
        if self.anchor not in self.cameras:
            raise ValueError(f"sync field anchor: {self.anchor!r} is not one of the cameras {list(self.cameras)}")
        for name in ("slop_ns", "max_skew_ns", "timeout_ns"):
            if getattr(self, name) < 0:
                raise ValueError(f"sync field {name}: must be >= 0, got {getattr(self, name)}")
        if self.missing not in ("drop", "mask"):
            raise ValueError(f"sync field missing: expected 'drop' or 'mask', got {self.missing!r}")
        if self.queue_size < 1:
            raise ValueError(f"sync field queue_size: must be >= 1, got {self.queue_size}")


@dataclass(frozen=True)
class CameraSet(Generic[P]):
    """One synchronised set: stamp_ns is the anchor's; payloads/stamps_ns in camera order, None where missing."""

    stamp_ns: int
    cameras: tuple[str, ...]
    payloads: tuple[P | None, ...]
    stamps_ns: tuple[int | None, ...]

    @property
    def valid(self) -> tuple[bool, ...]:
        return tuple(p is not None for p in self.payloads)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(c for c, p in zip(self.cameras, self.payloads) if p is None)

    @property
    def skew_ns(self) -> int:
        present = [s for s in self.stamps_ns if s is not None]
        return max(present) - min(present)


@dataclass
class SyncStats:
    """Counters since start (or the last reset)."""

    emitted: int = 0
    partial: int = 0
    dropped_missing: int = 0
    dropped_skew: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    missing_by_camera: dict[str, int] = field(default_factory=dict)
    last_drop: str = ""


class FrameSync(Generic[P]):
    """Assembles CameraSets from (camera, stamp, payload) triples of any source (see the module docstring)."""

    def __init__(self, policy: SyncPolicy) -> None:
        self.policy = policy
        self.stats = SyncStats(missing_by_camera={c: 0 for c in policy.cameras})
        self._stamps: dict[str, list[int]] = {c: [] for c in policy.cameras}
        self._payloads: dict[str, list[P]] = {c: [] for c in policy.cameras}
        self._newest: dict[str, int] = {}
        self._newest_any = -1

    def add(self, camera: str, stamp_ns: int, payload: P) -> list[CameraSet[P]]:
        """Buffer one message; returns the sets it completed (oldest first). SyncError when refused."""
        if camera not in self._stamps:
            raise SyncError(f"camera {camera!r} is not one of {list(self.policy.cameras)}")
        stamp_ns = int(stamp_ns)
        newest = self._newest.get(camera)
        if newest is not None and stamp_ns <= newest:
            if stamp_ns == newest:
                self.stats.duplicates += 1
                raise SyncError(f"camera {camera!r}: duplicate stamp {stamp_ns / 1e9:.6f} s")
            self.stats.out_of_order += 1
            raise SyncError(f"camera {camera!r}: stamp {stamp_ns / 1e9:.6f} s is older than the newest "
                            f"{newest / 1e9:.6f} s (out of order)")
        self._newest[camera] = stamp_ns
        self._newest_any = max(self._newest_any, stamp_ns)
        stamps, payloads = self._stamps[camera], self._payloads[camera]
        stamps.append(stamp_ns)
        payloads.append(payload)
        if camera != self.policy.anchor and len(stamps) > self.policy.queue_size:
            del stamps[0], payloads[0]
        return self._resolve(final=False)

    def flush(self) -> list[CameraSet[P]]:
        """Decide every open set with what has arrived (end of a bag)."""
        return self._resolve(final=True)

    @property
    def pending(self) -> int:
        """Anchor messages whose set is not decided yet."""
        return len(self._stamps[self.policy.anchor])

    def _resolve(self, final: bool) -> list[CameraSet[P]]:
        pol = self.policy
        out: list[CameraSet[P]] = []
        anchors = self._stamps[pol.anchor]
        while anchors:
            t_a = anchors[0]
            timed_out = final or self._newest_any > t_a + pol.timeout_ns or len(anchors) > pol.queue_size
            choice: dict[str, int | None] = {}
            for cam in pol.cameras:
                if cam == pol.anchor:
                    continue
                if not timed_out and self._newest.get(cam, -1) < t_a:
                    return out  # this camera may still deliver a nearer message: wait
                choice[cam] = self._nearest(cam, t_a)
            payload = self._payloads[pol.anchor][0]
            del anchors[0], self._payloads[pol.anchor][0]
            emitted = self._decide(t_a, payload, choice)
            if emitted is not None:
                out.append(emitted)
        return out

    def _nearest(self, cam: str, t_a: int) -> int | None:
        """Index of cam's buffered message nearest to t_a within slop (the earlier one on a tie), or None."""
        stamps = self._stamps[cam]
        i = bisect.bisect_left(stamps, t_a)
        best: int | None = None
        for j in (i - 1, i):
            if 0 <= j < len(stamps) and abs(stamps[j] - t_a) <= self.policy.slop_ns:
                if best is None or abs(stamps[j] - t_a) < abs(stamps[best] - t_a):
                    best = j
        return best

    def _decide(self, t_a: int, anchor_payload: P, choice: dict[str, int | None]) -> CameraSet[P] | None:
        pol = self.policy
        payloads: list[P | None] = []
        stamps: list[int | None] = []
        for cam in pol.cameras:
            if cam == pol.anchor:
                payloads.append(anchor_payload)
                stamps.append(t_a)
                continue
            j = choice[cam]
            payloads.append(None if j is None else self._payloads[cam][j])
            stamps.append(None if j is None else self._stamps[cam][j])
        cset = CameraSet(t_a, pol.cameras, tuple(payloads), tuple(stamps))
        for cam, j in choice.items():  # consume what the set took, and everything older, emitted or not
            if j is not None:
                del self._stamps[cam][:j + 1], self._payloads[cam][:j + 1]
        for cam in cset.missing:
            self.stats.missing_by_camera[cam] += 1
        if cset.missing and pol.missing == "drop":
            self.stats.dropped_missing += 1
            self.stats.last_drop = f"set at {t_a / 1e9:.6f} s dropped: no message within slop from {', '.join(cset.missing)}"
            return None
        if cset.skew_ns > pol.max_skew_ns:
            self.stats.dropped_skew += 1
            self.stats.last_drop = (f"set at {t_a / 1e9:.6f} s dropped: stamps spread over {cset.skew_ns / 1e6:.1f} ms "
                                    f"> max_skew {pol.max_skew_ns / 1e6:.1f} ms")
            return None
        self.stats.emitted += 1
        if cset.missing:
            self.stats.partial += 1
        return cset


class LatestSlot(Generic[T]):
    """A one-item mailbox between a producer and one worker thread: put replaces an item not yet taken
    (counted in `skipped`); get blocks until an item or close()."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self.skipped = 0
        self.put_count = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._has_item:
                self.skipped += 1
            self._item, self._has_item = item, True
            self.put_count += 1
            self._cond.notify()

    def get(self, timeout: float | None = None) -> T | None:
        """The newest item, or None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
