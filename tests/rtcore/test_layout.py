"""rtcore/layout.py (numpy) against include/rtcore/layout.h (C), compiled for real.

A small C program is generated from the numpy SEGMENT dtype: for every field
(structs, sub-arrays and their element [0], leaves) it prints offsetof(),
sizeof() and, for scalar leaves, the C type; plus every #define and enum value
layout.py mirrors. The test compiles it with gcc against the project headers,
runs it and compares line by line.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rtcore import _core, enums, layout

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = ROOT / "rtcore" / "include"

# layout.py constant -> C expression in layout.h
CONSTANTS: dict[str, str] = {
    "MAGIC": "RTC_MAGIC",
    "ABI_VERSION": "RTC_ABI_VERSION",
    "CACHELINE": "RTC_CACHELINE",
    "LOG_RING_CAP": "RTC_LOG_RING_CAP",
    "SPAN_RING_CAP": "RTC_SPAN_RING_CAP",
    "EVENT_RING_CAP": "RTC_EVENT_RING_CAP",
    "CMD_RING_CAP": "RTC_CMD_RING_CAP",
    "JOURNAL_RING_CAP": "RTC_JOURNAL_RING_CAP",
    "CKPT_SLOTS": "RTC_CKPT_SLOTS",
    "CKPT_MAX": "RTC_CKPT_MAX",
    "STRINGS_MAX": "RTC_STRINGS_MAX",
    "STRING_LEN": "RTC_STRING_LEN",
    "HIST_BUCKETS": "RTC_HIST_BUCKETS",
    "LOG_ARGS": "RTC_LOG_ARGS",
    "SPAN_ATTRS": "RTC_SPAN_ATTRS",
    "SAMPLE_PPM_ALL": "RTC_SAMPLE_PPM_ALL",
    "CMD_ARGS": "RTC_CMD_ARGS",
    "TEXT_LEN": "RTC_TEXT_LEN",
    "MODE_RUN": "RTC_MODE_RUN",
    "MODE_HOLD": "RTC_MODE_HOLD",
    "MODE_SAFE": "RTC_MODE_SAFE",
    "MODE_STOP": "RTC_MODE_STOP",
    "EV_STARTED": "RTC_EV_STARTED",
    "EV_STATE": "RTC_EV_STATE",
    "EV_DEADLINE_MISS": "RTC_EV_DEADLINE_MISS",
    "EV_CMD_ACK": "RTC_EV_CMD_ACK",
    "EV_ACTUATING": "RTC_EV_ACTUATING",
    "EV_ADOPTED": "RTC_EV_ADOPTED",
    "EV_TASK": "RTC_EV_TASK",
    "CMD_NOP": "RTC_CMD_NOP",
    "CMD_TASK": "RTC_CMD_TASK",
}

# layout.py dict constants: {python key: C expression of the value}
STATE_NAMES_C = {
    "init": "RTC_STATE_INIT",
    "run": "RTC_STATE_RUN",
    "hold": "RTC_STATE_HOLD",
    "safe": "RTC_STATE_SAFE",
    "stopped": "RTC_STATE_STOPPED",
    "fault": "RTC_STATE_FAULT",
}
DEGRADED_BITS_C = {
    "mlock": "RTC_DEG_MLOCK",
    "affinity": "RTC_DEG_AFFINITY",
    "sched_fifo": "RTC_DEG_SCHED",
    "numa": "RTC_DEG_NUMA",
    "pm_qos": "RTC_DEG_PM_QOS",
}
WAKE_MODES_C = {"sleep": "RTC_WAKE_SLEEP", "hybrid": "RTC_WAKE_HYBRID"}
LEVELS_C = {name: f"RTC_LEVEL_{name}" for name in ("DEBUG", "INFO", "WARN", "ERROR", "CRITICAL")}
SPAN_KINDS_C = {
    "internal": "RTC_SPAN_INTERNAL",
    "server": "RTC_SPAN_SERVER",
    "client": "RTC_SPAN_CLIENT",
    "producer": "RTC_SPAN_PRODUCER",
    "consumer": "RTC_SPAN_CONSUMER",
}
SPAN_STATUS_C = {"unset": "RTC_STATUS_UNSET", "ok": "RTC_STATUS_OK", "error": "RTC_STATUS_ERROR"}
# rtcore.enums constants that layout.py does not re-export -> C expression
ENUM_CONSTANTS: dict[str, str] = {
    "TRACE_SAMPLED": "RTC_TRACE_SAMPLED",
    "JOURNAL_START": "RTC_JOURNAL_START",
    "JOURNAL_END": "RTC_JOURNAL_END",
    "CKPT_SHADOW": "RTC_CKPT_SHADOW",
}

# _core.STRUCT_SIZES key -> numpy dtype
STRUCT_DTYPES: dict[str, np.dtype] = {
    "rtc_header": layout.HEADER,
    "rtc_control": layout.CONTROL,
    "rtc_status": layout.STATUS,
    "rtc_strings": layout.STRINGS,
    "rtc_ckpt_slot": layout.CKPT_SLOT,
    "rtc_ring_hdr": layout.RING_HDR,
    "rtc_log_rec": layout.LOG_REC,
    "rtc_span_rec": layout.SPAN_REC,
    "rtc_event_rec": layout.EVENT_REC,
    "rtc_cmd_rec": layout.CMD_REC,
    "rtc_journal_rec": layout.JOURNAL_REC,
    "rtc_clock": layout.CLOCK,
    "rtc_segment": layout.SEGMENT,
}

# C scalar type of a leaf, named the numpy way (kind + itemsize)
KIND_MACRO = """
#define KIND(x) _Generic((x), \\
    char: "S1", signed char: "i1", unsigned char: "u1", \\
    int16_t: "i2", uint16_t: "u2", int32_t: "i4", uint32_t: "u4", \\
    int64_t: "i8", uint64_t: "u8", float: "f4", double: "f8", \\
    rtc_arg: "union8", default: "?")
"""


class Field:
    def __init__(
        self, path: str, offset: int, size: int, kind: str | None, kind_path: str | None
    ) -> None:
        self.path = path
        self.offset = offset
        self.size = size
        self.kind = kind  # numpy kind+itemsize of a scalar leaf, else None
        self.kind_path = kind_path  # C expression whose _Generic type is compared


def _np_kind(dt: np.dtype) -> str:
    if dt.kind == "S":
        return "S1"  # char arrays: compared per element
    return f"{dt.kind}{dt.itemsize}"


def walk(dtype: np.dtype, prefix: str = "", base: int = 0) -> Iterator[Field]:
    """Every field of a structured dtype, depth first, with absolute offsets.

    Sub-array fields yield themselves, then their element [0] (and, for
    arrays of structs, the element's fields)."""
    assert dtype.names is not None
    for name in dtype.names:
        fdt, off = dtype.fields[name][:2]
        path = f"{prefix}.{name}" if prefix else name
        offset = base + off
        if fdt.subdtype is not None:
            elem, shape = fdt.subdtype
            yield Field(path, offset, fdt.itemsize, None, None)
            elem_path = path + "[0]" * len(shape)
            if elem.names:
                yield Field(elem_path, offset, elem.itemsize, None, None)
                yield from walk(elem, elem_path, offset)
            else:
                kind_path = elem_path + ("[0]" if elem.kind == "S" else "")
                yield Field(elem_path, offset, elem.itemsize, _np_kind(elem), kind_path)
        elif fdt.names:
            yield Field(path, offset, fdt.itemsize, None, None)
            yield from walk(fdt, path, offset)
        else:
            kind_path = path + ("[0]" if fdt.kind == "S" else "")
            yield Field(path, offset, fdt.itemsize, _np_kind(fdt), kind_path)


FIELDS = list(walk(layout.SEGMENT))


def _c_program() -> str:
    lines = [
        "#include <stddef.h>",
        "#include <stdint.h>",
        "#include <stdio.h>",
        '#include "rtcore/layout.h"',
        KIND_MACRO,
        "#define SEG ((rtc_segment *)0)",
        "int main(void)",
        "{",
    ]
    for f in FIELDS:
        lines.append(
            f'    printf("field %s %zu %zu\\n", "{f.path}", offsetof(rtc_segment, {f.path}), '
            f"sizeof(SEG->{f.path}));"
        )
        if f.kind_path is not None:
            lines.append(f'    printf("kind %s %s\\n", "{f.path}", KIND(SEG->{f.kind_path}));')
    consts = dict(CONSTANTS)
    for group, mapping in (
        ("STATE_NAMES", STATE_NAMES_C),
        ("DEGRADED_BITS", DEGRADED_BITS_C),
        ("WAKE_MODES", WAKE_MODES_C),
        ("LEVELS", LEVELS_C),
        ("SPAN_KINDS", SPAN_KINDS_C),
        ("SPAN_STATUS", SPAN_STATUS_C),
    ):
        for key, expr in mapping.items():
            consts[f"{group}.{key}"] = expr
    for name, expr in ENUM_CONSTANTS.items():
        consts[f"enums.{name}"] = expr
    for name, expr in consts.items():
        lines.append(f'    printf("const %s %llu\\n", "{name}", (unsigned long long)({expr}));')
    for name in STRUCT_DTYPES:
        lines.append(f'    printf("struct %s %zu\\n", "{name}", sizeof({name}));')
    lines += ["    return 0;", "}", ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Compile and run the generated program; parse what it prints."""
    tmp = tmp_path_factory.mktemp("layout")
    src = tmp / "layout_dump.c"
    exe = tmp / "layout_dump"
    src.write_text(_c_program())
    build = subprocess.run(
        ["gcc", "-std=gnu11", "-Wall", "-Werror", f"-I{INCLUDE}", "-o", str(exe), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, f"gcc failed:\n{build.stderr}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30, check=True)
    out: dict[str, dict] = {"field": {}, "kind": {}, "const": {}, "struct": {}}
    for line in run.stdout.splitlines():
        tag, name, *vals = line.split()
        if tag == "field":
            out["field"][name] = (int(vals[0]), int(vals[1]))
        elif tag == "kind":
            out["kind"][name] = vals[0]
        else:
            out[tag][name] = int(vals[0])
    return out


def test_walk_covers_every_leaf() -> None:
    # guard against a walk that silently skips parts of the dtype
    paths = {f.path for f in FIELDS}
    for expected in (
        "header.magic",
        "status.wake_hist",
        "status.wake_hist[0]",
        "status.task_name",
        "strings.text[0]",
        "ckpt[0]",
        "ckpt[0].seq",
        "ckpt[0].data[0]",
        "ckpt[0].origin",
        "ckpt[0].flags",
        "inbound.data[0]",
        "clock.bracket_ns",
        "control.seq",
        "control.sample_ppm",
        "control.node_id",
        "status.act_interval_cycles",
        "status.inbound_refused",
        "journal_ring.hdr.tail",
        "journal_ring.recs[0].cycles",
        "span_ring.recs[0].attr_key[0]",
        "span_ring.recs[0].attrs[0]",
        "cmd_ring.recs[0].epoch",
        "log_ring.hdr.tail",
        "log_ring.recs[0].args",
        "log_ring.recs[0].args[0]",
        "cmd_ring.recs[0].args[0]",
        "span_ring.recs[0].flags",
        "event_ring.recs[0].b",
    ):
        assert expected in paths


def test_every_offset_and_size_matches_c(c_layout: dict[str, dict]) -> None:
    c_fields = c_layout["field"]
    assert set(c_fields) == {f.path for f in FIELDS}
    mismatches = [
        f"{f.path}: numpy offset {f.offset} size {f.size}, C offset {c_fields[f.path][0]} "
        f"size {c_fields[f.path][1]}"
        for f in FIELDS
        if c_fields[f.path] != (f.offset, f.size)
    ]
    assert not mismatches, "\n".join(mismatches)


def test_every_scalar_type_matches_c(c_layout: dict[str, dict]) -> None:
    mismatches = []
    for f in FIELDS:
        if f.kind is None:
            continue
        c_kind = c_layout["kind"][f.path]
        # rtc_arg is a union of int64_t and double; numpy reads it as int64
        ok = c_kind == f.kind or (c_kind == "union8" and f.kind in ("i8", "f8"))
        if not ok:
            mismatches.append(f"{f.path}: numpy {f.kind}, C {c_kind}")
    assert not mismatches, "\n".join(mismatches)


def test_struct_sizes(c_layout: dict[str, dict]) -> None:
    assert set(_core.STRUCT_SIZES) == set(STRUCT_DTYPES)
    for name, dt in STRUCT_DTYPES.items():
        assert c_layout["struct"][name] == dt.itemsize, name
        assert _core.STRUCT_SIZES[name] == dt.itemsize, name
    assert _core.SEGMENT_SIZE == layout.SEGMENT.itemsize == c_layout["struct"]["rtc_segment"]


def _structs(dtype: np.dtype, path: str = "SEGMENT") -> Iterator[tuple[str, np.dtype]]:
    yield path, dtype
    for name in dtype.names:
        fdt = dtype.fields[name][0]
        base = fdt.subdtype[0] if fdt.subdtype is not None else fdt
        if base.names:
            yield from _structs(base, f"{path}.{name}")


@pytest.mark.parametrize("path,dtype", list(_structs(layout.SEGMENT)), ids=lambda x: str(x))
def test_numpy_structs_have_no_gaps(path: str, dtype: np.dtype) -> None:
    end = 0
    for name in dtype.names:
        fdt, off = dtype.fields[name][:2]
        assert off == end, f"{path}.{name} starts at {off}, previous field ended at {end}"
        end = off + fdt.itemsize
    assert dtype.itemsize == end == sum(dtype.fields[n][0].itemsize for n in dtype.names)
    assert not dtype.isalignedstruct


def test_constants_match_header(c_layout: dict[str, dict]) -> None:
    c = c_layout["const"]
    for name in CONSTANTS:
        assert getattr(layout, name) == c[name], name
    assert c["ABI_VERSION"] == _core.ABI_VERSION
    assert {c[f"STATE_NAMES.{k}"]: k for k in STATE_NAMES_C} == layout.STATE_NAMES
    assert {c[f"DEGRADED_BITS.{k}"]: k for k in DEGRADED_BITS_C} == layout.DEGRADED_BITS
    assert {k: c[f"WAKE_MODES.{k}"] for k in WAKE_MODES_C} == layout.WAKE_MODES
    assert {k: c[f"LEVELS.{k}"] for k in LEVELS_C} == layout.LEVELS
    assert {c[f"SPAN_KINDS.{k}"]: k for k in SPAN_KINDS_C} == enums.SPAN_KINDS
    assert {c[f"SPAN_STATUS.{k}"]: k for k in SPAN_STATUS_C} == enums.SPAN_STATUS
    for name in ENUM_CONSTANTS:
        assert getattr(enums, name) == c[f"enums.{name}"], name
    assert not hasattr(layout, "EV_CHECKPOINT") and not hasattr(enums, "EV_CHECKPOINT")
    assert layout.MAGIC.to_bytes(8, "little") == b"RTCORE01"


def test_array_lengths_match_constants() -> None:
    seg = layout.SEGMENT
    assert seg["ckpt"].shape == (layout.CKPT_SLOTS,)
    assert seg["inbound"] == layout.CKPT_SLOT
    assert layout.SPAN_REC["attrs"].shape == layout.SPAN_REC["attr_key"].shape
    assert layout.SPAN_REC["attrs"].shape == (layout.SPAN_ATTRS,)
    assert layout.LOG_REC["args"].shape == (layout.LOG_ARGS,)
    assert layout.CMD_REC["args"].shape == (layout.CMD_ARGS,)
    assert layout.CKPT_SLOT["data"].shape == (layout.CKPT_MAX,)
    assert layout.STATUS["wake_hist"].shape == (layout.HIST_BUCKETS,)
    assert layout.STRINGS["text"].shape == (layout.STRINGS_MAX,)
    assert layout.STRINGS["text"].base.itemsize == layout.STRING_LEN
    for ring, (field, rec) in layout.RINGS.items():
        cap = getattr(layout, f"{ring.upper()}_RING_CAP")
        assert seg[field]["recs"].shape == (cap,)
        assert seg[field]["recs"].base == rec


def test_formatted_segment_reads_back_through_numpy(shm_name: str) -> None:
    """The C formatter's writes land where the numpy view looks for them."""
    from rtcore.segment import Segment

    seg = Segment.create(shm_name)
    try:
        v = seg.view()
        h = v["header"]
        assert int(h["magic"]) == layout.MAGIC
        assert int(h["abi_version"]) == layout.ABI_VERSION
        assert int(h["header_size"]) == layout.HEADER.itemsize
        assert int(h["segment_size"]) == layout.SEGMENT.itemsize
        assert int(h["ckpt_slots"]) == layout.CKPT_SLOTS
        assert int(h["ckpt_max"]) == layout.CKPT_MAX
        assert int(h["strings_max"]) == layout.STRINGS_MAX
        assert int(v["control"]["mode"]) == layout.MODE_RUN
        assert int(v["control"]["active"]) == 0, "a new segment fails closed"
        assert int(v["control"]["log_level"]) == layout.LEVELS["INFO"]
        assert int(v["control"]["seq"]) % 2 == 0
        ctl = _core.read_control(seg.buf)
        assert (ctl["mode"], ctl["active"], ctl["epoch"], ctl["sample_ppm"]) == (0, 0, 0, 0)
        mono, real, bracket = _core.read_clock(seg.buf)
        assert int(v["clock"]["mono_ns"]) == mono and int(v["clock"]["real_ns"]) == real
        assert int(h["created_ns"]) == real and 0 <= bracket < 1_000_000
        assert int(v["clock"]["seq"]) % 2 == 0 and int(v["clock"]["seq"]) > 0
        assert _core.read_checkpoint(seg.buf, _core.INBOUND)[0] == "empty"
        assert int(v["status"]["numa_node"]) == -1
        for ring, (field, rec) in layout.RINGS.items():
            hdr = v[field]["hdr"]
            assert int(hdr["capacity"]) == getattr(layout, f"{ring.upper()}_RING_CAP")
            assert int(hdr["record_size"]) == rec.itemsize
            assert _core.RingReader(seg.buf, ring).record_size == rec.itemsize
            head, tail, pushed, dropped, cap = _core.ring_counters(seg.buf, ring)
            assert (head, tail, pushed, dropped) == (0, 0, 0, 0)
            assert cap == int(hdr["capacity"])
        # C writes of the control block land on the numpy fields
        _core.write_control(seg.buf, epoch=7, node_id=3, sample_ppm=5, lease_timeout_ns=9)
        assert (int(v["control"]["epoch"]), int(v["control"]["node_id"])) == (7, 3)
        assert int(v["control"]["sample_ppm"]) == 5
        assert int(v["control"]["lease_timeout_ns"]) == 9
        # and the other way round: numpy writes are what C reads
        v["header"]["owner_pid"] = 4242
        assert seg.owner_pid() == 4242
        del v, h, hdr
    finally:
        seg.close()
        seg.unlink()
