"""Acceptance: a primary cut off the network (each agent in its own network
namespace; the switch port goes down, as with a pulled cable) stops actuating
by itself within its quorum lease, the two others elect a new primary that
takes over without a single instant of two nodes actuating, and the old
primary, healed, comes back as a standby that follows the new primary's
state. The job goes on.

The figures come from the actuation journals (wall clock), not from polling:
polling `rtctl` only says when to read the journals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtcore.segment import Segment
from tests.cluster.clusterproc import Interval, Member, TestCluster, job_file, overlaps
from tests.cluster.netns import NetNS
from tests.conftest import Spawner, wait_for

RAFT_PORT = 7771
LEASE_MS = 60  # the agent's default, given explicitly: the bound below rests on it
# the old primary's last actuated instant may be this much later than the
# lease after the cut: scheduling slack on a loaded 2-CPU machine
END_TOLERANCE_MS = 250


@pytest.fixture
def net() -> Iterator[NetNS]:
    with NetNS(3) as n:
        yield n


@pytest.fixture
def cluster(spawn: Spawner, tmp_path: Path, net: NetNS) -> Iterator[TestCluster]:
    raft = [f"{net.addr(i)}:{RAFT_PORT}" for i in range(3)]
    members = [
        Member(
            spawn,
            tmp_path,
            f"pt{os.getpid() % 10000}n{i + 1}",
            raft[i],
            [a for a in raft if a != raft[i]],
            "--insecure",  # gRPC on the namespace's address: the agent refuses clear text otherwise
            "--lease-ms",
            str(LEASE_MS),
            prefix=net.prefix(i),
            listen_host=net.addr(i),
        )
        for i in range(3)
    ]
    print("member logs:", *(str(m.log_path) for m in members))
    c = TestCluster(members)
    try:
        yield c
    finally:
        c.cleanup()


def adopted_seq(m: Member) -> int:
    """The newest replicated checkpoint m's RT adopted in shadow mode (read from
    the root namespace: /dev/shm is shared across network namespaces)."""
    seg = Segment.open(m.shm)
    try:
        st = seg.view()["status"]
        value = int(st["adopted_seq"])
        del st  # a view into the mapping: released before close
        return value
    finally:
        seg.close()


def last_closed_before(m: Member, t_ns: int) -> Interval:
    """m's last actuated interval that began before t_ns, once it has ended."""

    def closed() -> Interval | None:
        before = [iv for iv in m.intervals() if iv.start_ns < t_ns]
        return before[-1] if before and before[-1].end_ns is not None else None

    found = wait_for(closed, timeout=10, interval=0.1, what=f"{m.node_id}'s interval to end")
    assert isinstance(found, Interval)
    return found


def first_after(m: Member, t_ns: int) -> Interval:
    """m's first actuated interval that began after t_ns (its agent persists
    the journal a moment after the RT starts actuating)."""

    def first() -> Interval | None:
        return next((iv for iv in m.intervals() if iv.start_ns > t_ns), None)

    found = wait_for(first, timeout=10, interval=0.1, what=f"{m.node_id} to actuate")
    assert isinstance(found, Interval)
    return found


def actuated_ms(ivs: list[Interval], since_ns: int, until_ns: int) -> float:
    """How long some node drove the outputs between since_ns and until_ns."""
    total = 0
    for iv in ivs:
        end = until_ns if iv.end_ns is None else min(iv.end_ns, until_ns)
        total += max(0, end - max(iv.start_ns, since_ns))
    return total / 1e6


def job(m: Member, job_id: int) -> dict | None:
    return next((j for j in m.call("job", "list") if j["id"] == job_id), None)


def test_the_overlap_check_sees_a_shared_instant() -> None:
    """The journal check below can fail: two nodes sharing one nanosecond, or
    one still actuating, are flagged; back to back is not."""
    ms = 1_000_000
    a = Interval("a", 1, 0, 100 * ms, 0, 100)
    assert overlaps([a, Interval("b", 2, 100 * ms - 1, 200 * ms, 0, 100)]) != []
    assert overlaps([a, Interval("b", 2, 50 * ms, None, 0, None)]) != []
    assert overlaps([a, Interval("b", 2, 100 * ms, 200 * ms, 0, 100)]) == []
    assert overlaps([a, Interval("a", 2, 50 * ms, 200 * ms, 0, 100)]) == []


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_cut_primary_stops_within_lease_and_a_new_one_takes_over(
    cluster: TestCluster, net: NetNS, tmp_path: Path
) -> None:
    cluster.start()

    def settled() -> dict | None:
        roles = cluster.roles()
        return (
            roles if sorted(map(str, roles.values())) == ["primary", "standby", "standby"] else None
        )

    roles = wait_for(settled, timeout=60, interval=0.05, what="one primary and two standbys")
    assert isinstance(roles, dict)
    old = cluster.by_id(next(n for n, r in roles.items() if r == "primary"))
    standbys = [m for m in cluster.members if m is not old]
    term0 = old.status()["cluster"]["term"]

    job_id = old.call("job", "submit", job_file(tmp_path, n=60, dt=0.5))["id"]
    wait_for(
        lambda: old.call("job", "get", str(job_id))["state"] == "running",
        timeout=20,
        interval=0.1,
        what="the job to run",
    )
    for m in standbys:
        wait_for(
            lambda m=m: adopted_seq(m) > 0,
            timeout=20,
            interval=0.1,
            what=f"{m.node_id} to adopt the primary's state",
        )
    cursor_before = old.call("job", "get", str(job_id))["cursor"]

    # ---- cut the primary off -------------------------------------------------
    i = cluster.members.index(old)
    cut_ns = time.time_ns()  # before the command: the bound below errs on the strict side
    net.cut(i)
    took_ms = (time.time_ns() - cut_ns) / 1e6
    print(f"cut {old.node_id} (term {term0}); the command took {took_ms:.1f} ms")

    def stopped() -> dict | None:
        st = old.status()  # through its own namespace, which still reaches itself
        return st if st and not st["rt"]["actuating"] and st["role"] != "primary" else None

    st = wait_for(stopped, timeout=5, interval=0.02, what="the cut-off primary to stop actuating")
    print(
        f"cut-off primary seen {st['role']} {(time.time_ns() - cut_ns) / 1e6:.0f} ms after the cut"
    )

    new = cluster.wait_primary(timeout=30, exclude=old.node_id)
    assert new in standbys
    term1 = new.status()["cluster"]["term"]
    assert term1 > term0

    old_iv = last_closed_before(old, cut_ns)
    assert old_iv.end_ns is not None
    new_iv = first_after(new, cut_ns)
    ivs = cluster.intervals()
    ended_ms = (old_iv.end_ns - cut_ns) / 1e6
    print(
        f"old primary's last actuated instant: {ended_ms:.1f} ms after the cut "
        f"(bound {LEASE_MS} + {END_TOLERANCE_MS} ms); the new primary actuates from "
        f"{(new_iv.start_ns - cut_ns) / 1e6:.1f} ms after the cut "
        f"({(new_iv.start_ns - old_iv.end_ns) / 1e6:.1f} ms without a primary actuating)"
    )
    assert overlaps(ivs) == []
    assert ended_ms <= LEASE_MS + END_TOLERANCE_MS
    assert [iv for iv in ivs if iv.node == old.node_id and iv.start_ns > cut_ns] == []

    # ---- heal --------------------------------------------------------------
    before_heal = adopted_seq(old)
    heal_ns = time.time_ns()
    net.heal(i)

    def follows() -> dict | None:
        st = old.status()
        ok = st and st["role"] == "standby" and st["cluster"]["term"] >= term1
        return st if ok and adopted_seq(old) > before_heal else None

    # a diverged follower once took ~26 s to catch up (pysyncobj stepped it back
    # one entry per round trip), the primary losing its lease meanwhile
    st = wait_for(follows, timeout=10, interval=0.1, what="the healed node to follow as a standby")
    assert not st["rt"]["actuating"]
    print(
        f"healed {old.node_id}: {st['role']} in term {st['cluster']['term']} following "
        f"{st['cluster']['leader']}, adopted seq {before_heal} -> {adopted_seq(old)}, "
        f"{(time.time_ns() - heal_ns) / 1e6:.0f} ms after the heal"
    )

    followed_ns = time.time_ns()
    ivs = cluster.intervals()
    assert overlaps(ivs) == []
    since_cut = [iv for iv in ivs if iv.node == old.node_id and iv.start_ns > cut_ns]
    assert since_cut == [], f"{old.node_id} drove the outputs again after the heal"
    driven_ms = actuated_ms(ivs, heal_ns, followed_ns)
    span_ms = (followed_ns - heal_ns) / 1e6
    begun = sum(iv.start_ns > heal_ns for iv in ivs)
    print(
        f"from the heal until it followed: term {term1} -> {st['cluster']['term']}, "
        f"{begun} actuation interval(s) begun "
        f"(0: the primary was not disturbed), outputs driven {driven_ms:.0f} of {span_ms:.0f} ms"
    )
    # the healed node's return disturbs nobody: no election (pre-vote), the
    # primary's actuation never interrupted
    assert st["cluster"]["term"] == term1, (term1, st["cluster"])
    assert begun == 0, [iv for iv in ivs if iv.start_ns > heal_ns]
    assert driven_ms >= 0.99 * span_ms, (driven_ms, span_ms)

    # ---- the job went on ---------------------------------------------------
    primary = cluster.wait_primary(timeout=30)
    on_primary = job(primary, job_id)
    print(f"job {job_id} on {primary.node_id}: {on_primary}")
    assert on_primary is not None, f"job {job_id} lost"
    assert on_primary["state"] in ("running", "done")
    assert on_primary["cursor"] >= cursor_before
    # every member, the healed one included, has it from the replicated log
    for m in cluster.members:
        wait_for(lambda m=m: job(m, job_id), timeout=10, interval=0.2, what=f"job on {m.node_id}")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_link_cut_between_a_standby_and_the_primary_disturbs_nobody(
    cluster: TestCluster, net: NetNS
) -> None:
    """Only the path between the primary and one standby goes (a flapping
    switch port, a bad cable on one side): the standby stops hearing its
    leader, but the other standby still does, so it gets no pre-vote, raises
    no term, and cannot depose the primary; healed, it follows again. Guards
    the pre-vote and the "no vote while the leader lives" rule."""
    cluster.start()
    primary = cluster.wait_primary(timeout=60)
    cluster.wait_standbys(2, timeout=60)
    p = cluster.members.index(primary)
    f = next(i for i in range(3) if i != p)
    standby = cluster.members[f]
    term = primary.status()["cluster"]["term"]
    cut_ns = time.time_ns()
    net.cut_pair(p, f)
    try:
        time.sleep(3.0)  # ten election timeouts and more
        st = standby.status()
        assert st is not None and st["cluster"]["term"] == term, st and st["cluster"]
        assert primary.role() == "primary"
        assert primary.status()["cluster"]["term"] == term
    finally:
        net.heal_pair(p, f)
    wait_for(lambda: standby.role() == "standby", timeout=15, what="the standby to follow again")
    time.sleep(1.0)
    assert primary.role() == "primary"
    assert primary.status()["cluster"]["term"] == term
    assert standby.status()["cluster"]["term"] == term
    ivs = cluster.intervals()
    assert overlaps(ivs) == []
    mine = [iv for iv in ivs if iv.node == primary.node_id]
    assert len(mine) == 1 and mine[0].start_ns < cut_ns and mine[0].end_ns is None, mine
