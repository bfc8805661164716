"""Trace context carried across the node: a caller's trace through the job
it submits into the RT loop, and the RT's tracking errors answered in the
trace of the cycle that saw them (RT -> agent -> RT)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from control.tracing import context as tracectx
from rtcore import layout, records

SpanSink = Callable[[list[dict[str, Any]]], None]
Send = Callable[[list[bytes]], bool]


class TracePropagation:
    def __init__(
        self,
        send: Send,
        record: SpanSink,
        next_seq: Callable[[], int],
        node_id: str,
        ratio: Callable[[], float],
    ) -> None:
        self._send = send
        self._record = record
        self._next_seq = next_seq
        self._node = node_id
        self._ratio = ratio
        # the trace each job's commands continue: the span that accepted it
        self._jobs: dict[int, tracectx.TraceContext] = {}

    def job_submitted(
        self, job_id: int, waypoints: int, traceparent: str | None, start_ns: int
    ) -> str:
        """An `agent.submit_job` span, child of the caller's context if it sent
        one (else a new root, sampled at the node's ratio); returns the trace id."""
        incoming = tracectx.from_traceparent(traceparent)
        ctx = (incoming or tracectx.new_trace(random.random() < self._ratio())).child()
        if ctx.sampled:
            self._jobs[job_id] = ctx
            self._record(
                [
                    self._span(
                        "agent.submit_job",
                        ctx,
                        incoming.span_id if incoming else None,
                        start_ns,
                        kind="server",
                        attributes={"job.id": job_id, "job.waypoints": waypoints},
                    )
                ]
            )
        return ctx.trace_id

    def send_job_commands(self, recs: list[bytes]) -> bool:
        """A job's commands continue the trace of the request that submitted
        it: a `bus.command` span, parent of the RT's `rt.command` spans."""
        job_id = job_of(recs[0]) if recs else 0
        parent = self._jobs.get(job_id)
        if parent is None:
            return self._send(recs)
        start = time.time_ns()
        span = parent.child()
        ok = self._send([stamp_trace(r, span) for r in recs])
        self._record(
            [
                self._span(
                    "bus.command",
                    span,
                    parent.span_id,
                    start,
                    kind="producer",
                    status="ok" if ok else "error",
                    status_message=None if ok else "command ring full or no RT",
                    attributes={"job.id": job_id, "commands": len(recs)},
                )
            ]
        )
        return ok

    def tracking_error(self, ev: dict[str, Any]) -> None:
        """The built-in round trip: a tracking error the RT reports (the child
        of its `rt.emit` producer span) is delivered, handled and answered
        with a command the RT applies, all in the trace of the cycle that saw
        it. In each process a child lies inside its parent; the hops between
        them are producer -> consumer. The default reaction acknowledges (a
        NOP the loop applies); a policy (gain scaling, replanning) plugs in
        here."""
        if not ev["trace_id"] or not ev["sampled"]:
            return
        delivered = time.time_ns()
        base = tracectx.TraceContext(ev["trace_id"], ev["span_id"] or "", tracectx.SAMPLED)
        deliver, handle, command = base.child(), base.child(), base.child()
        handling = time.time_ns()
        seq = self._next_seq()
        rec = stamp_trace(records.command(layout.CMD_NOP, seq=seq), command)
        sending = time.time_ns()
        ok = self._send([rec])
        sent = time.time_ns()
        attrs = {
            "rtcore.joint": ev["a"],
            "rtcore.error_urad": ev["b"],
            "messaging.delivery_ms": (delivered - ev["time_ns"]) / 1e6,
        }
        self._record(
            [
                self._span(
                    "bus.deliver",
                    deliver,
                    ev["span_id"],
                    delivered,
                    sent,
                    kind="consumer",
                    attributes=attrs,
                ),
                self._span(
                    "agent.handle", handle, deliver.span_id, handling, sent, attributes=attrs
                ),
                self._span(
                    "bus.command",
                    command,
                    handle.span_id,
                    sending,
                    sent,
                    kind="producer",
                    status="ok" if ok else "error",
                    attributes={"command.seq": seq},
                ),
            ]
        )

    def _span(
        self,
        name: str,
        ctx: tracectx.TraceContext,
        parent: str | None,
        start_ns: int,
        end_ns: int | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        return tracectx.agent_span(
            name, ctx, parent, start_ns, end_ns, node=self._node, pid=os.getpid(), **kw
        )


def job_of(record: bytes) -> int:
    return int(np.frombuffer(record, dtype=layout.CMD_REC)[0]["job_id"])


def stamp_trace(record: bytes, ctx: tracectx.TraceContext) -> bytes:
    """A command record carrying ctx: the RT's span for it will be ctx's child."""
    rec = np.frombuffer(bytearray(record), dtype=layout.CMD_REC)
    rec["trace_id"] = np.frombuffer(bytes.fromhex(ctx.trace_id), dtype="u1")
    rec["span_id"] = np.frombuffer(bytes.fromhex(ctx.span_id), dtype="u1")
    rec["trace_flags"] = ctx.flags
    return rec.tobytes()
