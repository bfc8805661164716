"""The actuation journal file: intervals from RT records, and the ones an RT
could not close, closed from its status block without ever understating them."""

from __future__ import annotations

from pathlib import Path

from control.rt.journal import ActuationJournal


def start(cycle: int, epoch: int = 1, mono: int = 1_000, real: int = 10_000) -> dict:
    return {
        "kind": "start",
        "pid": 9,
        "epoch": epoch,
        "cycle": cycle,
        "mono_ns": mono,
        "real_ns": real,
        "cycles": 0,
    }


def test_intervals_pair_starts_and_ends_in_order(tmp_path: Path):
    j = ActuationJournal(str(tmp_path / "j.jsonl"), "n1")
    j.append([start(1), {**start(1), "kind": "end", "cycle": 10, "cycles": 10, "mono_ns": 9_000}])
    j.append([start(20, epoch=2)])
    got = j.intervals()
    assert [(i["epoch"], i["start_cycle"], i["end_cycle"], i["cycles"]) for i in got] == [
        (1, 1, 10, 10),
        (2, 20, None, None),
    ]
    assert got[0]["node"] == "n1" and got[0]["closed_by"] == "rt"
    assert j.intervals(limit=1) == got[-1:]


def test_an_interval_the_rt_left_open_is_closed_from_its_status(tmp_path: Path):
    j = ActuationJournal(str(tmp_path / "j.jsonl"), "n1")
    j.append([start(100, mono=1_000_000, real=5_000_000)])
    status = {
        "act_epoch": 1,
        "act_first_cycle": 100,
        "act_last_cycle": 150,
        "act_last_mono_ns": 1_050_000,
        "act_interval_cycles": 51,
    }
    end = j.close_from_status(status, now_real_ns=9_999_999, now_mono_ns=8_888_888)
    assert end is not None and end["cycle"] == 150 and end["cycles"] == 51
    assert end["real_ns"] == 5_050_000, "the same offset as its start"
    (interval,) = j.intervals()
    assert (interval["closed_by"], interval["end_bound"]) == ("agent", "exact")
    assert j.close_from_status(status, 0, 0) is None, "nothing open any more"


def test_a_status_of_another_interval_gives_an_upper_bound_never_a_short_end(tmp_path: Path):
    """The status block moved on (a later interval of a new RT): the end of
    the open one is not known, so it is recorded as at most now."""
    j = ActuationJournal(str(tmp_path / "j.jsonl"), "n1")
    j.append([start(100)])
    status = {
        "act_epoch": 1,
        "act_first_cycle": 500,
        "act_last_cycle": 900,
        "act_last_mono_ns": 7,
        "act_interval_cycles": 401,
    }
    end = j.close_from_status(status, now_real_ns=123_456, now_mono_ns=654_321)
    assert end is not None
    assert (end["cycle"], end["cycles"], end["real_ns"]) == (None, None, 123_456)
    (interval,) = j.intervals()
    assert interval["end_bound"] == "upper" and interval["end_time_ns"] == 123_456


def test_a_torn_last_line_is_skipped(tmp_path: Path):
    path = tmp_path / "j.jsonl"
    j = ActuationJournal(str(path), "n1")
    j.append([start(1)])
    with open(path, "a") as f:
        f.write('{"kind": "end", "cyc')  # a crash mid-append
    assert len(j.records()) == 1 and j.open_interval() is not None
