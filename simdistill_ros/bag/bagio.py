"""Reading and writing rosbag2 files with rosbags: the type store, the metadata version, atomic outputs and a
reader that survives truncated or corrupt bags.

Metadata version: rosbags writes version 8 or 9. rosbag2's own sources decide which one both targeted
distributions play (checked on the humble and jazzy branches of ros2/rosbag2):
- Humble (rosbag2_storage/src/rosbag2_storage/metadata_io.cpp) writes version 5 and reads any version
  without a check, but reads `offered_qos_profiles` as a YAML *string* with integer policies, which is what
  version 8 writes. Version 9 writes it as a YAML sequence with policy names, which Humble cannot convert.
- Jazzy (rosbag2_storage/include/rosbag2_storage/yaml.hpp, qos.cpp) writes version 9 and reads 8 (the
  string form, integer policies auto-detected), and from version 6 on it requires `custom_data` to be a
  map: a `null` there fails to convert, so every bag written here carries one entry.
Humble's sqlite3 plugin selects the topic columns it knows by name, so the newer columns rosbags adds do
not disturb it. So: version 8, always with custom_data.

rosbags' Writer refuses an existing path; the bag is written inside a temporary folder beside the output
and renamed onto it at the end (`atomic_bag`), so a failed run leaves no half bag, and an existing output is kept
unless force.
"""
from __future__ import annotations

import functools
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simdistill_ros.ros.convert import MessageFactory
from simdistill_ros.ros.msgdefs import register_with

METADATA_VERSION = 8
STORAGES = ("mcap", "sqlite3")


class BagError(ValueError):
    """A bag that cannot be read or written as asked; the text names the bag, topic or record."""


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """rosbags' Jazzy type store plus vision_msgs and tf2_msgs from simdistill_ros/ros/msg."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    register_with(store)
    return store


def factory() -> MessageFactory:
    """A MessageFactory of rosbags' message classes (for ros/convert and ros/markers)."""
    store = typestore()
    return MessageFactory(lambda name: store.types[name])


def qos(reliable: bool = True, transient_local: bool = False, depth: int = 10) -> Any:
    """A rosbags Qos profile for a topic's offered_qos_profiles (what `ros2 bag play` offers again)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    unspecified = QosTime(0, 0)  # rmw's "default" durations (deadline, lifespan, lease)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE, unspecified, unspecified,
               QosLiveliness.AUTOMATIC, unspecified, False)


def _temp_path(out: Path) -> Path:
    return out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


@contextmanager
def atomic_bag(out: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a path `<temporary folder beside out>/<out's name>` that does not exist yet (rosbags creates the
    bag folder, and names its storage file after it); on success it is renamed onto `out`, on failure
    deleted. An existing `out` is a FileExistsError unless force (then replaced only at the end)."""
    out = Path(out)
    if os.path.lexists(out) and not force:
        raise FileExistsError(f"output bag {out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    holder = _temp_path(out)
    holder.mkdir()
    try:
        yield holder / out.name
        if os.path.lexists(out):
            if not force:
                raise FileExistsError(f"output bag {out} appeared while writing; pass --force to replace it")
            os.replace(out, holder / f"{out.name}.old")
        os.replace(holder / out.name, out)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


class BagWriter:
    """A rosbags Writer (metadata version 8) that adds each topic once and writes message objects or CDR bytes.

    Use as a context manager on a path that does not exist (see atomic_bag)."""

    def __init__(self, path: Path, storage: str, custom_data: dict[str, str]) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise BagError(f"storage {storage!r}: expected one of {', '.join(STORAGES)}")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(path, version=METADATA_VERSION, storage_plugin=plugin)
        for key, value in {"generator": "simdistill_ros", **custom_data}.items():
            self._writer.set_custom_data(key, value)
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._writer.__exit__(exc_type, exc, tb)

    def add_topic(self, topic: str, msgtype: str, reliable: bool = True, transient_local: bool = False,
                  definition: tuple[str, str] | None = None) -> None:
        """Add a topic once; definition: (message definition text, RIHS01 hash) of a type the store lacks."""
        if topic in self._connections:
            return
        extra = {"typestore": typestore()} if definition is None else {"msgdef": definition[0], "rihs01": definition[1]}
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, offered_qos_profiles=[qos(reliable, transient_local)], **extra)
        self.counts[topic] = 0

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """Serialise a rosbags message object and write it at log time stamp_ns."""
        conn = self._connections[topic]
        self.write_raw(topic, stamp_ns, typestore().serialize_cdr(msg, conn.msgtype))

    def write_raw(self, topic: str, stamp_ns: int, data: bytes | memoryview) -> None:
        self._writer.write(self._connections[topic], int(stamp_ns), data)
        self.counts[topic] += 1


@dataclass
class ReadReport:
    """What a BagReader got through: messages per topic, records skipped, and the first bad record."""

    read: dict[str, int] = field(default_factory=dict)
    undecodable: dict[str, int] = field(default_factory=dict)
    unknown_types: dict[str, str] = field(default_factory=dict)
    first_bad_record: str = ""
    stopped_early: bool = False

    @property
    def total(self) -> int:
        return sum(self.read.values())

    def as_dict(self) -> dict[str, Any]:
        return {"messages_read": dict(self.read), "undecodable": dict(self.undecodable),
                "unknown_types": dict(self.unknown_types), "first_bad_record": self.first_bad_record,
                "stopped_early": self.stopped_early}


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_ns: int
    raw: bytes
    msg: Any


class BagReader:
    """Messages of a bag in log-time order, deserialised with the project's type store.

    Never raises once open: a record that does not deserialise is skipped and counted; a storage error
    (a truncated mcap, a corrupt sqlite3 page) ends the iteration, and `report` says what was read and
    where it stopped. Topics of types the store lacks are listed and skipped. BagError when the bag
    cannot be opened at all."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        self.report = ReadReport()
        self._reader: Any = None
        self._stream: _McapStream | None = None
        try:
            self._reader = Reader(self.path)
            self._reader.open()
            connections = [(c.topic, c.msgtype, int(c.msgcount)) for c in self._reader.connections]
        except Exception as e:  # rosbags raises ReaderError, and yaml/sqlite/mcap errors from below it
            mcaps = sorted(self.path.glob("*.mcap")) if self.path.is_dir() else [self.path]
            if len(mcaps) != 1 or mcaps[0].suffix != ".mcap":
                raise BagError(f"bag {self.path} cannot be opened: {type(e).__name__}: {e}") from e
            # a truncated mcap (no summary at its end): read its records in file order up to the break
            self._reader = None
            self._stream = _McapStream(mcaps[0])
            self.report.first_bad_record = f"bag {self.path}: {type(e).__name__}: {e}; read in file order instead"
            connections = self._stream.connections()
        store = typestore()
        self.topics: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        for topic, msgtype, count in connections:
            self._counts[topic] = self._counts.get(topic, 0) + count
            if msgtype in store.types:
                self.topics[topic] = msgtype
            else:
                self.report.unknown_types[topic] = msgtype

    @property
    def counts(self) -> dict[str, int]:
        """Messages per topic, as the bag's metadata (or, for a truncated mcap, its readable part) states them."""
        return dict(self._counts)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def messages(self, topics: set[str] | None = None) -> Iterator[BagMessage]:
        store = typestore()
        wanted = {t for t in self.topics if topics is None or t in topics}
        last = "the start of the bag"
        if self._stream is not None:
            it = self._stream.messages(wanted)
        else:
            it = ((c.topic, c.msgtype, t, raw) for c, t, raw in self._reader.messages(
                connections=[c for c in self._reader.connections if c.topic in wanted]))
        while True:
            try:
                topic, msgtype, log_ns, raw = next(it)
            except StopIteration:
                return
            except Exception as e:  # a storage-level failure: keep what was read
                self.report.stopped_early = True
                self.report.first_bad_record = (f"bag {self.path}: reading stopped after {self.report.total} messages "
                                                f"(last good: {last}): {type(e).__name__}: {e}")
                return
            if topic not in wanted:
                continue
            try:
                msg = store.deserialize_cdr(raw, msgtype)
            except Exception as e:  # a corrupt record: skip it
                self.report.undecodable[topic] = self.report.undecodable.get(topic, 0) + 1
                if not self.report.first_bad_record:
                    self.report.first_bad_record = (f"bag {self.path} topic {topic} at log time {log_ns} "
                                                    f"({msgtype}): {type(e).__name__}: {e}")
                continue
            self.report.read[topic] = self.report.read.get(topic, 0) + 1
            last = f"topic {topic} at log time {log_ns}"
            yield BagMessage(topic, msgtype, int(log_ns), bytes(raw), msg)


class _McapStream:
    """The records of an mcap file read front to back with the mcap library (no summary section needed), for a
    file cut short: Channel and Schema records give the topics, Message records the data, until the break."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _records(self) -> Iterator[Any]:
        from mcap.stream_reader import StreamReader

        with self.path.open("rb") as fh:
            yield from StreamReader(fh, skip_magic=False).records

    def connections(self) -> list[tuple[str, str, int]]:
        """(topic, type, messages readable) of every channel before the break."""
        from mcap.records import Channel, Message, Schema

        schemas: dict[int, str] = {}
        channels: dict[int, list[Any]] = {}
        try:
            for rec in self._records():
                if isinstance(rec, Schema):
                    schemas[rec.id] = rec.name
                elif isinstance(rec, Channel):
                    channels[rec.id] = [rec.topic, schemas.get(rec.schema_id, ""), 0]
                elif isinstance(rec, Message) and rec.channel_id in channels:
                    channels[rec.channel_id][2] += 1
        except Exception:  # the break: what came before it is known
            pass
        return [(t, m, n) for t, m, n in channels.values()]

    def messages(self, topics: set[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, type, log time, CDR bytes) in file order; the error at the break propagates."""
        from mcap.records import Channel, Message, Schema

        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}
        for rec in self._records():
            if isinstance(rec, Schema):
                schemas[rec.id] = rec.name
            elif isinstance(rec, Channel):
                channels[rec.id] = (rec.topic, schemas.get(rec.schema_id, ""))
            elif isinstance(rec, Message) and rec.channel_id in channels:
                topic, msgtype = channels[rec.channel_id]
                if topic in topics:
                    yield topic, msgtype, int(rec.log_time), bytes(rec.data)
