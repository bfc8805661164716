"""`--restore-file`: resume from a durable checkpoint when shared memory has none."""

from __future__ import annotations

import os

from rtcore import ckptfile
from rtcore.segment import Segment
from tests.rtcore.rtproc import finish, open_when_ready, status

CPU = str(max(os.sched_getaffinity(0)))


def test_fresh_segment_resumes_from_the_file(spawn, shm_name, tmp_path):
    first = spawn.rt(shm_name, "--cycles", "300", "--keep-shm", "--cpus", CPU)
    assert finish(first)[0] == 0
    seg = Segment.open(shm_name)
    meta, data = seg.newest_checkpoint()
    seg.close()
    os.unlink(f"/dev/shm/{shm_name}")
    path = str(tmp_path / "ckpt.bin")
    with open(path, "wb") as f:
        f.write(ckptfile.encode(meta, data, saved_ns=1))

    proc = spawn.rt(shm_name, "--cpus", CPU, "--restore-file", path)
    seg = open_when_ready(shm_name, proc, min_cycles=meta["cycle"] + 5)
    st = status(seg)
    assert st["restored_seq"] == meta["seq"] and st["restored_cycle"] == meta["cycle"] == 300
    seg.close()


def test_damaged_restore_file_is_one_line_and_leaves_nothing(spawn, shm_name, tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(b"RTCKPT01" + b"\0" * 20)
    rc, _, err = finish(spawn.rt(shm_name, "--restore-file", str(path)))
    assert rc == 2 and err.count("\n") == 1 and "--restore-file" in err and "truncated" in err
    assert not os.path.exists(f"/dev/shm/{shm_name}")
