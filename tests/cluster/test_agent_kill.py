"""The primary's agent killed alone: its RT goes on actuating until the
quorum lease it was given runs out, while the survivors, seeing the
connection close, elect a new primary within milliseconds. The new
primary's wait (the lease, from the last acknowledgement its majority gave
the old leader) is all that keeps the two RTs apart. (Written by the review:
it catches a primary that skips the wait, and voters that report no
acknowledgement.)"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.cluster.clusterproc import overlaps
from tests.cluster.test_failover import start

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.mark.parametrize("round_", range(2))
def test_kill_of_the_primary_agent_alone_leaves_no_overlap(make_cluster, round_):
    c = make_cluster()
    old = start(c)
    rt_pid = old.rt_pid()
    os.kill(old.agent_pid(), signal.SIGKILL)
    new = c.wait_primary(timeout=10, exclude=old.node_id)
    time.sleep(1.0)
    assert os.path.exists(f"/proc/{rt_pid}"), "the old RT outlived its agent"
    ivs = c.intervals()
    old_iv = [iv for iv in ivs if iv.node == old.node_id][-1]
    new_iv = next(iv for iv in ivs if iv.node == new.node_id)
    assert old_iv.end_ns is not None, "the old RT stopped by itself"
    print(
        f"old RT's last actuated cycle -> new primary's first: "
        f"{(new_iv.start_ns - old_iv.end_ns) / 1e6:.1f} ms"
    )
    assert not overlaps(ivs), ivs
