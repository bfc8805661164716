"""The checkpoint file format, shared by the agent's durable store
(control/checkpoint.py) and the RT process's `--restore-file`.

File format (all integers little-endian, version 1)::

    offset size  field
     0      8    magic        b"RTCKPT01"
     8      4    version      u32, FORMAT_VERSION
    12      8    seq          u64, checkpoint sequence number (1-based)
    20      8    cycle        u64, RT cycle the state belongs to
    28      8    epoch        u64, fencing epoch the RT ran under
    36      4    task_id      u32, crc32c of the task name
    40      4    state_size   u32, bytes of state after the header
    44      8    mono_ns      i64, RT CLOCK_MONOTONIC when the checkpoint was taken
    52      8    saved_ns     i64, CLOCK_REALTIME (unix ns) when the file was written
    60      4    crc          u32, CRC-32C of bytes 0..60 then of the state
    64      state_size bytes of task state

A file is valid only if it is exactly 64 + state_size bytes long and both the
magic and the CRC match. The store names files `ckpt-{seq:020d}.bin`, so name
order is sequence order, and writes each one to a temporary file that is
fsynced and renamed into place: a crash leaves either the whole file or none.

It imports only the standard library and rtcore._core: the RT process reads
it at start-up.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import Any

from rtcore._core import crc32c

MAGIC = b"RTCKPT01"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIQQQIIqqI")
HEADER_SIZE = HEADER.size  # 64
CRC_OFFSET = HEADER_SIZE - 4

Meta = dict[str, Any]
Checkpoint = tuple[Meta, bytes]


class CheckpointFileError(Exception):
    """A checkpoint file cannot be used; `reason` says why (and `path` which)."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.reason = reason
        self.path = path


def encode(meta: Mapping[str, Any], data: bytes, saved_ns: int) -> bytes:
    """Header + state bytes of one checkpoint file."""
    if len(data) != meta["state_size"]:
        raise ValueError(f"state is {len(data)} bytes but meta says {meta['state_size']}")
    head = HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        meta["seq"],
        meta["cycle"],
        meta["epoch"],
        meta["task_id"],
        len(data),
        meta["mono_ns"],
        saved_ns,
        0,
    )[:CRC_OFFSET]
    return head + struct.pack("<I", _crc(head, data)) + bytes(data)


def _crc(head: bytes, data: bytes) -> int:
    """CRC-32C of the header fields before the crc, then of the state."""
    return crc32c(data, crc32c(head[:CRC_OFFSET]))


def parse_header(head: bytes) -> Meta:
    """Fields of a 64-byte header; CheckpointFileError if it is not one of ours."""
    if len(head) < HEADER_SIZE:
        if not head:
            raise CheckpointFileError("empty file")
        raise CheckpointFileError(
            f"truncated: {len(head)} bytes, the header alone is {HEADER_SIZE}"
        )
    magic, version, seq, cycle, epoch, task_id, size, mono_ns, saved_ns, crc = HEADER.unpack_from(
        head
    )
    if magic != MAGIC:
        raise CheckpointFileError(f"not an rtcore checkpoint (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise CheckpointFileError(
            f"format version {version} is not supported (this build reads {FORMAT_VERSION})"
        )
    return {
        "seq": seq,
        "cycle": cycle,
        "epoch": epoch,
        "task_id": task_id,
        "state_size": size,
        "mono_ns": mono_ns,
        "saved_ns": saved_ns,
        "crc": crc,
    }


def read_checkpoint_file(path: str) -> Checkpoint:
    """(meta, state) of a checkpoint file; CheckpointFileError(reason) if it cannot
    be read or is truncated, foreign or corrupted. meta has seq, cycle, epoch,
    task_id, state_size, mono_ns, saved_ns and crc (the file's)."""
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            head = f.read(HEADER_SIZE)
            meta = parse_header(head)
            expected = HEADER_SIZE + meta["state_size"]
            if file_size != expected:
                raise CheckpointFileError(
                    f"{'truncated' if file_size < expected else 'trailing bytes'}: file is "
                    f"{file_size} bytes, header says {expected}"
                )
            data = f.read(meta["state_size"])
            if len(data) != meta["state_size"]:
                raise CheckpointFileError("truncated while reading")
    except CheckpointFileError as e:
        raise CheckpointFileError(e.reason, path) from None
    except OSError as e:
        raise CheckpointFileError(f"cannot read: {e.strerror}", path) from None
    crc = _crc(head, data)
    if crc != meta["crc"]:
        raise CheckpointFileError(
            f"CRC mismatch (stored {meta['crc']:#010x}, computed {crc:#010x})", path
        )
    return meta, data
