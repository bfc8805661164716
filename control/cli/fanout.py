"""Ask every member of the target's cluster the same question at once: what
`--all-nodes` commands share. A member that does not answer is reported, not
raised, so the others' answers still reach the user."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from control.cli.cluster import member_address
from control.cli.common import UsageError, connect
from control.errors import ControlError

if TYPE_CHECKING:
    from control.rpc.client import Client

Question = Callable[["Client"], dict[str, Any]]


@dataclass
class Answer:
    """One member's answer (`doc`), or why there is none (`error`)."""

    node_id: str  # as the target's cluster view names it ("" until known)
    address: str  # where it was asked
    witness: bool
    is_target: bool  # the member the command connected to
    doc: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Fanout:
    answers: list[Answer]
    clustered: bool  # False: the target runs alone and only it was asked


def ask_every_member(args: argparse.Namespace, ask: Question) -> Fanout:
    """`ask` every member the target knows, witnesses too, each on its own
    thread with the command's connection options (TLS, token, --timeout).

    The target itself must answer the cluster question (its failure is the
    command's). A refusal as INVALID_ARGUMENT is raised: the question is
    wrong, so every node would refuse it alike."""
    from control.rpc.client import ClientError

    with connect(args) as client:
        try:
            view = client.cluster_status()
        except ClientError as e:
            if e.code != grpc.StatusCode.FAILED_PRECONDITION:  # a lone node's refusal
                raise
            # alone, it is all there is to ask: its failure is the command's
            alone = Answer("", client.target, witness=False, is_target=True, doc=ask(client))
            return Fanout([alone], clustered=False)
        target = client.target
    answers = [
        Answer(
            m.get("node_id") or "",
            # the user's address for the target: it is known to work from here
            target if m.get("self") else member_address(m),
            bool(m.get("witness")),
            bool(m.get("self")),
        )
        for m in view.get("members") or []
    ]
    return Fanout(ask_each(args, answers, lambda _: ask), clustered=True)


def ask_each(
    args: argparse.Namespace, members: list[Answer], question: Callable[[Answer], Question]
) -> list[Answer]:
    """Each member its own question, all at once; new Answers, in order."""
    asked = [Answer(m.node_id, m.address, m.witness, m.is_target) for m in members]
    with ThreadPoolExecutor(max_workers=max(len(asked), 1)) as pool:
        return list(pool.map(lambda a: _ask(args, a, question(a)), asked))


def _ask(args: argparse.Namespace, answer: Answer, ask: Question) -> Answer:
    from control.rpc.client import ClientError

    if not answer.address:
        answer.error = "no gRPC address known for it yet"
        return answer
    try:
        with connect(argparse.Namespace(**{**vars(args), "target": answer.address})) as client:
            answer.doc = ask(client)
    except ClientError as e:
        if e.code == grpc.StatusCode.INVALID_ARGUMENT:
            raise
        answer.error = str(e)
    except (ControlError, UsageError) as e:
        answer.error = str(e)
    return answer


def report_unanswered(fanout: Fanout) -> None:
    """On stderr: one line per member that did not answer, then how many did;
    or that the target is not part of a cluster. Nothing when all answered."""
    if not fanout.clustered:
        warn(f"{fanout.answers[0].address} is not part of a cluster: asked it alone")
        return
    missing = [a for a in fanout.answers if a.doc is None]
    for a in missing:
        warn(f"node {a.node_id or '?'} ({a.address or 'no address'}) did not answer: {a.error}")
    if missing:
        total = len(fanout.answers)
        warn(f"{total - len(missing)} of {total} nodes answered")


def warn(message: str) -> None:
    print(f"rtctl: warning: {message}", file=sys.stderr, flush=True)
