"""The control block as one consistent snapshot, with real processes: a
reader copying it the loop's way never accepts a torn copy while two writers
(changes and lease renewals, as the agent's threads do) publish as fast as
they can, and a renewal is never lost to a concurrent change."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from rtcore import _core, _testhooks
from rtcore.segment import Segment
from tests.conftest import ROOT

WRITER = textwrap.dedent(
    """
    import sys, threading, time
    from rtcore import _core
    from rtcore.segment import Segment
    seg = Segment.open(sys.argv[1])
    until = time.monotonic() + float(sys.argv[2])

    def renew():
        while time.monotonic() < until:
            _core.renew_lease(seg.buf)

    t = threading.Thread(target=renew)
    t.start()
    k = 1
    while time.monotonic() < until:
        # every change keeps epoch == node_id and lease_timeout_ns == 1000 * epoch
        _core.write_control(seg.buf, epoch=k, node_id=k, lease_timeout_ns=1000 * k,
                            log_level=10 + k % 40)
        k += 1
    t.join()
    print(k - 1)
    """
)


def test_a_reader_never_accepts_a_torn_control_block_and_no_renewal_is_lost(shm_name):
    seg = Segment.create(shm_name)
    try:
        _core.write_control(seg.buf, epoch=0, node_id=0, lease_timeout_ns=0)
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, shm_name, "2.0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(0.3)
            accepted, rejected, torn = _testhooks.control_reader(seg.buf, 1.0)
            # the lease only moves forward: a change never writes back a stale one
            last = 0
            backwards = 0
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                lease = _core.read_control(seg.buf)["lease_ns"]
                backwards += lease < last
                last = max(last, lease)
            out, _ = writer.communicate(timeout=30)
        finally:
            writer.kill()
            writer.wait()
        assert writer.returncode == 0
        changes = int(out)
        assert changes > 1000 and accepted > 1000, (changes, accepted)
        assert rejected > 0, "the reader met writes in progress (the test had contention)"
        assert torn == 0, f"{torn} of {accepted} accepted copies were torn"
        assert backwards == 0, "a renewal was overwritten by a concurrent change"
        final = _core.read_control(seg.buf)
        assert final["seq"] % 2 == 0, "every writer ended its change"
        assert final["epoch"] == final["node_id"] == changes
        assert final["lease_timeout_ns"] == 1000 * changes
    finally:
        seg.close()
        seg.unlink()
