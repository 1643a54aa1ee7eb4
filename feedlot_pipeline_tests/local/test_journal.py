"""The journal behind the durable local lake, on its own (no moto): records, torn tails,
compaction, and a crash in the middle of one."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedlot_pipeline.local.journal import Journal, JournalError, encode

KINDS = ("bucket", "object", "queue", "message")


def obj(bucket: str, key: str, body: bytes = b"", op: str = "put") -> bytes:
    header = {"k": "object", "id": ["acct", "aws", bucket, key]}
    if op == "del":
        header["op"] = "del"
    return encode(header, body)


def bucket(name: str, op: str = "put") -> bytes:
    header = {"k": "bucket", "id": ["acct", "aws", name]}
    if op == "del":
        header["op"] = "del"
    return encode(header)


def live(journal: Journal) -> dict[tuple, bytes]:
    index = journal.scan()
    return {
        (header["k"], *header["id"]): body for header, body in journal.replay_order(index, KINDS)
    }


def opened(folder: Path) -> Journal:
    journal = Journal(folder)
    journal.open_segment(journal.scan(), {"test": True})
    return journal


def test_latest_record_wins_and_deletes_cascade(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    journal.append([bucket("lake"), obj("lake", "a", b"1"), obj("lake", "b", b"2")])
    journal.append([obj("lake", "a", b"1 again"), obj("lake", "b", op="del")])
    journal.append([bucket("gone"), obj("gone", "x", b"x"), bucket("gone", op="del")])
    journal.close()
    assert live(Journal(tmp_path)) == {
        ("bucket", "acct", "aws", "lake"): b"",
        ("object", "acct", "aws", "lake", "a"): b"1 again",
    }


def test_replay_puts_parents_first(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    journal.append([bucket("lake"), obj("lake", "a", b"1"), bucket("lake")])  # config changed
    journal.close()
    index = Journal(tmp_path).scan()
    kinds = [header["k"] for header, _ in Journal(tmp_path).replay_order(index, KINDS)]
    assert kinds == ["bucket", "object"]


def test_a_torn_tail_is_cut_off_and_appending_goes_on(tmp_path: Path) -> None:
    """A kill in the middle of a write: that record was never acknowledged; the rest stays."""
    journal = opened(tmp_path)
    journal.append([bucket("lake"), obj("lake", "kept", b"k" * 100)])
    journal.close()
    segment = sorted(tmp_path.glob("*.log"))[-1]
    whole = obj("lake", "torn", b"t" * 1000)
    with open(segment, "ab") as out:
        out.write(whole[: len(whole) // 2])
    index = Journal(tmp_path).scan()
    assert index.repaired_bytes == len(whole) // 2
    assert segment.stat().st_size == index.total_bytes  # cut back to the last whole record
    again = opened(tmp_path)
    again.append([obj("lake", "after", b"a")])
    again.close()
    assert set(live(Journal(tmp_path))) == {
        ("bucket", "acct", "aws", "lake"),
        ("object", "acct", "aws", "lake", "kept"),
        ("object", "acct", "aws", "lake", "after"),
    }


def test_damage_before_the_last_segment_is_refused_loudly(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    journal.append([bucket("lake"), obj("lake", "a", b"abc")])
    journal.close()
    opened(tmp_path).close()  # a second segment
    first = sorted(tmp_path.glob("*.log"))[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # a flipped bit in a record's body
    first.write_bytes(bytes(data))
    with pytest.raises(JournalError, match=f"{first.name} is damaged .* move the folder"):
        Journal(tmp_path).scan()


def test_compaction_keeps_exactly_the_live_records(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    journal.append([bucket("lake")])
    for round_ in range(5):
        journal.append([obj("lake", f"k{i}", f"{round_}-{i}".encode() * 50) for i in range(20)])
    journal.append([obj("lake", "k0", op="del")])
    journal.close()
    before = live(Journal(tmp_path))
    index = Journal(tmp_path).scan()
    assert index.total_bytes > 4 * index.live_bytes
    compacted = Journal(tmp_path).compact(index)
    assert [p.name for p in tmp_path.glob("*.log")] == [f"{compacted.segments[0]:08d}.log"]
    assert compacted.total_bytes < index.total_bytes / 4
    assert live(Journal(tmp_path)) == before
    assert len(before) == 1 + 19


def test_a_crash_between_snapshot_and_cleanup_loses_nothing(tmp_path: Path) -> None:
    """The snapshot is renamed into place, then the old segments go: a crash in between leaves
    both, and reading starts at the snapshot (removing what it replaced)."""
    journal = opened(tmp_path)
    journal.append([bucket("lake"), obj("lake", "a", b"1"), obj("lake", "b", b"2")])
    journal.append([obj("lake", "b", op="del")])
    journal.close()
    old = {p.name: p.read_bytes() for p in tmp_path.glob("*.log")}
    Journal(tmp_path).compact(Journal(tmp_path).scan())
    for name, data in old.items():  # as if the process died before removing them
        (tmp_path / name).write_bytes(data)
    (tmp_path / "99999999.log.tmp").write_bytes(b"half a snapshot")  # and another one cut short
    assert set(live(Journal(tmp_path))) == {
        ("bucket", "acct", "aws", "lake"),
        ("object", "acct", "aws", "lake", "a"),
    }
    assert len(list(tmp_path.glob("*.log"))) == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_should_compact_when_garbage_outweighs_live_data(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    journal.append([bucket("lake"), obj("lake", "a", b"x" * 1000)])
    for _ in range(10):
        journal.append([obj("lake", "b", b"y" * 1000)])
    journal.close()
    index = Journal(tmp_path).scan()
    assert not Journal(tmp_path).should_compact(index)  # too little to bother
    assert Journal(tmp_path).should_compact(index, min_garbage=1000)


def test_one_process_per_journal(tmp_path: Path) -> None:
    first = Journal(tmp_path)
    first.lock()
    with pytest.raises(JournalError, match="in use by another moto process"):
        Journal(tmp_path).lock()
    first.close()
    second = Journal(tmp_path)
    second.lock()  # free again
    second.close()


def test_fsync_mode_and_group_commit(tmp_path: Path) -> None:
    import threading

    journal = Journal(tmp_path, fsync=True)
    journal.open_segment(journal.scan(), {})
    threads = [
        threading.Thread(target=journal.append, args=([obj("lake", f"k{i}", b"v")],))
        for i in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    assert len(live(Journal(tmp_path))) == 16
