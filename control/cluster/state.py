"""What the cluster replicates through Raft, and how each entry applies.

Every method marked @replicated runs on every node, in log order, on
pysyncobj's thread: it must be deterministic (it reads nothing but its
arguments and this object) and quick. Its attributes are the replicated
state; pysyncobj pickles them into its snapshots. Side effects on the node
(the local job database, the RT's inbound checkpoint slot) go through the
`Listener`, which is not replicated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pysyncobj import SyncObjConsumer, replicated

from control.errors import ControlError
from control.jobs import machine
from control.jobs.machine import Job

# finished jobs kept in the replicated state (the local databases keep all)
KEEP_FINISHED = 1000


@dataclass(frozen=True)
class Member:
    node_id: str
    raft: str
    listen: str
    witness: bool


@dataclass(frozen=True)
class Checkpoint:
    """A primary's checkpoint as replicated: its slot metadata, its state and
    when its RT wrote it (wall clock, through the primary's clock anchor)."""

    node_id: str
    term: int
    seq: int
    cycle: int
    epoch: int
    origin: int
    task_id: int
    wall_ns: int
    state: bytes


class Listener(Protocol):
    def job_changed(self, job: Job) -> None: ...

    def checkpoint_applied(self, ckpt: Checkpoint) -> None: ...

    def setting_changed(self, name: str, value: Any) -> None: ...


class NullListener:
    def job_changed(self, job: Job) -> None:
        pass

    def checkpoint_applied(self, ckpt: Checkpoint) -> None:
        pass

    def setting_changed(self, name: str, value: Any) -> None:
        pass


class ClusterState(SyncObjConsumer):
    def __init__(self, listener: Callable[[], Listener]) -> None:
        super().__init__()
        # not replicated (set before the consumer takes its attribute list)
        self._listener = listener
        # ---- replicated from here on ----
        self.members: dict[str, Member] = {}  # raft address -> member
        self.member_set: tuple[
            str, ...
        ] = ()  # every voter's raft address, as the first joiner saw it
        self.jobs: dict[int, Job] = {}
        self.last_job_id = 0
        self.ckpt: Checkpoint | None = None
        self.settings: dict[str, Any] = {}
        self.health: dict[str, tuple[bool, int]] = {}  # node id -> (RT healthy, reports)
        # the primary whose lease rounds and checkpoints came last, and a handover
        self.lease_holder = ""
        self.handover_to = ""  # may skip the lease wait (the lease holder handed over)
        self.handover_term = 0
        self.transfer_to = ""  # the leader asked this node to take over: votes for it count

    def _serialize(self) -> dict[str, Any]:
        return {k: v for k, v in super()._serialize().items() if k != "_listener"}

    def _deserialize(self, data: dict[str, Any]) -> None:
        """A snapshot loaded (at start, or sent by the leader to a node that fell
        behind its log): the jobs it holds go to the local mirror too, or a
        node caught up this way would not know them."""
        super()._deserialize(data)
        listener = self._listener()
        for job in sorted(self.jobs.values(), key=lambda j: j.id):
            listener.job_changed(job)

    # ---- membership ---------------------------------------------------------

    @replicated
    def join(self, member: Member, voters: tuple[str, ...]) -> tuple[str, str]:
        """('ok', '') or ('refused', why): a node id used twice, or a peer list
        that differs from the cluster's."""
        if not self.member_set:
            self.member_set = voters
        elif voters != self.member_set:
            return (
                "refused",
                f"node {member.node_id} ({member.raft}) lists the members "
                f"{', '.join(voters)}; the cluster has {', '.join(self.member_set)}",
            )
        for other in self.members.values():
            if other.node_id == member.node_id and other.raft != member.raft:
                return (
                    "refused",
                    f"node id {member.node_id!r} is already used by the member at {other.raft}",
                )
        self.members[member.raft] = member
        return "ok", ""

    # ---- the primary's lease and checkpoints -------------------------------

    @replicated
    def lease_round(self, node_id: str, term: int) -> bool:
        """A round of node_id's quorum lease in `term`; True if it is the
        first of the node a handover named (it need not wait a lease out)."""
        return self._round(node_id, term)

    @replicated
    def checkpoint(self, ckpt: Checkpoint) -> bool:
        """Also a lease round of the primary that sent it."""
        granted = self._round(ckpt.node_id, ckpt.term)
        self.ckpt = ckpt
        self._listener().checkpoint_applied(ckpt)
        return granted

    @replicated
    def handover(self, from_node: str, to_node: str, term: int) -> None:
        """The leader stopped actuating and hands over to to_node: the others
        vote for to_node although their leader is alive; and if the leader
        held the lease, its rounds end here, so to_node need not wait one out."""
        self.transfer_to, self.handover_term = to_node, term
        self.handover_to = to_node if from_node == self.lease_holder else ""

    def _round(self, node_id: str, term: int) -> bool:
        granted = node_id == self.handover_to and term > self.handover_term
        if node_id != self.handover_to or granted:
            self.handover_to = ""  # a handover is used once, by its target only
        # any round ends a transfer: its target's (done) or another's (the
        # handover was given up, or overtaken)
        self.transfer_to = ""
        self.lease_holder = node_id
        return granted

    # ---- jobs ---------------------------------------------------------------

    @replicated
    def job_submit(self, name: str, waypoints: machine.Waypoints, time_ns: int) -> Any:
        job_id = self.last_job_id + 1
        result = self._job_event(machine.Submitted(job_id, time_ns, name, waypoints))
        if result[0] == "ok":
            self.last_job_id = job_id
        return result

    @replicated
    def job_event(self, ev: machine.Event) -> Any:
        return self._job_event(ev)

    def _job_event(self, ev: machine.Event) -> tuple[Any, ...]:
        """('ok', changed, state before, job) or ('error', kind, message)."""
        before = self.jobs.get(ev.job_id)
        if before is None and not isinstance(ev, machine.Submitted):
            return ("error", "NotFound", f"job {ev.job_id} does not exist")
        try:
            after = machine.apply(before, ev)
        except ControlError as e:
            return ("error", type(e).__name__, str(e))
        if after is before:
            return ("ok", False, before.state if before else None, after)
        self.jobs[after.id] = after
        self._prune()
        self._listener().job_changed(after)
        return ("ok", True, before.state if before else None, after)

    def _prune(self) -> None:
        finished = [j for j in self.jobs.values() if j.state in machine.FINAL]
        if len(finished) > KEEP_FINISHED:
            for job in sorted(finished, key=lambda j: j.id)[: len(finished) - KEEP_FINISHED]:
                del self.jobs[job.id]

    @replicated
    def report_health(self, node_id: str, healthy: bool) -> None:
        self.health[node_id] = (healthy, self.health.get(node_id, (True, 0))[1] + 1)

    # ---- settings -----------------------------------------------------------

    @replicated
    def set_setting(self, name: str, value: Any) -> None:
        self.settings[name] = value
        self._listener().setting_changed(name, value)
