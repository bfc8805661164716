"""CheckpointStore and CheckpointSaver on a real directory and real shared
memory: keep/prune, crash mid-write (a real SIGKILL), corrupted files, the
restore-file format and copying from a segment."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from control.state import checkpoint
from control.state.checkpoint import (
    HEADER_SIZE,
    CheckpointFileError,
    CheckpointSaver,
    CheckpointStore,
    file_name,
    read_checkpoint_file,
    write_restore_file,
)
from rtcore import _core
from rtcore.segment import Segment

ROOT = Path(__file__).resolve().parents[2]


EPOCH = 3


def fname(seq: int) -> str:
    """The store's name for a checkpoint of meta(seq) (origin 0, epoch EPOCH)."""
    return file_name(seq, EPOCH)


def meta(seq: int, size: int = 100, task_id: int = 7) -> dict[str, int]:
    return {
        "seq": seq,
        "cycle": seq * 10,
        "mono_ns": 1_000_000 + seq,
        "epoch": EPOCH,
        "task_id": task_id,
        "state_size": size,
        "crc": 0,
    }


def state(seq: int, size: int = 100) -> bytes:
    return bytes((seq + i) & 0xFF for i in range(size))


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


class Reports:
    """on_corrupt callback that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, path: str, reason: str) -> None:
        self.calls.append((path, reason))


def test_save_keeps_the_newest_and_skips_older(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), keep=3)
    for seq in range(1, 7):
        assert store.save(meta(seq), state(seq)) == str(tmp_path / fname(seq))
    assert names(tmp_path) == [fname(s) for s in (4, 5, 6)]
    assert store.save(meta(6), state(6)) is None
    assert store.save(meta(2), state(2)) is None
    assert names(tmp_path) == [fname(s) for s in (4, 5, 6)]

    got = store.load_newest()
    assert got is not None
    m, data = got
    assert data == state(6)
    assert store.newest_path() == (6, str(tmp_path / fname(6)))
    assert {k: m[k] for k in ("seq", "cycle", "mono_ns", "epoch", "task_id", "state_size")} == {
        k: v for k, v in meta(6).items() if k != "crc"
    }

    info = store.info()
    assert info["newest_seq"] == 6
    assert [f["seq"] for f in info["files"]] == [4, 5, 6]
    assert [f["cycle"] for f in info["files"]] == [40, 50, 60]
    assert all(f["size"] == HEADER_SIZE + 100 for f in info["files"])
    assert info["total_bytes"] == 3 * (HEADER_SIZE + 100)
    assert all(f["saved_ns"] > 1.6e18 for f in info["files"])
    assert info["corrupt"] == []


def test_a_new_store_continues_from_the_files_on_disk(tmp_path: Path) -> None:
    CheckpointStore(str(tmp_path), keep=2).save(meta(9), state(9))
    store = CheckpointStore(str(tmp_path), keep=2)
    assert store.save(meta(9), state(9)) is None
    assert store.save(meta(10), state(10)) is not None
    assert store.info()["newest_seq"] == 10


def test_empty_store(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "new" / "dir"))
    assert store.load_newest() is None
    assert store.newest_path() is None
    assert store.info() == {
        "directory": str(tmp_path / "new" / "dir"),
        "files": [],
        "newest_seq": 0,
        "total_bytes": 0,
        "corrupt": [],
    }


def test_load_newest_of_one_task(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), keep=10)
    store.save(meta(1, task_id=1), state(1))
    store.save(meta(2, task_id=2), state(2))
    store.save(meta(3, task_id=1), state(3))
    store.save(meta(4, task_id=2), state(4))
    assert store.load_newest(task_id=1)[0]["seq"] == 3  # type: ignore[index]
    assert store.load_newest(task_id=2)[0]["seq"] == 4  # type: ignore[index]
    assert store.load_newest(task_id=99) is None
    assert len(names(tmp_path)) == 4, "files of other tasks are valid, not moved aside"


CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    from control.state import checkpoint
    point, directory = sys.argv[1], sys.argv[2]
    meta = {"seq": 0, "cycle": 0, "mono_ns": 0, "epoch": 3, "task_id": 7, "state_size": 4096}
    store = checkpoint.CheckpointStore(directory)
    store.save(dict(meta, seq=1), b"\\x01" * 4096)

    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)

    # die with the temp file written but not synced, or synced but not renamed
    setattr(checkpoint.os, point, die)
    store.save(dict(meta, seq=2), b"\\x02" * 4096)
    """
)


@pytest.mark.parametrize("point", ["fsync", "rename"])
def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path: Path, point: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, point, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = names(tmp_path)
    assert fname(1) in left
    assert fname(2) not in left
    temps = [n for n in left if n.endswith(".tmp")]
    assert len(temps) == 1, left

    reports = Reports()
    store = CheckpointStore(str(tmp_path), on_corrupt=reports)
    assert names(tmp_path) == [fname(1)], "the temp file is cleaned"
    got = store.load_newest()
    assert got is not None and got[0]["seq"] == 1 and got[1] == b"\x01" * 4096
    assert reports.calls == []
    assert store.save({**meta(2, size=4096)}, b"\x02" * 4096) is not None


def test_a_failed_write_raises_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(str(tmp_path))
    store.save(meta(1), state(1))

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "fsync", disk_full)
    with pytest.raises(OSError) as e:
        store.save(meta(2), state(2))
    assert e.value.errno == errno.ENOSPC
    assert names(tmp_path) == [fname(1)]


def flip_state_byte(p: Path) -> None:
    blob = bytearray(p.read_bytes())
    blob[HEADER_SIZE + 17] ^= 0x40
    p.write_bytes(bytes(blob))


def flip_header_byte(p: Path) -> None:
    blob = bytearray(p.read_bytes())
    blob[21] ^= 0x01  # cycle
    p.write_bytes(bytes(blob))


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-10])


def truncate_header(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:30])


def zero_length(p: Path) -> None:
    p.write_bytes(b"")


def wrong_magic(p: Path) -> None:
    p.write_bytes(b"NOTMINE!" + p.read_bytes()[8:])


def trailing_bytes(p: Path) -> None:
    p.write_bytes(p.read_bytes() + b"\0")


def wrong_version(p: Path) -> None:
    blob = bytearray(p.read_bytes())
    blob[8] = 7
    p.write_bytes(bytes(blob))


def renamed(p: Path) -> None:
    # a valid file of seq 3 under the name of seq 3 is replaced by seq 2's bytes
    p.write_bytes((p.parent / fname(2)).read_bytes())


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (flip_state_byte, "CRC mismatch"),
        (flip_header_byte, "CRC mismatch"),
        (truncate, "truncated"),
        (truncate_header, "truncated"),
        (zero_length, "empty file"),
        (wrong_magic, "not an rtcore checkpoint"),
        (trailing_bytes, "trailing bytes"),
        (wrong_version, "format version 7"),
        (renamed, "file name says (epoch, seq) (3, 3), header says (3, 2)"),
    ],
)
def test_a_corrupted_newest_file_is_reported_moved_aside_and_skipped(
    tmp_path: Path, damage, reason: str
) -> None:
    reports = Reports()
    store = CheckpointStore(str(tmp_path), on_corrupt=reports)
    for seq in (1, 2, 3):
        store.save(meta(seq), state(seq))
    newest = tmp_path / fname(3)
    damage(newest)

    got = store.load_newest()
    assert got is not None
    assert got[0]["seq"] == 2 and got[1] == state(2)
    assert len(reports.calls) == 1
    assert reports.calls[0][0] == str(newest)
    assert reason in reports.calls[0][1]
    assert not newest.exists()
    assert (tmp_path / (fname(3) + ".corrupt")).exists()

    assert store.load_newest()[0]["seq"] == 2  # type: ignore[index]
    assert store.newest_path() == (2, str(tmp_path / fname(2)))
    assert len(reports.calls) == 1, "a file is reported once, not at every load"
    info = store.info()
    assert info["newest_seq"] == 2
    assert info["corrupt"] == [str(newest) + ".corrupt"]
    # the seq is free again: the segment's copy of checkpoint 3 can be saved
    assert store.save(meta(3), state(3)) is not None


def test_every_file_corrupt_gives_none(tmp_path: Path) -> None:
    reports = Reports()
    store = CheckpointStore(str(tmp_path), on_corrupt=reports)
    for seq in (1, 2):
        store.save(meta(seq), state(seq))
        zero_length(tmp_path / fname(seq))
    assert store.load_newest() is None
    assert store.newest_path() is None
    assert [Path(p).name for p, _ in reports.calls] == [
        fname(2),
        fname(1),
    ]


def test_default_on_corrupt_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(str(tmp_path))
    store.save(meta(1), state(1))
    wrong_magic(tmp_path / fname(1))
    assert store.load_newest() is None
    assert "not an rtcore checkpoint" in caplog.text


def test_restore_file_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "restore.bin")
    assert write_restore_file(meta(42, size=16384), state(42, 16384), path) == path
    m, data = read_checkpoint_file(path)
    assert data == state(42, 16384)
    assert (m["seq"], m["cycle"], m["epoch"], m["task_id"], m["state_size"]) == (
        42,
        420,
        3,
        7,
        16384,
    )
    assert names(tmp_path) == ["restore.bin"], "no temp file left next to it"

    # the store reads what write_restore_file writes, and the other way round
    store = CheckpointStore(str(tmp_path / "store"))
    store.save(m, data)
    assert read_checkpoint_file(store.info()["files"][0]["path"])[1] == data


def test_read_checkpoint_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointFileError) as e:
        read_checkpoint_file(str(tmp_path / "missing.bin"))
    assert "cannot read" in e.value.reason and e.value.path.endswith("missing.bin")

    path = tmp_path / "f.bin"
    write_restore_file(meta(1), state(1), str(path))
    flip_state_byte(path)
    with pytest.raises(CheckpointFileError, match="CRC mismatch"):
        read_checkpoint_file(str(path))


def test_state_size_must_match_the_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="meta says 100"):
        CheckpointStore(str(tmp_path)).save(meta(1), b"short")


def test_the_reader_imports_nothing_heavy() -> None:
    code = (
        "import sys; from control.state.checkpoint import read_checkpoint_file; "
        "heavy = {'numpy', 'prometheus_client', 'grpc', 'loguru'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_saver_copies_new_checkpoints_from_a_segment(
    tmp_path: Path, shm_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg = Segment.create(shm_name)
    try:
        store = CheckpointStore(str(tmp_path), keep=2)
        clock = Clock()
        saver = CheckpointSaver(store, interval_ms=200, clock=clock)
        assert saver.poll(seg) is None, "nothing written yet"

        _core.write_checkpoint(seg.buf, 1, 1, 10, 5, 77, state(1, 3000))
        path = saver.poll(seg)
        assert path is not None and Path(path).name == file_name(1, 5)
        assert saver.poll(seg) is None, "same seq: nothing to save"

        _core.write_checkpoint(seg.buf, 2, 2, 20, 5, 77, state(2, 3000))
        clock.now += 0.1
        assert saver.poll(seg) is None, "within interval_ms of the last save"
        clock.now += 0.15
        assert saver.poll(seg) is not None
        assert saver.saves == 2 and saver.errors == 0 and saver.last_seq == 2

        m, data = store.load_newest(task_id=77)  # type: ignore[misc]
        seg_meta, seg_data = seg.newest_checkpoint()  # type: ignore[misc]
        assert data == seg_data == state(2, 3000)
        for k in ("seq", "cycle", "mono_ns", "epoch", "task_id", "state_size"):
            assert m[k] == seg_meta[k], k

        def disk_full(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        _core.write_checkpoint(seg.buf, 3, 3, 30, 5, 77, state(3, 3000))
        clock.now += 1
        with monkeypatch.context() as m_ctx:
            m_ctx.setattr(checkpoint.os, "fsync", disk_full)
            assert saver.poll(seg) is None
        assert saver.errors == 1 and "No space left" in saver.last_error
        assert saver.last_seq == 2
        assert saver.poll(seg) is None, "a failed save also waits interval_ms"
        clock.now += 1
        assert saver.poll(seg) is not None
        assert saver.saves == 3 and saver.last_seq == 3
        assert [f["seq"] for f in store.info()["files"]] == [2, 3]
    finally:
        seg.close()
        seg.unlink()


def test_another_tasks_checkpoints_are_set_aside_not_blocking(tmp_path) -> None:
    store = CheckpointStore(str(tmp_path / "ck"), keep=3)
    for seq in (40, 41, 42):
        store.save(meta(seq, task_id=111), state(seq))
    # the node now runs another task: its sequence starts again at 1
    assert store.save(meta(1, task_id=222), state(1)) is not None
    assert store.load_newest()[0]["task_id"] == 222
    assert names(tmp_path / "ck" / "previous") == [fname(s) for s in (40, 41, 42)]
    # the same task going backwards is still refused
    assert store.save(meta(1, task_id=222), state(1)) is None


def test_saver_follows_a_task_change(tmp_path) -> None:
    class Source:
        def __init__(self) -> None:
            self.value = (meta(50, task_id=1), state(50))

        def newest_checkpoint(self):
            return self.value

    store = CheckpointStore(str(tmp_path / "ck"))
    saver = CheckpointSaver(store, interval_ms=0)
    src = Source()
    assert saver.poll(src) is not None
    src.value = (meta(2, task_id=9), state(2))
    assert saver.poll(src) is not None, "a new task's first checkpoint is saved"
    assert store.load_newest()[0]["seq"] == 2


def test_files_are_keyed_by_origin_and_epoch_and_a_standbys_own_state_is_not_kept(
    tmp_path: Path, shm_name: str
) -> None:
    """Two nodes' sequences never collide; the newest is the highest (epoch,
    seq) whoever wrote it; a shadow checkpoint (a standby's own computation)
    never masquerades as the primary's state on disk."""
    store = CheckpointStore(str(tmp_path), keep=10)
    a, b = 0xA, 0xB
    store.save(dict(meta(7), epoch=1, origin=a), state(7))
    store.save(dict(meta(8), epoch=2, origin=b), state(8))
    assert names(tmp_path) == [file_name(7, 1, a), file_name(8, 2, b)]
    assert store.save(dict(meta(9), epoch=1, origin=a), state(9)) is None, "older epoch"
    newest = store.newest_meta()
    assert newest is not None and (newest["origin"], newest["epoch"], newest["seq"]) == (b, 2, 8)

    seg = Segment.create(shm_name)
    try:
        saver = CheckpointSaver(store, interval_ms=0)
        _core.write_checkpoint(seg.buf, 1, 20, 200, 3, 77, state(20), origin=a, flags=1)
        assert saver.poll(seg) is None, "a shadow checkpoint is not saved"
        _core.write_checkpoint(seg.buf, 2, 21, 210, 3, 77, state(21), origin=a)
        saved = saver.poll(seg)
        assert saved is not None and Path(saved).name == file_name(21, 3, a)
    finally:
        seg.close()
        seg.unlink()


def test_version_1_files_are_still_read(tmp_path: Path) -> None:
    """Files written before origins existed (64-byte header, name by seq only)
    restore as origin 0, epoch as recorded."""
    from rtcore._core import crc32c
    from rtcore.ckptfile import HEADER_V1, MAGIC

    data = state(4)
    head = HEADER_V1.pack(MAGIC, 1, 4, 40, 2, 7, len(data), 123, 456, 0)[:60]
    crc = crc32c(data, crc32c(head))
    (tmp_path / "ckpt-00000000000000000004.bin").write_bytes(
        head + crc.to_bytes(4, "little") + data
    )
    store = CheckpointStore(str(tmp_path))
    got = store.load_newest()
    assert got is not None
    assert (got[0]["seq"], got[0]["epoch"], got[0]["origin"], got[1]) == (4, 2, 0, data)
