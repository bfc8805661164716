"""Job files (JSON, CSV) and the waypoint checks shared with the agent: good
files parse, every bad one is refused whole with its location in the message."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from control.errors import InvalidArgument
from control.jobs.store import JobStore
from control.jobs.trajectory import MAX_FILE_BYTES, parse_job_file, validate_waypoints

WPS = [(0.5, [0.1, 0.2, 0.3]), (1.0, [0.4, 0.5, 0.6]), (1.5, [0.0, -0.1, 1000.0])]


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def refused(path: str) -> str:
    with pytest.raises(InvalidArgument) as e:
        parse_job_file(path)
    message = str(e.value)
    assert "\n" not in message
    return message


# ---- validate_waypoints --------------------------------------------------


def test_valid_waypoints_come_back_as_floats():
    out = validate_waypoints([(1, [0, np.float32(0.5)]), (2.5, (np.int64(3), -1000))])
    assert out == [(1.0, [0.0, 0.5]), (2.5, [3.0, -1000.0])]
    assert all(type(v) is float for t, q in out for v in (t, *q))
    assert validate_waypoints(WPS, joints=3) == WPS


@pytest.mark.parametrize(
    ("waypoints", "joints", "field", "words"),
    [
        ([], None, "waypoints", "no waypoints"),
        ([(t + 1.0, [0.0]) for t in range(65)], None, "waypoints", "at most 64"),
        ([(0.0, [0.0])], None, "waypoints[0].t", "> 0"),
        ([(-1.0, [0.0])], None, "waypoints[0].t", "> 0"),
        ([(1.0, [0.0]), (1.0, [0.0])], None, "waypoints[1].t", "not after"),
        ([(1.0, [0.0]), (0.5, [0.0])], None, "waypoints[1].t", "not after"),
        ([(math.nan, [0.0])], None, "waypoints[0].t", "not a finite number"),
        ([(1.0, [0.0, 0.0]), (2.0, [0.0, math.inf])], None, "waypoints[1].q[1]", "finite"),
        ([(1.0, [0.0, 1000.5])], None, "waypoints[0].q[1]", "outside -1000..1000"),
        ([(1.0, [-2000.0])], None, "waypoints[0].q[0]", "outside"),
        ([(1.0, [])], None, "waypoints[0].q", "0 joint targets"),
        ([(1.0, [0.0] * 9)], None, "waypoints[0].q", "1..8"),
        ([(1.0, [0.0, 0.0]), (2.0, [0.0])], None, "waypoints[1].q", "waypoint 0 has 2"),
        ([(1.0, [0.0, 0.0])], 6, "waypoints[0].q", "the RT task has 6"),
        ([(1.0, [0.0, "abc"])], None, "waypoints[0].q[1]", "'abc' is not a number"),
        ([("1", [0.0])], None, "waypoints[0].t", "'1' is not a number"),
        ([(True, [0.0])], None, "waypoints[0].t", "not a number"),
        ([(1.0, "0.5")], None, "waypoints[0].q", "list of joint targets"),
        ([(1.0,)], None, "waypoints[0]", "(t, q) pair"),
        ([1.0], None, "waypoints[0]", "(t, q) pair"),
        ("abc", None, "waypoints", "list of waypoints"),
    ],
)
def test_invalid_waypoints_name_the_field(waypoints, joints, field, words):
    with pytest.raises(InvalidArgument) as e:
        validate_waypoints(waypoints, joints=joints)
    assert e.value.field == field
    assert words in str(e.value)


def test_field_prefix_is_the_callers():
    with pytest.raises(InvalidArgument) as e:
        validate_waypoints([(1.0, [0.0]), (2.0, [0.0, 1.0, "x"])], field="job.points")
    assert e.value.field == "job.points[1].q"


# ---- good files ----------------------------------------------------------


def test_json_file(tmp_path):
    doc = {"name": "pick", "waypoints": [{"t": t, "q": q} for t, q in WPS]}
    assert parse_job_file(write(tmp_path, "a.json", json.dumps(doc))) == ("pick", WPS)


def test_json_name_defaults_to_the_file_stem_and_content_is_sniffed(tmp_path):
    doc = {"waypoints": [{"q": q, "t": t} for t, q in WPS]}
    path = write(tmp_path, "place-v2.job", "\n\n  " + json.dumps(doc, indent=2))
    assert parse_job_file(path) == ("place-v2", WPS)


def test_csv_file_with_header_comments_and_blank_lines(tmp_path):
    text = (
        "# exported by the teach pendant\n"
        "\n"
        "t, q0, q1, q2\n"
        "0.5,0.1,0.2,0.3   # approach\n"
        "  \n"
        "1.0, 0.4, 0.5, 0.6\n"
        "1.5,0,-0.1,1e3\n"
    )
    assert parse_job_file(write(tmp_path, "weld.CSV", text)) == ("weld", WPS)


def test_csv_without_header_with_bom_and_sniffed(tmp_path):
    text = "\ufeff0.5,0.1,0.2,0.3\r\n1.0,0.4,0.5,0.6\r\n1.5,0,-0.1,1000\r\n"
    assert parse_job_file(write(tmp_path, "path.txt", text.encode())) == ("path", WPS)


# ---- bad files: each message names the place -----------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t,q0,q1,q2\n0.5,0.1,abc,0.3\n", "{}:2: column q1: 'abc' is not a number"),
        (
            "t,q0,q1,q2\n# c\n0.5,0.1,0.2,0.3\n1.0,0.4,0.5,x\n",
            "{}:4: column q2: 'x' is not a number",
        ),
        ("0.5,0.1\n1.0,,0.2\n", "{}:2: 3 columns, expected 2 (t and 1 joints)"),
        ("0.5,0.1\n1.0,\n", "{}:2: column q0: empty; every column needs a number"),
        ("0.5,0.1\n0.5,0.2\n", "{}:2: column t: 0.5 is not after the previous waypoint's 0.5"),
        ("0,0.1\n", "{}:1: column t: 0 must be > 0 (seconds from the job's start)"),
        ("1,0.1\n2,nan\n", "{}:2: column q0: nan is not a finite number"),
        ("1,0.1\n2,1001\n", "{}:2: column q0: 1001 is outside -1000..1000"),
        ("1," + ",".join(["0"] * 9) + "\n", "{}:1: 9 joint targets; the RT task drives 1..8"),
        ("1\n", "{}:1: 0 joint targets; the RT task drives 1..8"),
        ("t,q0,q2\n1,0,0\n", "{}:1: header must be t,q0,q1, got t,q0,q2"),
        (
            "time,q0\n1,0\n",
            "{}:1: column t: 'time' is not a number (a header row must be t,q0,q1,...)",
        ),
        ("t,q0\n", "{}: no waypoints after the header"),
        ("# nothing here\n\n", "{}: no waypoints (only comments and blank lines)"),
        (
            "".join(f"{i + 1},0\n" for i in range(65)),
            "{}: 65 waypoints; a job holds at most 64 (split the trajectory into several jobs)",
        ),
    ],
)
def test_bad_csv(tmp_path, text, message):
    path = write(tmp_path, "job.csv", text)
    assert refused(path) == message.replace("{}", path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"waypoints": [\n  {"t": 1, "q": [0]},\n  {"t": 2 "q": [0]}\n]}', "{}:3: invalid JSON"),
        ('{"waypoints": [{"t": 1, "q": [0]}]', "{}:1: invalid JSON"),
        (
            json.dumps(
                {
                    "waypoints": [{"t": i + 1, "q": [0, 0, 0]} for i in range(3)]
                    + [{"t": 4, "q": [0, 0, "abc"]}]
                }
            ),
            "{}: waypoints[3].q[2]: 'abc' is not a number",
        ),
        ('{"waypoints": [{"t": 1}]}', "{}: waypoints[0]: missing 'q'"),
        ('{"waypoints": [{"t": 1, "q": [0], "v": 2}]}', "{}: waypoints[0].v: unknown key"),
        (
            '{"waypoints": [[1, [0]]]}',
            '{}: waypoints[0]: expected an object {"t": ..., "q": [...]}',
        ),
        ('{"waypoint": []}', "{}: waypoint: unknown key (expected name, waypoints)"),
        ('{"name": "x"}', "{}: missing 'waypoints'"),
        ('{"waypoints": {"t": 1}}', "{}: waypoints: expected a list"),
        ('{"waypoints": []}', "{}: waypoints: no waypoints; a job needs at least one"),
        ('{"name": 7, "waypoints": []}', "{}: name: must be a string of 1..200 characters"),
        ('{"name": "", "waypoints": []}', "{}: name: must be a string of 1..200 characters"),
        ('[{"t": 1, "q": [0]}]', '{}: expected an object {"name": ..., "waypoints"'),
        ('{"waypoints": [{"t": 1, "t": 2, "q": [0]}]}', "{}: key 't' appears twice"),
        ('{"waypoints": [{"t": NaN, "q": [0]}]}', "{}: waypoints[0].t: nan is not a finite"),
        (
            '{"waypoints": [{"t": 2, "q": [0]}, {"t": 1, "q": [0]}]}',
            "{}: waypoints[1].t: 1 is not after the previous waypoint's 2",
        ),
    ],
)
def test_bad_json(tmp_path, text, message):
    path = write(tmp_path, "job.json", text)
    assert refused(path).startswith(message.replace("{}", path))


def test_unreadable_files(tmp_path):
    missing = str(tmp_path / "nope.csv")
    assert refused(missing) == f"{missing}: no such file"
    assert refused(str(tmp_path)) == f"{tmp_path}: is a directory, not a job file"
    empty = write(tmp_path, "empty.json", "  \n")
    assert refused(empty) == f"{empty}: empty file"
    latin1 = write(tmp_path, "l1.csv", "1,0\n# caf\xe9\n".encode("latin-1"))
    assert refused(latin1) == f"{latin1}:2: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    huge = write(tmp_path, "huge.csv", "# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    assert refused(huge).startswith(f"{huge}: larger than 1 MiB")
    fifo = str(tmp_path / "fifo.csv")
    os.mkfifo(fifo)
    assert refused(fifo) == f"{fifo}: is not a regular file"


def test_unreadable_file_permissions(tmp_path):
    path = write(tmp_path, "secret.csv", "1,0\n")
    os.chmod(path, 0)
    if os.access(path, os.R_OK):
        pytest.skip("running as root: file permissions do not stop reads")
    assert refused(path) == f"{path}: permission denied"


def test_a_bad_file_queues_nothing(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    rows = "".join(f"{i + 1},0.1,0.2\n" for i in range(10))
    path = write(tmp_path, "job.csv", rows + "11,0.1\n")
    with pytest.raises(InvalidArgument, match=r"job\.csv:11: 2 columns, expected 3"):
        store.submit(*parse_job_file(path))
    assert store.list() == []
    store.close()
