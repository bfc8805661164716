"""The checkpoint file format, shared by the agent's durable store
(control/checkpoint.py) and the RT process's `--restore-file`.

File format (all integers little-endian, version 2)::

    offset size  field
     0      8    magic        b"RTCKPT01"
     8      4    version      u32, FORMAT_VERSION
    12      8    seq          u64, checkpoint sequence number (1-based)
    20      8    cycle        u64, RT cycle the state belongs to
    28      8    epoch        u64, fencing epoch the RT ran under
    36      8    origin       u64, node id of the RT that computed it
    44      4    task_id      u32, crc32c of the task name
    48      4    state_size   u32, bytes of state after the header
    52      4    flags        u32, checkpoint slot flags (1: shadow, a standby's own)
    56      8    mono_ns      i64, RT CLOCK_MONOTONIC when the checkpoint was taken
    64      8    saved_ns     i64, CLOCK_REALTIME (unix ns) when the file was written
    72      4    (zero)
    76      4    crc          u32, CRC-32C of bytes 0..76 then of the state
    80      state_size bytes of task state

Version 1 files (a 64-byte header without origin and flags) are still read,
as origin 0, flags 0. A file is valid only if it is exactly header +
state_size bytes long and both the magic and the CRC match. The store
(control/state/checkpoint.py) names files by origin, epoch and sequence and
writes each one to a temporary file that is fsynced and renamed into place:
a crash leaves either the whole file or none.

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
FORMAT_VERSION = 2
HEADER = struct.Struct("<8sIQQQQIIIqq4xI")
HEADER_SIZE = HEADER.size  # 80
CRC_OFFSET = HEADER_SIZE - 4
HEADER_V1 = struct.Struct("<8sIQQQIIqqI")  # 64 bytes, read only

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
        meta.get("origin", 0),
        meta["task_id"],
        len(data),
        meta.get("flags", 0),
        meta["mono_ns"],
        saved_ns,
        0,
    )[:CRC_OFFSET]
    return head + struct.pack("<I", _crc(head, data)) + bytes(data)


def _crc(head: bytes, data: bytes) -> int:
    """CRC-32C of the header fields before the crc (head), then of the state."""
    return crc32c(data, crc32c(head))


def header_size(head: bytes) -> int:
    """Bytes of header this file has, by its version (at least 12 bytes given)."""
    version = struct.unpack_from("<I", head, 8)[0] if len(head) >= 12 else FORMAT_VERSION
    return HEADER_V1.size if version == 1 else HEADER_SIZE


def parse_header(head: bytes) -> Meta:
    """Fields of a header (version 1 or 2); CheckpointFileError if it is not one of ours."""
    if not head:
        raise CheckpointFileError("empty file")
    if len(head) >= 8 and head[:8] != MAGIC:
        raise CheckpointFileError(
            f"not an rtcore checkpoint (magic {head[:8]!r}, expected {MAGIC!r})"
        )
    size = header_size(head)
    if len(head) < size:
        raise CheckpointFileError(f"truncated: {len(head)} bytes, the header alone is {size}")
    version = struct.unpack_from("<I", head, 8)[0]
    if version == 1:
        _, _, seq, cycle, epoch, task_id, state_size, mono_ns, saved_ns, crc = (
            HEADER_V1.unpack_from(head)
        )
        origin = flags = 0
    elif version == FORMAT_VERSION:
        (_, _, seq, cycle, epoch, origin, task_id, state_size, flags, mono_ns, saved_ns, crc) = (
            HEADER.unpack_from(head)
        )
    else:
        raise CheckpointFileError(
            f"format version {version} is not supported (this build reads 1 and {FORMAT_VERSION})"
        )
    return {
        "seq": seq,
        "cycle": cycle,
        "epoch": epoch,
        "origin": origin,
        "flags": flags,
        "task_id": task_id,
        "state_size": state_size,
        "mono_ns": mono_ns,
        "saved_ns": saved_ns,
        "crc": crc,
        "header_size": size,
    }


def read_checkpoint_file(path: str) -> Checkpoint:
    """(meta, state) of a checkpoint file; CheckpointFileError(reason) if it cannot
    be read or is truncated, foreign or corrupted. meta has seq, cycle, epoch,
    origin, flags, task_id, state_size, mono_ns, saved_ns and crc (the file's)."""
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            head = f.read(HEADER_SIZE)
            meta = parse_header(head)
            head = head[: meta["header_size"]]
            f.seek(meta["header_size"])
            expected = meta["header_size"] + meta["state_size"]
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
    crc = _crc(head[: meta["header_size"] - 4], data)
    if crc != meta["crc"]:
        raise CheckpointFileError(
            f"CRC mismatch (stored {meta['crc']:#010x}, computed {crc:#010x})", path
        )
    return meta, data
