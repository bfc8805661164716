"""Checks of a node's cluster flags, made before anything starts: each
refusal is one line naming the flag."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from control.errors import InvalidArgument


def check_membership(cfg: Any, label: Callable[[str], str]) -> None:
    if not cfg.raft:
        raise InvalidArgument(
            label("raft"), "a cluster member needs its own Raft address (--raft HOST:PORT)"
        )
    if not cfg.peers:
        raise InvalidArgument(
            label("peers"), "a cluster needs the other members' Raft addresses (--peer HOST:PORT)"
        )
    if len(set(cfg.peers)) != len(cfg.peers):
        twice = sorted({p for p in cfg.peers if cfg.peers.count(p) > 1})
        raise InvalidArgument(label("peers"), f"{', '.join(twice)} given twice")
    if cfg.raft in cfg.peers:
        raise InvalidArgument(label("peers"), f"{cfg.raft} is this node's own --raft address")
    voters = 1 + len(cfg.peers)
    if voters % 2 == 0:
        raise InvalidArgument(
            label("peers"),
            f"{voters} voters cannot always form a majority after a split; use an odd number "
            "(a primary/standby pair adds a third member started with --witness)",
        )
    if cfg.witness and cfg.cpus:
        raise InvalidArgument(label("cpus"), "a witness runs no RT loop: give it no CPUs")
    if cfg.lease_ms >= cfg.election_timeout_ms:
        raise InvalidArgument(
            label("lease_ms"),
            f"must be below election_timeout_ms ({cfg.election_timeout_ms}): an old primary "
            "must stop acting before a new one can be elected",
        )
    if cfg.heartbeat_ms * 3 > cfg.election_timeout_ms:
        raise InvalidArgument(
            label("heartbeat_ms"),
            f"must be at most a third of election_timeout_ms ({cfg.election_timeout_ms})",
        )
    for name, addr in [("raft", cfg.raft)] + [("peers", p) for p in cfg.peers]:
        host, _, port = addr.rpartition(":")
        try:
            socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise InvalidArgument(label(name), f"{addr}: unknown host ({e})") from None
    host, _, _ = cfg.raft.rpartition(":")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host.strip("[]"), 0))
    except OSError as e:
        raise InvalidArgument(
            label("raft"), f"{cfg.raft} is not an address of this machine ({e.strerror})"
        ) from None
