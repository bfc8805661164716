"""Turn the binary ring records of a segment into dicts the control plane uses."""

from __future__ import annotations

from typing import Any

import numpy as np

from rtcore import _core, layout

LEVEL_NAMES = {v: k for k, v in layout.LEVELS.items()}
EVENT_NAMES = {
    layout.EV_STARTED: "started",
    layout.EV_STATE: "state",
    layout.EV_DEADLINE_MISS: "deadline_miss",
    layout.EV_CHECKPOINT: "checkpoint",
    layout.EV_CMD_ACK: "command_ack",
    layout.EV_ACTUATING: "actuating",
}
SPAN_STATUS = {0: "unset", 1: "ok", 2: "error"}


def hex_id(raw: np.ndarray) -> str | None:
    b = bytes(raw)
    return b.hex() if any(b) else None


class Decoder:
    """Decodes records against a segment's interned string table."""

    def __init__(self, buf: Any) -> None:
        self._buf = buf
        self._strings: list[str] = []
        self.reload_strings()

    def reload_strings(self) -> None:
        """Re-read the table (a restarted RT process may intern a new task's)."""
        view = np.ndarray(shape=(), dtype=layout.SEGMENT, buffer=self._buf)
        table = view["strings"]
        count = int(table["count"])
        self._strings = [bytes(table["text"][i]).decode(errors="replace") for i in range(count)]

    def string(self, idx: int) -> str:
        if idx >= len(self._strings):
            self.reload_strings()
        return self._strings[idx] if idx < len(self._strings) else f"<string {idx}>"

    def log(self, rec: np.void) -> dict[str, Any]:
        nargs = int(rec["nargs"])
        raw = rec["args"][:nargs]
        mask = int(rec["float_mask"])
        args: list[int | float] = [
            float(raw[i : i + 1].view("<f8")[0]) if mask >> i & 1 else int(raw[i])
            for i in range(nargs)
        ]
        template = self.string(int(rec["template_id"]))
        try:
            message = template.format(*args)
        except (IndexError, ValueError):
            message = f"{template} {args}"
        return {
            "ts_ns": int(rec["ts_ns"]),
            "cycle": int(rec["cycle"]),
            "level": LEVEL_NAMES.get(int(rec["level"]), str(int(rec["level"]))),
            "message": message,
            "template_id": int(rec["template_id"]),
            "args": args,
            "tid": int(rec["tid"]),
            "trace_id": hex_id(rec["trace_id"]),
            "span_id": hex_id(rec["span_id"]),
        }

    def span(self, rec: np.void) -> dict[str, Any]:
        return {
            "name": self.string(int(rec["name_id"])),
            "trace_id": hex_id(rec["trace_id"]),
            "span_id": hex_id(rec["span_id"]),
            "parent_span_id": hex_id(rec["parent_span_id"]),
            "start_ns": int(rec["start_ns"]),
            "end_ns": int(rec["end_ns"]),
            "cycle": int(rec["cycle"]),
            "status": SPAN_STATUS.get(int(rec["status"]), "unset"),
            "flags": int(rec["flags"]),
        }

    def event(self, rec: np.void) -> dict[str, Any]:
        kind = int(rec["kind"])
        return {
            "kind": EVENT_NAMES.get(
                kind, f"task_{kind - layout.EV_TASK}" if kind >= layout.EV_TASK else str(kind)
            ),
            "kind_id": kind,
            "ts_ns": int(rec["ts_ns"]),
            "cycle": int(rec["cycle"]),
            "a": int(rec["a"]),
            "b": int(rec["b"]),
            "trace_id": hex_id(rec["trace_id"]),
            "span_id": hex_id(rec["span_id"]),
        }


class Drainer:
    """Takes records out of the RT→control-plane rings of one segment."""

    def __init__(self, buf: Any) -> None:
        self.decoder = Decoder(buf)
        self._readers = {name: _core.RingReader(buf, name) for name in ("log", "span", "event")}

    def drain(self, ring: str, max_records: int = 4096) -> list[dict[str, Any]]:
        _, dtype = layout.RINGS[ring]
        raw = self._readers[ring].pop(max_records)
        recs = np.frombuffer(raw, dtype=dtype)
        decode = getattr(self.decoder, ring)
        return [decode(r) for r in recs]

    def drain_all(self, ring: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while batch := self.drain(ring):
            out.extend(batch)
        return out


def command(
    kind: int,
    *,
    seq: int,
    args: tuple[float, ...] = (),
    job_id: int = 0,
    trace_id: bytes = b"",
    span_id: bytes = b"",
) -> bytes:
    """One command record, ready for RingWriter(buf, 'cmd').push()."""
    if len(args) > layout.CMD_ARGS:
        raise ValueError(f"a command carries at most {layout.CMD_ARGS} arguments")
    rec = np.zeros((), dtype=layout.CMD_REC)
    rec["seq"] = seq
    rec["kind"] = kind
    rec["nargs"] = len(args)
    rec["job_id"] = job_id
    rec["args"][: len(args)] = args
    if trace_id:
        rec["trace_id"] = np.frombuffer(trace_id, dtype="u1")
    if span_id:
        rec["span_id"] = np.frombuffer(span_id, dtype="u1")
    return rec.tobytes()
