"""Trajectory jobs as users write them: JSON or CSV job files, and the checks
every waypoint list passes before it is queued (the same ones the RT task
applies, so a job the agent accepts is never refused by TRAJ_APPEND).

JSON: {"name": "...", "waypoints": [{"t": 0.5, "q": [0.1, 0.2]}, ...]}
CSV:  one waypoint per row, "t,q0,q1,..."; an optional header row of those
      names; "#" starts a comment; blank lines are skipped.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import stat
from collections.abc import Sequence
from typing import Any

from control.api import Waypoint
from control.errors import InvalidArgument
from rtcore import reftask_limits as reftask

MAX_FILE_BYTES = 1 << 20
MAX_ABS_Q = 1000.0
MAX_NAME_CHARS = 200
MAX_WAYPOINTS = reftask.MAX_WAYPOINTS
MAX_JOINTS = reftask.MAX_JOINTS
_JSON_KEYS = ("name", "waypoints")
_WAYPOINT_KEYS = ("t", "q")


class _Bad(Exception):
    """A problem with waypoint `index` (None: the list as a whole) in
    `column` ("t", "q<j>", "q" for the joint list, None: the whole waypoint);
    each caller turns it into its own kind of location."""

    def __init__(self, index: int | None, column: str | None, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.column = column
        self.message = message


def validate_waypoints(
    waypoints: Sequence[Any], joints: int | None = None, field: str = "waypoints"
) -> list[Waypoint]:
    """Check a waypoint list of (t, [q...]) pairs and return it as floats.

    1..64 waypoints; t finite, > 0 and strictly increasing; every waypoint the
    same number of joint targets (1..8, and == joints when given); every
    target finite with |q| <= 1000. Raises InvalidArgument naming the item,
    e.g. field 'waypoints[3].q[2]'.
    """
    try:
        return _check(waypoints, joints)
    except _Bad as bad:
        raise InvalidArgument(_json_path(field, bad), bad.message) from None


def validate_name(name: Any, field: str = "name") -> str:
    """A job name: a string of 1..200 characters, not only blanks."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise InvalidArgument(field, f"must be a string of 1..{MAX_NAME_CHARS} characters")
    return name


def parse_job_file(path: str | os.PathLike[str]) -> tuple[str, list[Waypoint]]:
    """Read a .json or .csv job file (other names: by content) into
    (name, waypoints). Raises InvalidArgument whose message starts with the
    location: 'FILE:LINE: column q2: ...' or 'FILE: waypoints[3].q[2]: ...'."""
    where = os.fspath(path)
    text = _read_text(where)
    ext = os.path.splitext(where)[1].lower()
    if ext == ".json" or (ext != ".csv" and text.lstrip().startswith(("{", "["))):
        return _parse_json(where, text)
    return _parse_csv(where, text)


def _check(waypoints: Sequence[Any], joints: int | None) -> list[Waypoint]:
    if isinstance(waypoints, str | bytes) or not isinstance(waypoints, Sequence):
        raise _Bad(None, None, "expected a list of waypoints")
    if not waypoints:
        raise _Bad(None, None, "no waypoints; a job needs at least one")
    if len(waypoints) > MAX_WAYPOINTS:
        raise _Bad(
            None,
            None,
            f"{len(waypoints)} waypoints; a job holds at most {MAX_WAYPOINTS} "
            "(split the trajectory into several jobs)",
        )
    out: list[Waypoint] = []
    width = joints
    prev_t = 0.0
    for i, wp in enumerate(waypoints):
        if isinstance(wp, str | bytes) or not isinstance(wp, Sequence) or len(wp) != 2:
            raise _Bad(i, None, "expected a (t, q) pair: time and a list of joint targets")
        t = _number(i, "t", wp[0])
        if i == 0 and t <= 0:
            raise _Bad(i, "t", f"{t:g} must be > 0 (seconds from the job's start)")
        if t <= prev_t:
            raise _Bad(i, "t", f"{t:g} is not after the previous waypoint's {prev_t:g}")
        prev_t = t
        q = wp[1]
        if isinstance(q, str | bytes) or not isinstance(q, Sequence):
            raise _Bad(i, "q", "expected a list of joint targets")
        if not 1 <= len(q) <= MAX_JOINTS:
            raise _Bad(i, "q", f"{len(q)} joint targets; the RT task drives 1..{MAX_JOINTS}")
        if width is None:
            width = len(q)
        elif len(q) != width:
            other = "the RT task has" if joints is not None else "waypoint 0 has"
            raise _Bad(i, "q", f"{len(q)} joint targets, {other} {width}")
        targets = [_number(i, f"q{j}", v) for j, v in enumerate(q)]
        for j, v in enumerate(targets):
            if abs(v) > MAX_ABS_Q:
                raise _Bad(i, f"q{j}", f"{v:g} is outside -{MAX_ABS_Q:g}..{MAX_ABS_Q:g}")
        out.append((t, targets))
    return out


def _number(index: int, column: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Bad(index, column, f"{value!r} is not a number")
    f = float(value)
    if not math.isfinite(f):
        raise _Bad(index, column, f"{f} is not a finite number")
    return f


def _json_path(field: str, bad: _Bad) -> str:
    if bad.index is None:
        return field
    path = f"{field}[{bad.index}]"
    if bad.column is None:
        return path
    if bad.column in _WAYPOINT_KEYS:
        return f"{path}.{bad.column}"
    return f"{path}.q[{bad.column[1:]}]"


def _read_text(where: str) -> str:
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InvalidArgument(where, "no such file") from None
    except IsADirectoryError:
        raise InvalidArgument(where, "is a directory, not a job file") from None
    except PermissionError:
        raise InvalidArgument(where, "permission denied") from None
    except OSError as e:
        raise InvalidArgument(where, f"cannot open: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(where, "is a directory, not a job file")
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(where, "is not a regular file")
        # read one byte past the limit: the file may have grown since fstat
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES and (chunk := os.read(fd, MAX_FILE_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidArgument(
            where, f"larger than {MAX_FILE_BYTES >> 20} MiB; a job file holds at most 64 waypoints"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InvalidArgument(
            f"{where}:{line}",
            f"not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8",
        ) from None
    if not text.strip():
        raise InvalidArgument(where, "empty file")
    return text


def _parse_json(where: str, text: str) -> tuple[str, list[Waypoint]]:
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise InvalidArgument(
            f"{where}:{e.lineno}", f"invalid JSON: {e.msg} (column {e.colno})"
        ) from None
    except _DuplicateKey as e:
        raise InvalidArgument(where, f"key {e.args[0]!r} appears twice in one object") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(
            where, 'expected an object {"name": ..., "waypoints": [{"t": ..., "q": [...]}, ...]}'
        )
    for key in doc:
        if key not in _JSON_KEYS:
            raise InvalidArgument(
                f"{where}: {key}", f"unknown key (expected {', '.join(_JSON_KEYS)})"
            )
    name = validate_name(doc.get("name", _stem(where)), field=f"{where}: name")
    if "waypoints" not in doc:
        raise InvalidArgument(where, "missing 'waypoints'")
    raw = doc["waypoints"]
    if not isinstance(raw, list):
        raise InvalidArgument(f"{where}: waypoints", "expected a list")
    pairs: list[tuple[Any, Any]] = []
    for i, wp in enumerate(raw):
        at = f"{where}: waypoints[{i}]"
        if not isinstance(wp, dict):
            raise InvalidArgument(at, 'expected an object {"t": ..., "q": [...]}')
        for key in wp:
            if key not in _WAYPOINT_KEYS:
                raise InvalidArgument(f"{at}.{key}", "unknown key (expected t, q)")
        for key in _WAYPOINT_KEYS:
            if key not in wp:
                raise InvalidArgument(at, f"missing {key!r}")
        pairs.append((wp["t"], wp["q"]))
    return name, validate_waypoints(pairs, field=f"{where}: waypoints")


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in items:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _parse_csv(where: str, text: str) -> tuple[str, list[Waypoint]]:
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        data = line.split("#", 1)[0].strip()
        if data:
            rows.append((lineno, [cell.strip() for cell in data.split(",")]))
    if not rows:
        raise InvalidArgument(where, "no waypoints (only comments and blank lines)")
    has_header = rows[0][1][0].lower() == "t"
    if has_header:
        lineno, header = rows.pop(0)
        expected = ["t", *(f"q{j}" for j in range(len(header) - 1))]
        if [h.lower() for h in header] != expected:
            raise InvalidArgument(
                f"{where}:{lineno}", f"header must be {','.join(expected)}, got {','.join(header)}"
            )
        width = len(header)
        if not rows:
            raise InvalidArgument(where, "no waypoints after the header")
    else:
        width = len(rows[0][1])
    lines = [lineno for lineno, _ in rows]
    pairs: list[tuple[float, list[float]]] = []
    try:
        for i, (_, cells) in enumerate(rows):
            if len(cells) != width:
                raise _Bad(
                    i, None, f"{len(cells)} columns, expected {width} (t and {width - 1} joints)"
                )
            # a first row that is not numbers is most likely a misspelt header
            hint = " (a header row must be t,q0,q1,...)" if i == 0 and not has_header else ""
            values = [_cell(i, _column(j), cell, hint) for j, cell in enumerate(cells)]
            pairs.append((values[0], values[1:]))
        return _stem(where), _check(pairs, None)
    except _Bad as bad:
        if bad.index is None:
            raise InvalidArgument(where, bad.message) from None
        at = f"{where}:{lines[bad.index]}"
        if bad.column not in (None, "q"):
            at = f"{at}: column {bad.column}"
        raise InvalidArgument(at, bad.message) from None


def _column(j: int) -> str:
    return "t" if j == 0 else f"q{j - 1}"


def _cell(index: int, column: str, cell: str, hint: str) -> float:
    if not cell:
        raise _Bad(index, column, "empty; every column needs a number")
    try:
        return float(cell)
    except ValueError:
        raise _Bad(index, column, f"{cell!r} is not a number{hint}") from None


def _stem(where: str) -> str:
    return os.path.splitext(os.path.basename(where))[0]
