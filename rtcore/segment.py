"""Create, open and remove the POSIX shared-memory segment of one RT instance."""

from __future__ import annotations

import contextlib
import mmap
import os
import re
from typing import Any

from rtcore import _core

SHM_DIR = "/dev/shm"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


class SegmentError(Exception):
    """The segment cannot be created or opened; the message says why."""


def shm_path(name: str) -> str:
    if not _NAME.match(name) or name in (".", ".."):
        raise SegmentError(
            f"shared-memory name {name!r} is invalid: use 1-200 letters, digits, '.', '_' or '-'"
        )
    return os.path.join(SHM_DIR, name)


def pid_alive(pid: int) -> bool:
    """pid runs. A zombie does not: a killed RT whose parent died waits to be
    reaped by init, which may take seconds (measured: ~2 s here), and must not
    hold its segment, or its actuation interval open, meanwhile."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: kill(0) said it exists
    return state not in (b"Z", b"X")


class Segment:
    """A mapped segment. `buf` is the writable mmap the C code works on."""

    def __init__(self, name: str, fd: int, created: bool) -> None:
        self.name = name
        self.path = shm_path(name)
        self.created = created
        self.inode = os.fstat(fd).st_ino
        try:
            self.buf = mmap.mmap(
                fd,
                _core.SEGMENT_SIZE,
                flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
            )
        finally:
            os.close(fd)

    @classmethod
    def create(cls, name: str) -> Segment:
        """Make a new, formatted segment; SegmentError if the name is taken."""
        path = shm_path(name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o660)
        except FileExistsError:
            raise SegmentError(_in_use_message(name)) from None
        except OSError as e:
            raise SegmentError(f"cannot create shared memory {path}: {e.strerror}") from None
        try:
            os.ftruncate(fd, _core.SEGMENT_SIZE)
        except OSError as e:
            os.close(fd)
            os.unlink(path)
            raise SegmentError(f"cannot size shared memory {path}: {e.strerror}") from None
        try:
            seg = cls(name, fd, created=True)
        except OSError as e:
            os.unlink(path)
            raise SegmentError(f"cannot map shared memory {path}: {e.strerror}") from None
        _core.format_segment(seg.buf)
        return seg

    @classmethod
    def open(cls, name: str) -> Segment:
        """Map an existing segment of this ABI; SegmentError if absent or foreign."""
        path = shm_path(name)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise SegmentError(
                f"no shared-memory segment {name!r} ({path} does not exist)"
            ) from None
        except OSError as e:
            raise SegmentError(f"cannot open shared memory {path}: {e.strerror}") from None
        if os.fstat(fd).st_size < _core.SEGMENT_SIZE:
            os.close(fd)
            raise SegmentError(f"{path} is too small to be an rtcore segment of this version")
        seg = cls(name, fd, created=False)
        try:
            _core.check_segment(seg.buf)
        except ValueError as e:
            seg.close()
            raise SegmentError(f"{path}: {e}") from None
        return seg

    def replaced(self) -> bool:
        """Whether the name no longer leads to this mapping: the file was
        removed (systemd's RemoveIPC, an operator) or made anew by another RT."""
        try:
            return os.stat(self.path).st_ino != self.inode
        except FileNotFoundError:
            return True

    def owner_pid(self) -> int:
        return int(_core.header_info(self.buf)["owner_pid"])

    def newest_checkpoint(self) -> tuple[dict[str, Any], bytes] | None:
        """The valid checkpoint with the highest sequence number, or None."""
        best: tuple[dict[str, Any], bytes] | None = None
        for slot in range(_core.CKPT_SLOTS):
            result, meta, data = _core.read_checkpoint(self.buf, slot)
            if result == "ok" and (best is None or meta["seq"] > best[0]["seq"]):
                best = (meta, data)
        return best

    def view(self) -> Any:
        """numpy structured view of the whole segment (control-plane side)."""
        import numpy as np

        from rtcore.layout import SEGMENT

        return np.ndarray(shape=(), dtype=SEGMENT, buffer=self.buf)

    def close(self) -> None:
        # a numpy view may still hold the buffer; the mapping then goes with it
        with contextlib.suppress(BufferError):
            self.buf.close()

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _in_use_message(name: str) -> str:
    path = shm_path(name)
    try:
        seg = Segment.open(name)
    except SegmentError:
        return f"shared-memory name {name!r} is in use ({path} exists and is not an rtcore segment)"
    pid = seg.owner_pid()
    seg.close()
    if pid_alive(pid):
        return f"shared-memory name {name!r} is in use by RT process {pid}"
    return (
        f"shared-memory segment {name!r} is left from an earlier run that is not running; "
        f"pass --resume to continue from its checkpoint, or remove {path}"
    )
