"""Durable copies of the RT loop's checkpoints, one file per checkpoint, in
the format of rtcore/ckptfile.py.

The store names files by the node that computed the state (origin), its
epoch and its sequence number, `ckpt-{origin:016x}-{epoch:010d}-{seq:020d}.bin`,
so sequences from different nodes never collide and "newest" is the highest
(epoch, seq). It writes each one to a temporary file that is fsynced and
renamed into place: a crash leaves either the whole file or none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from rtcore.ckptfile import (
    HEADER_SIZE,
    Checkpoint,
    CheckpointFileError,
    Meta,
    encode,
    parse_header,
    read_checkpoint_file,
)
from rtcore.enums import CKPT_SHADOW

_NAME = re.compile(r"^ckpt-([0-9a-f]{16})-(\d{10})-(\d{20})\.bin$")
_NAME_V1 = re.compile(r"^ckpt-(\d{20})\.bin$")  # before origin and epoch: (0, 0)
_TMP_PREFIX = ".ckpt-"
_TMP_SUFFIX = ".tmp"
CORRUPT_SUFFIX = ".corrupt"

log = logging.getLogger(__name__)


class CheckpointSource(Protocol):
    """What CheckpointSaver reads from: rtcore.segment.Segment, or a test double."""

    def newest_checkpoint(self) -> Checkpoint | None: ...


def file_name(seq: int, epoch: int = 0, origin: int = 0) -> str:
    return f"ckpt-{origin:016x}-{epoch:010d}-{seq:020d}.bin"


def _order(meta: Mapping[str, Any]) -> tuple[int, int]:
    return (int(meta.get("epoch", 0)), int(meta["seq"]))


def write_restore_file(meta: Mapping[str, Any], data: bytes, path: str) -> str:
    """Write one checkpoint atomically at path (for `python -m rtcore --restore-file`)."""
    _write_atomic(path, encode(meta, data, time.time_ns()), prefix=f".{os.path.basename(path)}.")
    return path


def _write_atomic(path: str, blob: bytes, prefix: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    # the rename is durable only once the directory entry itself is on disk
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _log_corrupt(path: str, reason: str) -> None:
    log.warning("checkpoint %s is unusable (%s); skipped and moved aside", path, reason)


class CheckpointStore:
    """The newest `keep` checkpoints of one node, as files in `directory`.

    Thread-safe: the agent saves from one thread and answers status from others.
    """

    def __init__(
        self,
        directory: str,
        keep: int = 5,
        on_corrupt: Callable[[str, str], None] = _log_corrupt,
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = directory
        self.keep = keep
        self.on_corrupt = on_corrupt
        self._lock = threading.Lock()
        self._unmovable: set[str] = set()
        # files already verified, by (path, mtime, size): status asks often,
        # and reading and CRC-checking the newest file each time is wasted
        self._verified: dict[tuple[str, int, int], tuple[Meta, bytes]] = {}
        os.makedirs(directory, exist_ok=True)
        self._remove_temp_files()

    def save(self, meta: Mapping[str, Any], data: bytes) -> str | None:
        """Write the checkpoint durably unless one with this seq or a newer one is
        already kept; returns the new file's path, or None if skipped. OSError
        if the disk refuses (nothing is left under the final name)."""
        with self._lock:
            kept = self._list()
            if kept and _order(meta) <= kept[-1][0]:
                if self._task_of(kept[-1][1]) in (None, meta["task_id"]):
                    return None
                # another task's checkpoints (the node now runs a different
                # task, whose sequence starts again at 1): set them aside
                self._archive(kept)
                kept = []
            name = file_name(meta["seq"], meta.get("epoch", 0), meta.get("origin", 0))
            path = os.path.join(self.directory, name)
            _write_atomic(path, encode(meta, data, time.time_ns()), prefix=_TMP_PREFIX)
            kept.append((_order(meta), path))
            for _, old in kept[: -self.keep]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old)
            return path

    def _epoch_of(self, path: str) -> int:
        try:
            with open(path, "rb") as f:
                return int(parse_header(f.read(HEADER_SIZE))["epoch"])
        except (OSError, CheckpointFileError):
            return 0

    def _task_of(self, path: str) -> int | None:
        try:
            with open(path, "rb") as f:
                return int(parse_header(f.read(HEADER_SIZE))["task_id"])
        except (OSError, CheckpointFileError):
            return None

    def _archive(self, kept: list[tuple[tuple[int, int], str]]) -> None:
        """Move a previous task's files to previous/ (replacing what was there)."""
        previous = os.path.join(self.directory, "previous")
        if os.path.isdir(previous):
            for name in os.listdir(previous):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(previous, name))
        os.makedirs(previous, exist_ok=True)
        for _, path in kept:
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, os.path.join(previous, os.path.basename(path)))
        log.warning("checkpoints of the previous task moved to %s", previous)

    def load_newest(self, task_id: int | None = None) -> Checkpoint | None:
        """The newest valid checkpoint (of task_id if given), or None. Unusable
        files met on the way are reported, moved aside and skipped."""
        with self._lock:
            found = self._newest_valid(task_id)
        return (found[1], found[2]) if found else None

    def newest_path(self) -> tuple[int, str] | None:
        """(seq, path) of the newest valid file, e.g. to pass as --restore-file;
        verified like load_newest."""
        with self._lock:
            found = self._newest_valid(None)
        return (found[1]["seq"], found[0]) if found else None

    def newest_meta(self) -> Meta | None:
        """The header of the newest valid file (epoch, seq, origin...), verified."""
        with self._lock:
            found = self._newest_valid(None)
        return found[1] if found else None

    def _newest_valid(self, task_id: int | None) -> tuple[str, Meta, bytes] | None:
        for order, path in reversed(self._list()):
            try:
                meta, data = self._read_verified(path)
                if _order(meta) != order:
                    raise CheckpointFileError(
                        f"file name says (epoch, seq) {order}, header says {_order(meta)}", path
                    )
            except CheckpointFileError as e:
                self._move_aside(path, e.reason)
                continue
            if task_id is None or meta["task_id"] == task_id:
                return path, meta, data
        return None

    def _read_verified(self, path: str) -> Checkpoint:
        try:
            st = os.stat(path)
        except OSError as e:
            raise CheckpointFileError(f"cannot read: {e.strerror}", path) from None
        key = (path, st.st_mtime_ns, st.st_size)
        if key not in self._verified:
            if len(self._verified) > 4 * self.keep:
                self._verified.clear()
            self._verified[key] = read_checkpoint_file(path)
        return self._verified[key]

    def info(self) -> dict[str, Any]:
        """Files kept, oldest first (seq, cycle, size, saved_ns, path; cycle and
        saved_ns are None if the header is unreadable), newest_seq (0: none),
        total_bytes, and the files moved aside as corrupt."""
        with self._lock:
            files = []
            for (epoch, seq), path in self._list():
                try:
                    with open(path, "rb") as f:
                        size = os.fstat(f.fileno()).st_size
                        head: Meta | None = parse_header(f.read(HEADER_SIZE))
                except (OSError, CheckpointFileError):
                    head = None
                    size = _size_or_zero(path)
                files.append(
                    {
                        "seq": seq,
                        "epoch": epoch,
                        "origin": head["origin"] if head else None,
                        "cycle": head["cycle"] if head else None,
                        "size": size,
                        "saved_ns": head["saved_ns"] if head else None,
                        "path": path,
                    }
                )
            corrupt = sorted(
                os.path.join(self.directory, n)
                for n in os.listdir(self.directory)
                if n.endswith(CORRUPT_SUFFIX)
            )
        return {
            "directory": self.directory,
            "files": files,
            "newest_seq": files[-1]["seq"] if files else 0,
            "total_bytes": sum(f["size"] for f in files),
            "corrupt": corrupt,
        }

    def _list(self) -> list[tuple[tuple[int, int], str]]:
        """((epoch, seq), path) of every checkpoint file, oldest first."""
        found = []
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if path in self._unmovable:
                continue
            if m := _NAME.match(name):
                found.append(((int(m.group(2)), int(m.group(3))), path))
            elif m := _NAME_V1.match(name):
                # the name has no epoch: the header's (a damaged one sorts first)
                found.append(((self._epoch_of(path), int(m.group(1))), path))
        found.sort()
        return found

    def _move_aside(self, path: str, reason: str) -> None:
        try:
            os.replace(path, path + CORRUPT_SUFFIX)
        except OSError as e:
            # still skip it from now on, so the callback fires once per file
            self._unmovable.add(path)
            log.error("cannot move corrupt checkpoint %s aside: %s", path, e.strerror)
        try:
            self.on_corrupt(path, reason)
        except Exception:
            log.exception("on_corrupt callback failed for %s", path)

    def _remove_temp_files(self) -> None:
        # a temp file is a write a crash interrupted: never renamed, so never valid
        for name in os.listdir(self.directory):
            if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.directory, name))
                log.info("removed %s, left by an interrupted checkpoint write", name)


def _size_or_zero(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class CheckpointSaver:
    """Copies the segment's newest checkpoint to the store when its seq has
    advanced, at most once per interval_ms (each save costs two fsyncs).
    Disk errors are counted and kept in last_error, never raised."""

    def __init__(
        self,
        store: CheckpointStore,
        interval_ms: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.interval_s = interval_ms / 1000
        self.clock = clock
        self.saves = 0
        self.errors = 0
        self.last_error = ""
        self.last_seq = 0
        self.last_order = (0, 0)
        self.last_task: int | None = None
        self._last_attempt: float | None = None

    def poll(self, source: CheckpointSource) -> str | None:
        """Save if due and there is something new; returns the new file's path."""
        now = self.clock()
        if self._last_attempt is not None and now - self._last_attempt < self.interval_s:
            return None
        newest = source.newest_checkpoint()
        if newest is None or newest[0].get("flags", 0) & CKPT_SHADOW:
            # a standby's own computation is not the primary's state: not kept
            return None
        if newest[0]["task_id"] != self.last_task:
            self.last_seq = 0  # another task: its sequence starts over
            self.last_order = (0, 0)
        if _order(newest[0]) <= self.last_order:
            return None
        meta, data = newest
        self._last_attempt = now
        try:
            path = self.store.save(meta, data)
        except OSError as e:
            self.errors += 1
            self.last_error = f"saving checkpoint {meta['seq']}: {e.strerror or e}"
            log.error("%s", self.last_error)
            return None
        self.last_seq = meta["seq"]
        self.last_order = _order(meta)
        self.last_task = meta["task_id"]
        if path is not None:
            self.saves += 1
        return path
