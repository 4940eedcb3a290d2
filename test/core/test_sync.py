"""core/sync: set assembly (slop, skew, silent cameras, order, duplicates) and the newest-wins slot."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from simdistill_ros.core.sync import CameraSet, FrameSync, LatestSlot, SyncError, SyncPolicy

CAMS = ("A", "B", "C")
MS = 1_000_000


def policy(**kw: object) -> SyncPolicy:
    args = dict(cameras=CAMS, anchor="A", slop_ns=20 * MS, max_skew_ns=30 * MS, timeout_ns=100 * MS)
    args.update(kw)
    return SyncPolicy(**args)  # type: ignore[arg-type]


def feed(sync: FrameSync[str], msgs: list[tuple[str, int]]) -> list[CameraSet[str]]:
    out = []
    for cam, t in msgs:
        out += sync.add(cam, t, f"{cam}@{t}")
    return out


def test_complete_set_leaves_when_its_last_camera_arrives() -> None:
    sync: FrameSync[str] = FrameSync(policy())
    assert feed(sync, [("A", 1000 * MS), ("B", 1005 * MS)]) == []
    sets = feed(sync, [("C", 1010 * MS)])
    assert len(sets) == 1
    s = sets[0]
    assert s.stamp_ns == 1000 * MS and s.payloads == ("A@1000000000", "B@1005000000", "C@1010000000")
    assert s.valid == (True, True, True) and s.skew_ns == 10 * MS
    assert sync.stats.emitted == 1 and sync.pending == 0


def test_nearest_message_within_slop_is_taken_and_consumed() -> None:
    sync: FrameSync[str] = FrameSync(policy())
    # B has two candidates before the anchor; the nearer wins. C arrives after: nearest of 990 / 1003
    sets = feed(sync, [("B", 970 * MS), ("B", 995 * MS), ("C", 990 * MS), ("A", 1000 * MS), ("C", 1003 * MS),
                       ("B", 1030 * MS)])
    assert [s.payloads for s in sets] == [("A@1000000000", "B@995000000", "C@1003000000")]
    # consumed: the next anchor cannot reuse B@995 or C@1003 even though they are within its slop
    sets = feed(sync, [("A", 1015 * MS), ("C", 1200 * MS)])
    assert len(sets) == 0  # dropped: C@1200 is far outside; B@1030 is within slop but C is missing
    assert sync.stats.dropped_missing == 1 and "C" in sync.stats.last_drop


def test_silent_camera_drop_policy_waits_timeout_then_drops() -> None:
    sync: FrameSync[str] = FrameSync(policy(missing="drop"))
    msgs = []
    for k in range(5):
        t = (1000 + 50 * k) * MS
        msgs += [("A", t), ("B", t + 2 * MS)]  # C is silent
    sets = feed(sync, msgs)
    assert sets == []
    # the anchors older than the newest stamp (1202 ms) - timeout (100 ms) were decided: 1000, 1050, 1100
    assert sync.stats.dropped_missing == 3 and sync.stats.missing_by_camera["C"] == 3
    assert sync.pending == 2
    assert sync.flush() == [] and sync.stats.dropped_missing == 5


def test_silent_camera_mask_policy_emits_partial_sets() -> None:
    sync: FrameSync[str] = FrameSync(policy(missing="mask"))
    msgs = []
    for k in range(4):
        t = (1000 + 50 * k) * MS
        msgs += [("A", t), ("B", t + 2 * MS)]
    sets = feed(sync, msgs) + sync.flush()
    assert [s.stamp_ns for s in sets] == [(1000 + 50 * k) * MS for k in range(4)]
    assert all(s.valid == (True, True, False) and s.missing == ("C",) for s in sets)
    assert sync.stats.partial == 4 and sync.stats.emitted == 4


def test_skew_beyond_max_skew_drops_the_set() -> None:
    sync: FrameSync[str] = FrameSync(policy(missing="mask"))
    # B 18 ms before, C 18 ms after the anchor: each within slop (20 ms) but the spread is 36 > 30 ms
    sets = feed(sync, [("B", 982 * MS), ("A", 1000 * MS), ("C", 1018 * MS)])
    assert sets == [] and sync.pending == 1  # B may still send something nearer than 982
    sets = feed(sync, [("B", 1040 * MS)])  # it does not (40 ms away): the set is decided, and too skewed
    assert sets == [] and sync.stats.dropped_skew == 1 and "36.0 ms" in sync.stats.last_drop


def test_camera_outside_slop_is_missing() -> None:
    sync: FrameSync[str] = FrameSync(policy(missing="mask"))
    sets = feed(sync, [("A", 1000 * MS), ("B", 1001 * MS), ("C", 1025 * MS)])
    assert len(sets) == 1 and sets[0].missing == ("C",)


def test_out_of_order_and_duplicate_stamps_are_refused_and_counted() -> None:
    sync: FrameSync[str] = FrameSync(policy())
    feed(sync, [("A", 1000 * MS), ("B", 1000 * MS)])
    with pytest.raises(SyncError, match="duplicate"):
        sync.add("B", 1000 * MS, "again")
    with pytest.raises(SyncError, match="out of order"):
        sync.add("A", 900 * MS, "late")
    with pytest.raises(SyncError, match="'Z'"):
        sync.add("Z", 1, "x")
    assert sync.stats.duplicates == 1 and sync.stats.out_of_order == 1
    sets = feed(sync, [("C", 1001 * MS)])  # the refused messages changed nothing
    assert [s.payloads for s in sets] == [("A@1000000000", "B@1000000000", "C@1001000000")]


def test_sets_do_not_depend_on_arrival_order_across_cameras() -> None:
    """Random jittered 12 Hz streams, delivered in random cross-camera interleavings (each camera in order),
    give the same sets as delivery sorted by stamp."""
    rng = np.random.default_rng()
    streams = {c: sorted(int(k * 83 * MS + rng.integers(0, 25 * MS)) for k in range(30) if rng.uniform() > 0.1)
               for c in CAMS}

    def run(order: list[tuple[str, int]]) -> list[tuple[int, tuple[str | None, ...]]]:
        sync: FrameSync[str] = FrameSync(policy(missing="mask", timeout_ns=10_000 * MS, queue_size=64))
        return [(s.stamp_ns, s.payloads) for s in feed(sync, order) + sync.flush()]

    ref = run(sorted(((c, t) for c, ts in streams.items() for t in ts), key=lambda m: m[1]))
    assert len(ref) >= 10
    for _ in range(5):
        queues = {c: list(ts) for c, ts in streams.items()}
        order = []
        while any(queues.values()):
            c = rng.choice([c for c in CAMS if queues[c]])
            order.append((str(c), queues[c].pop(0)))
        assert run(order) == ref
    for stamp, payloads in ref:  # and every set respects slop and skew
        ts = [int(p.split("@")[1]) for p in payloads if p is not None]
        assert all(abs(t - stamp) <= 20 * MS for t in ts) and max(ts) - min(ts) <= 30 * MS


def test_policy_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="anchor"):
        SyncPolicy(cameras=CAMS, anchor="Q")
    with pytest.raises(ValueError, match="missing"):
        SyncPolicy(cameras=CAMS, anchor="A", missing="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cameras"):
        SyncPolicy(cameras=("A", "A"), anchor="A")


def test_latest_slot_newest_wins_and_counts_skipped() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.get(timeout=0.1) == 4 and slot.skipped == 4
    assert slot.get(timeout=0.01) is None
    got: list[int | None] = []
    worker = threading.Thread(target=lambda: got.append(slot.get(timeout=5.0)))
    worker.start()
    slot.put(7)
    worker.join(5.0)
    assert got == [7]
    closer = threading.Thread(target=lambda: got.append(slot.get(timeout=5.0)))
    closer.start()
    slot.close()
    closer.join(5.0)
    assert got == [7, None] and slot.closed
