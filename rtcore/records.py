"""Turn the binary ring records of a segment into what the control plane uses.

Draining is bulk: one call moves every pending record of a ring into a
numpy structured array (at most two memcpy), and the columns the control
plane needs (wall-clock times, levels, ids) are computed over the whole
array at once. Turning records into dicts (rendered messages, typed fields,
span attributes) is the only per-record step, and only consumers that need
dicts pay for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtcore import _core, layout, templates
from rtcore.clock import Clock
from rtcore.enums import JOURNAL_END, JOURNAL_START, SPAN_KINDS, SPAN_STATUS, TRACE_SAMPLED

LEVEL_NAMES = {v: k for k, v in layout.LEVELS.items()}
EVENT_NAMES = {
    layout.EV_STARTED: "started",
    layout.EV_STATE: "state",
    layout.EV_DEADLINE_MISS: "deadline_miss",
    layout.EV_CMD_ACK: "command_ack",
    layout.EV_ACTUATING: "actuating",
    layout.EV_ADOPTED: "adopted",
}
_LEVEL_TABLE = np.array([LEVEL_NAMES.get(i, str(i)) for i in range(256)], dtype=object)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
        return True
    except UnicodeDecodeError:
        return False


def hex_ids(raw: np.ndarray) -> list[str | None]:
    """Hex strings of a column of ids (n x 8 or n x 16 bytes), None for all-zero ids."""
    width = raw.shape[1]
    flat = np.ascontiguousarray(raw).tobytes()
    nonzero = np.asarray(raw.any(axis=1)).tolist()
    return [flat[i * width : (i + 1) * width].hex() if nz else None for i, nz in enumerate(nonzero)]


def typed_args(args: np.ndarray, mask: np.ndarray, nargs: np.ndarray) -> list[list[int | float]]:
    """Each record's arguments as Python ints or floats, by its float mask."""
    ints = args.tolist()
    floats = args.view("<f8").tolist()
    out = []
    for i, (m, n) in enumerate(zip(mask.tolist(), nargs.tolist(), strict=True)):
        row_i, row_f = ints[i], floats[i]
        # a record claiming more arguments than it holds is cut to what it holds
        out.append([row_f[k] if m >> k & 1 else row_i[k] for k in range(min(n, len(row_i)))])
    return out


class Strings:
    """A segment's interned string table: templates (parsed once) and names."""

    def __init__(self, buf: Any) -> None:
        self._buf = buf
        self._text: list[str] = []
        self._damaged: set[int] = set()
        self._templates: dict[int, templates.Template | None] = {}
        self._table = np.ndarray(shape=(), dtype=layout.SEGMENT, buffer=buf)["strings"]
        self.generation = 0  # counts reloads: caches built on the table compare it
        self.reload()

    def reload(self) -> None:
        """Re-read the table (a restarted RT process may intern a new task's)."""
        table = self._table
        count = int(table["count"])
        raw = [bytes(table["text"][i]) for i in range(count)]
        self._text = [r.decode(errors="replace") for r in raw]
        self._damaged = {i for i, r in enumerate(raw) if not _is_utf8(r)}
        self._templates = {}
        self.generation += 1

    def count(self) -> int:
        return len(self._text)

    def is_damaged(self, idx: int) -> bool:
        """The string is not valid UTF-8 (shown with replacement characters)."""
        return idx in self._damaged

    def text(self, idx: int) -> str:
        # an unknown id may be a string interned since: re-read if the table grew
        if idx >= len(self._text) and int(self._table["count"]) != len(self._text):
            self.reload()
        return self._text[idx] if idx < len(self._text) else f"<string {idx}>"

    def name(self, idx: int) -> str | None:
        return None if idx == layout.NO_STRING else self.text(idx)

    def template(self, idx: int) -> templates.Template | None:
        if idx not in self._templates:
            try:
                self._templates[idx] = templates.parse(self.text(idx), layout.LOG_ARGS)
            except templates.TemplateError:
                self._templates[idx] = None
        return self._templates[idx]

    def render(self, idx: int, args: list[int | float]) -> tuple[str, dict[str, int | float]]:
        """(message, {field: value}) of a log record."""
        tpl = self.template(idx)
        if tpl is None:
            text = self.text(idx)
            return f"{text} {args}", {f"arg{i}": v for i, v in enumerate(args)}
        return tpl.render(args), dict(zip(tpl.fields, args, strict=False))


class Batch:
    """Records drained from one ring, as a structured array plus wall times."""

    def __init__(self, ring: str, recs: np.ndarray, wall_offset_ns: int) -> None:
        self.ring = ring
        self.recs = recs
        self.wall_offset_ns = wall_offset_ns

    def __len__(self) -> int:
        return len(self.recs)

    def wall_ns(self, column: str = "ts_ns") -> np.ndarray:
        """A monotonic column converted to wall-clock nanoseconds."""
        return self.recs[column] + self.wall_offset_ns

    def levels(self) -> np.ndarray:
        return _LEVEL_TABLE[self.recs["level"]]


class Decoder:
    """Builds dicts from drained batches against a segment's string table."""

    def __init__(self, buf: Any) -> None:
        self.strings = Strings(buf)

    def reload_strings(self) -> None:
        self.strings.reload()

    def logs(self, batch: Batch) -> list[dict[str, Any]]:
        r = batch.recs
        if len(r) == 0:
            return []
        args = typed_args(r["args"], r["float_mask"], r["nargs"])
        traces, spans = hex_ids(r["trace_id"]), hex_ids(r["span_id"])
        out = []
        cols = zip(
            batch.wall_ns().tolist(),
            r["ts_ns"].tolist(),
            r["cycle"].tolist(),
            batch.levels().tolist(),
            r["template_id"].tolist(),
            r["tid"].tolist(),
            r["repeats"].tolist(),
            r["trace_flags"].tolist(),
            strict=True,
        )
        for i, (wall, mono, cycle, level, tpl, tid, repeats, flags) in enumerate(cols):
            message, fields = self.strings.render(tpl, args[i])
            out.append(
                {
                    "time_ns": wall,
                    "ts_ns": mono,
                    "cycle": cycle,
                    "level": level,
                    "message": message,
                    "fields": fields,
                    "template_id": tpl,
                    "template": self.strings.text(tpl),
                    "args": args[i],
                    "repeats": repeats,
                    "tid": tid,
                    "trace_id": traces[i],
                    "span_id": spans[i],
                    "sampled": bool(flags & TRACE_SAMPLED),
                }
            )
        return out

    def spans(self, batch: Batch) -> list[dict[str, Any]]:
        r = batch.recs
        if len(r) == 0:
            return []
        traces, ids, parents = (hex_ids(r[c]) for c in ("trace_id", "span_id", "parent_span_id"))
        attrs = typed_args(r["attrs"], r["attr_float_mask"], r["nattrs"])
        keys = r["attr_key"].tolist()
        out = []
        cols = zip(
            batch.wall_ns("start_ns").tolist(),
            batch.wall_ns("end_ns").tolist(),
            r["start_ns"].tolist(),
            r["end_ns"].tolist(),
            r["cycle"].tolist(),
            r["name_id"].tolist(),
            r["status_msg_id"].tolist(),
            r["kind"].tolist(),
            r["status"].tolist(),
            r["flags"].tolist(),
            strict=True,
        )
        for i, (
            start,
            end,
            mono_start,
            mono_end,
            cycle,
            name,
            msg,
            kind,
            status,
            flags,
        ) in enumerate(cols):
            out.append(
                {
                    "name": self.strings.text(name),
                    "trace_id": traces[i],
                    "span_id": ids[i],
                    "parent_span_id": parents[i],
                    "start_time_ns": start,
                    "end_time_ns": end,
                    "start_ns": mono_start,
                    "end_ns": mono_end,
                    "cycle": cycle,
                    "kind": SPAN_KINDS.get(kind, "internal"),
                    "status": SPAN_STATUS.get(status, "unset"),
                    "status_message": self.strings.name(msg),
                    "attributes": {
                        self.strings.text(k): v for k, v in zip(keys[i], attrs[i], strict=False)
                    },
                    "flags": flags,
                }
            )
        return out

    def events(self, batch: Batch) -> list[dict[str, Any]]:
        r = batch.recs
        if len(r) == 0:
            return []
        traces, spans = hex_ids(r["trace_id"]), hex_ids(r["span_id"])
        out = []
        cols = zip(
            batch.wall_ns().tolist(),
            r["ts_ns"].tolist(),
            r["cycle"].tolist(),
            r["kind"].tolist(),
            r["a"].tolist(),
            r["b"].tolist(),
            r["trace_flags"].tolist(),
            strict=True,
        )
        for i, (wall, mono, cycle, kind, a, b, flags) in enumerate(cols):
            out.append(
                {
                    "kind": EVENT_NAMES.get(
                        kind,
                        f"task_{kind - layout.EV_TASK}" if kind >= layout.EV_TASK else str(kind),
                    ),
                    "kind_id": kind,
                    "time_ns": wall,
                    "ts_ns": mono,
                    "cycle": cycle,
                    "a": a,
                    "b": b,
                    "trace_id": traces[i],
                    "span_id": spans[i],
                    "sampled": bool(flags & TRACE_SAMPLED),
                }
            )
        return out

    def journal(self, batch: Batch) -> list[dict[str, Any]]:
        return journal_dicts(batch.recs)


def journal_dicts(recs: np.ndarray) -> list[dict[str, Any]]:
    kinds = {JOURNAL_START: "start", JOURNAL_END: "end"}
    return [
        {
            "kind": kinds.get(int(r["kind"]), str(int(r["kind"]))),
            "pid": int(r["pid"]),
            "epoch": int(r["epoch"]),
            "cycle": int(r["cycle"]),
            "mono_ns": int(r["mono_ns"]),
            "real_ns": int(r["real_ns"]),
            "cycles": int(r["cycles"]),
        }
        for r in recs
    ]


class Drainer:
    """Takes records out of the RT→control-plane rings of one segment, in bulk."""

    RINGS = ("log", "span", "event", "journal")

    def __init__(self, buf: Any) -> None:
        self.decoder = Decoder(buf)
        self.clock = Clock(buf)
        self._readers = {name: _core.RingReader(buf, name) for name in self.RINGS}
        self._scratch = {
            name: np.empty(getattr(layout, f"{name.upper()}_RING_CAP"), dtype=layout.RINGS[name][1])
            for name in self.RINGS
        }

    def pending(self, ring: str) -> int:
        """Records waiting in ring (a cheap look, nothing taken)."""
        return int(self._readers[ring].pending())

    def drain_batch(self, ring: str) -> Batch:
        """Every record pending in ring now, as one batch (a copy)."""
        scratch = self._scratch[ring]
        n = self._readers[ring].pop_into(scratch)
        return Batch(ring, scratch[:n].copy(), self.clock.offset_ns())

    def peek_batch(self, ring: str) -> Batch:
        """Like drain_batch, but the records stay in the ring until commit()."""
        scratch = self._scratch[ring]
        n = self._readers[ring].peek_into(scratch)
        return Batch(ring, scratch[:n].copy(), self.clock.offset_ns())

    def commit(self, ring: str, n: int) -> None:
        self._readers[ring].commit(n)

    def drain(self, ring: str) -> list[dict[str, Any]]:
        batch = self.drain_batch(ring)
        return getattr(
            self.decoder, {"log": "logs", "span": "spans", "event": "events"}.get(ring, ring)
        )(batch)

    def drain_all(self, ring: str) -> list[dict[str, Any]]:
        """Drain until the ring is empty (a running RT may add while this runs)."""
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
    epoch: int = 0,
    trace_id: bytes = b"",
    span_id: bytes = b"",
    sampled: bool = True,
) -> bytes:
    """One command record, ready for RingWriter(buf, 'cmd').push()."""
    if len(args) > layout.CMD_ARGS:
        raise ValueError(f"a command carries at most {layout.CMD_ARGS} arguments")
    rec = np.zeros((), dtype=layout.CMD_REC)
    rec["seq"] = seq
    rec["kind"] = kind
    rec["nargs"] = len(args)
    rec["job_id"] = job_id
    rec["epoch"] = epoch
    rec["args"][: len(args)] = args
    if trace_id:
        rec["trace_id"] = np.frombuffer(trace_id, dtype="u1")
        rec["trace_flags"] = TRACE_SAMPLED if sampled else 0
    if span_id:
        rec["span_id"] = np.frombuffer(span_id, dtype="u1")
    return rec.tobytes()
