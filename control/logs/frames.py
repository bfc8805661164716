"""The spool's record frame: magic, CRC-32 of the rest of the frame, doc
length, seq, time_ns, level, then the doc. Framing records into per-segment
chunks, checking a frame, and finding the next good one after damage.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

# stored as f5 9c 7e a1: 0xF5 never occurs in UTF-8, so a JSON doc cannot fake a frame start
MAGIC = 0xA17E9CF5
MAGIC_BYTES = struct.pack("<I", MAGIC)
PRE = struct.Struct("<II")  # magic, CRC-32 of the rest of the frame
BODY = struct.Struct("<IQqI")  # doc length, seq, time_ns, level
FRAME = struct.Struct("<IIIQqI")  # PRE then BODY
HDR = FRAME.size


def encode(
    records: Sequence[tuple[int, int, bytes]], seq: int, room: int, segment_bytes: int
) -> list[tuple[bytes, int]]:
    """Frames records numbered from seq: one (bytes, count) chunk per segment,
    the first filling `room` of the active one, the next ones fresh segments."""
    chunks = []
    parts: list[bytes] = []
    add = parts.extend
    pre, body, crc32 = PRE.pack, BODY.pack, zlib.crc32
    used = 0
    for t, level, doc in records:
        head = body(len(doc), seq, t, level)
        add((pre(MAGIC, crc32(doc, crc32(head))), head, doc))
        seq += 1
        used += HDR + len(doc)
        if used >= room:
            chunks.append((b"".join(parts), len(parts) // 3))
            parts.clear()
            used, room = 0, segment_bytes
    if parts:
        chunks.append((b"".join(parts), len(parts) // 3))
    return chunks


def frame_end(mv: memoryview, off: int, after: int) -> int:
    """End of the frame at off when it checks out and its seq is past `after`, else -1.
    (Frames a failed write left beyond the segment's end carry seqs never used since.)"""
    if off + HDR > len(mv):
        return -1
    magic, crc, n, seq = FRAME.unpack_from(mv, off)[:4]
    end = off + HDR + n
    if magic != MAGIC or end > len(mv) or seq <= after or zlib.crc32(mv[off + 8 : end]) != crc:
        return -1
    return end


def resync(data: bytes, mv: memoryview, off: int, after: int) -> int:
    """Offset of the next good frame after a bad one at off, else -1 (a bad tail)."""
    n = FRAME.unpack_from(mv, off)[2] if off + HDR <= len(mv) else 0
    if off + HDR + n < len(mv) and frame_end(mv, off + HDR + n, after) > 0:
        return off + HDR + n  # only the doc or the CRC is damaged
    at = data.find(MAGIC_BYTES, off + 1)
    while at >= 0:
        if frame_end(mv, at, after) > 0:
            return at
        at = data.find(MAGIC_BYTES, at + 1)
    return -1
