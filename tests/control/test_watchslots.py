"""Watch stream admission and idle reaping, driven by a hand-moved clock."""

from __future__ import annotations

import pytest

from control.rpc.watchslots import Busy, WatchSlots, client_of


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_client_is_the_peer_host():
    assert client_of("ipv4:10.0.0.5:51234") == "10.0.0.5"
    assert client_of("ipv6:[::1]:51234") == "[::1]"
    assert client_of("unix:/run/rtcore.sock") == "unix:/run/rtcore.sock"


def test_limits_per_client_and_in_total():
    slots = WatchSlots(total=3, per_client=2, idle_s=1000, clock=Clock())
    a1, _ = slots.acquire("a", lambda: None), slots.acquire("a", lambda: None)
    with pytest.raises(Busy, match="a has 2 watch streams"):
        slots.acquire("a", lambda: None)
    b1 = slots.acquire("b", lambda: None)  # one client never takes every slot
    with pytest.raises(Busy, match="3 watch streams are open"):
        slots.acquire("c", lambda: None)
    b1.release()
    slots.acquire("c", lambda: None)
    a1.release()
    a1.release()  # twice is harmless
    slots.acquire("a", lambda: None)
    with pytest.raises(Busy):
        slots.acquire("d", lambda: None)


def test_only_streams_silent_for_idle_s_are_closed():
    clock = Clock()
    closed: list[str] = []
    slots = WatchSlots(total=8, per_client=8, idle_s=10, clock=clock)
    quiet = slots.acquire("a", lambda: closed.append("quiet"))
    busy = slots.acquire("a", lambda: closed.append("busy"))
    clock.now = 9.0
    busy.touch()
    slots.reap_once()
    assert closed == []
    clock.now = 10.0
    slots.reap_once()
    assert closed == ["quiet"] and quiet.idle and not busy.idle
    slots.reap_once()
    assert closed == ["quiet"], "closed once"
    clock.now = 19.0
    slots.reap_once()
    assert closed == ["quiet", "busy"]
