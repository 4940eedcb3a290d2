"""Detections straight to CDR bytes (vision_msgs/Detection3DArray, visualization_msgs/MarkerArray), for the node.

rclpy's Publisher.publish takes serialized bytes as well as message objects. Building the message
objects is what costs: rclpy's generated constructors build a default for every nested field even when
one is passed, so a Detection3DArray of 50 boxes is ~2,000 Python objects and its MarkerArray ~8,000
(tens of milliseconds on the build machine; docs/benchmarks.md). This module writes the same bytes
directly: XCDR1 little-endian with the encapsulation header, each primitive aligned to its size from the
end of that header, strings as uint32 length (with the terminating NUL) + bytes + NUL, sequences as
uint32 count + elements, padding bytes zero. rclpy.serialization.deserialize_message reads it back as
the very message ros/convert.py and ros/markers.py build, and it has the length rclpy's serializer
gives (tested; rclpy leaves padding bytes undefined, so raw bytes are not compared). Those field-built
messages stay the reference and serve the bag tools. The layouts are those of ros.md (vision_msgs 4.x) and visualization_msgs/Marker of Humble to Kilted.
"""
from __future__ import annotations

import functools
import struct

import numpy as np

from simdistill_ros.core.types import Detections
from simdistill_ros.ros.markers import ADD, marker_specs

_ENCAPSULATION = b"\x00\x01\x00\x00"  # CDR_LE


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray(_ENCAPSULATION)

    def align(self, n: int) -> None:
        pad = (-(len(self.buf) - 4)) % n
        if pad:
            self.buf += bytes(pad)

    def u32(self, v: int) -> None:
        self.align(4)
        self.buf += struct.pack("<I", v)

    def i32s(self, *v: int) -> None:
        self.align(4)
        self.buf += struct.pack(f"<{len(v)}i", *v)

    def f64s(self, *v: float) -> None:
        self.align(8)
        self.buf += struct.pack(f"<{len(v)}d", *v)

    def f32s(self, *v: float) -> None:
        self.align(4)
        self.buf += struct.pack(f"<{len(v)}f", *v)

    def string(self, s: str) -> None:
        b = s.encode()
        self.u32(len(b) + 1)
        self.buf += b + b"\x00"

    def boolean(self, v: bool) -> None:
        self.buf += b"\x01" if v else b"\x00"

    def header(self, stamp_ns: int, frame_id: str) -> None:
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        self.align(4)
        self.buf += struct.pack("<iI", sec, nanosec)
        self.string(frame_id)

    def getvalue(self) -> bytes:
        return bytes(self.buf)


def _aligned_bytes(*parts: tuple[str, object]) -> bytes:
    """Bytes of writes that start 4-aligned and hold only 4-byte-aligned items (int32s and strings), so they
    can be copied in anywhere the offset is a multiple of 4."""
    w = _Writer()
    for kind, value in parts:
        if kind == "header":
            w.header(*value)  # type: ignore[misc]
        elif kind == "string":
            w.string(value)  # type: ignore[arg-type]
        else:
            w.u32(value)  # type: ignore[arg-type]
    return bytes(w.buf[4:])


def _pad(offset: int, n: int) -> int:
    return (-offset) % n


@functools.lru_cache(maxsize=512)
def _detection_format(start: int, head_len: int, name_len: int) -> tuple[str, int]:
    """struct format of one Detection3D (its header, one hypothesis, bbox, id) written at an offset that is
    `start` modulo 8; returns (format, end offset modulo 8)."""
    p1 = _pad(start, 4)
    o = start + p1 + head_len + 4 + name_len + 1
    p2 = _pad(o, 8)
    o += p2 + 8 * 8 + 36 * 8 + 10 * 8 + 4 + 1
    return f"<{p1}x{head_len}sI{name_len + 1}s{p2}x8d{36 * 8}x10dI1s", o % 8


def detection_array_cdr(det: Detections, frame_id: str) -> bytes:
    """CDR of convert.detections_to_msg(f, det, frame_id): one struct.pack per detection."""
    w = _Writer()
    w.header(det.stamp_ns, frame_id)
    w.u32(len(det))
    head = _aligned_bytes(("header", (det.stamp_ns, frame_id)), ("u32", 1))  # each Detection3D's header, 1 result
    boxes = det.boxes.astype(np.float64)
    half = boxes[:, 6] / 2.0
    qz, qw = np.sin(half), np.cos(half)  # yaw quaternion (0, 0, sin, cos), as core.frames.yaw_quaternion
    offset = (len(w.buf) - 4) % 8
    parts = [w.getvalue()]
    for (x, y, z, l, wd, h), sz, cw, score, name in zip(boxes[:, :6].tolist(), qz.tolist(), qw.tolist(),
                                                        det.scores.tolist(), det.names):
        name_b = name.encode()
        fmt, offset = _detection_format(offset, len(head), len(name_b))
        pose = (x, y, z, 0.0, 0.0, sz, cw)
        parts.append(struct.pack(fmt, head, len(name_b) + 1, name_b, score, *pose, *pose, l, wd, h, 1, b""))
    return b"".join(parts)


# Marker fields between `colors` and `text` (texture_resource, texture, uv_coordinates), all empty
_MARKER_MIDDLE = _aligned_bytes(("string", ""), ("header", (0, "")), ("string", ""), ("u32", 0), ("u32", 0))
# after `text`: mesh_resource, mesh_file (filename, data), mesh_use_embedded_materials, all empty/false
_MARKER_TAIL = _aligned_bytes(("string", ""), ("string", ""), ("u32", 0)) + b"\x00"


@functools.lru_cache(maxsize=512)
def _label_format(start: int, head_len: int, text_len: int) -> tuple[str, int]:
    """struct format of a Marker without points or colours written at an offset that is `start` modulo 8;
    returns (format, end offset modulo 8)."""
    p1 = _pad(start, 4)
    o = start + p1 + head_len
    p2 = _pad(o, 4)
    o += p2 + 12
    p3 = _pad(o, 8)
    o += p3 + 80 + 16 + 8 + 1
    p4 = _pad(o, 4)
    o += p4 + 8 + len(_MARKER_MIDDLE) + 4 + text_len + 1
    p5 = _pad(o, 4)
    o += p5 + len(_MARKER_TAIL)
    return (f"<{p1}x{head_len}s{p2}x3i{p3}x10d4f2i?{p4}xII{len(_MARKER_MIDDLE)}sI{text_len + 1}s{p5}x"
            f"{len(_MARKER_TAIL)}s"), o % 8


def marker_array_cdr(det: Detections, frame_id: str, lifetime_ns: int = 1_000_000_000, ns: str = "simdistill") -> bytes:
    """CDR of markers.detections_to_markers(f, det, frame_id, lifetime_ns, ns)."""
    specs = marker_specs(det)
    w = _Writer()
    w.u32(len(specs))
    head_w = _Writer()  # header + ns, written from an aligned offset (all 4-byte items)
    head_w.header(det.stamp_ns, frame_id)
    head_w.string(ns)
    head = bytes(head_w.buf[4:])
    life = divmod(int(lifetime_ns), 1_000_000_000)
    for m in specs:
        life_m = life if m.action == ADD else (0, 0)  # lifetime: int32 sec, uint32 nanosec (< 1e9 fits)
        if not len(m.points) and not len(m.colors):  # labels (and DELETEALL): one pack each
            text = m.text.encode()
            fmt, _ = _label_format((len(w.buf) - 4) % 8, len(head), len(text))
            w.buf += struct.pack(fmt, head, m.id, m.type, m.action, *m.position, 0.0, 0.0, 0.0, 1.0, *m.scale,
                                 *m.rgba, *life_m, False, 0, 0, _MARKER_MIDDLE, len(text) + 1, text, _MARKER_TAIL)
            continue
        w.align(4)
        w.buf += head
        w.i32s(m.id, m.type, m.action)
        w.f64s(*m.position, 0.0, 0.0, 0.0, 1.0, *m.scale)
        w.f32s(*m.rgba)
        w.i32s(*life_m)
        w.boolean(False)  # frame_locked
        w.u32(len(m.points))
        if len(m.points):
            w.align(8)
            w.buf += np.ascontiguousarray(m.points, dtype="<f8").tobytes()
        w.u32(len(m.colors))
        w.buf += np.ascontiguousarray(m.colors, dtype="<f4").tobytes()
        w.buf += _MARKER_MIDDLE
        w.string(m.text)
        w.align(4)
        w.buf += _MARKER_TAIL
    return w.getvalue()
