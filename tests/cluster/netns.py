"""Network namespaces a test builds for itself: one bridge namespace (the
switch) and one namespace per node, each node wired to the bridge by a veth
pair, on a private /24 that exists only inside these namespaces. Nothing in
the root namespace changes: every link is created inside a namespace.

    with NetNS(3) as net:
        Member(..., prefix=net.prefix(0), listen_host=net.addr(0))
        net.cut(0)   # the switch port goes down: a pulled cable
        net.heal(0)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
from types import TracebackType

import pytest

_counter = itertools.count()
BRIDGE = "br0"
NODE_IF = "eth0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


class NetNS:
    """N node namespaces on one bridge. `teardown()` (also on exit) kills every
    process left in them and deletes them; it may run any number of times."""

    def __init__(self, n: int) -> None:
        count = next(_counter)
        # interface names are at most 15 characters; namespace names need not
        # be, but short ones keep `ip netns list` readable
        self.base = f"rtc{os.getpid() % 10000}x{count}"
        self.subnet = 10 + (os.getpid() + count) % 240  # the X of 10.213.X.0/24
        self.bridge_ns = f"{self.base}b"
        self.nodes = [f"{self.base}n{i}" for i in range(n)]
        self._made: list[str] = []

    # ---- building ----------------------------------------------------------

    def __enter__(self) -> NetNS:
        try:
            self.build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.teardown()

    def build(self) -> None:
        self._add_ns(self.bridge_ns)
        b = self.bridge_ns
        _ip("-n", b, "link", "set", "lo", "up")
        # no spanning tree, no forwarding delay: a port forwards as soon as it is up
        _ip(
            "-n", b, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0"
        )
        _ip("-n", b, "link", "set", BRIDGE, "up")
        for i, ns in enumerate(self.nodes):
            self._add_ns(ns)
            # both ends are made inside namespaces: the pair never appears in
            # the root namespace, even for an instant
            peer = ("peer", "name", NODE_IF, "netns", ns)
            _ip("-n", b, "link", "add", self._port(i), "type", "veth", *peer)
            _ip("-n", b, "link", "set", self._port(i), "master", BRIDGE, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", NODE_IF)
            _ip("-n", ns, "link", "set", NODE_IF, "up")

    def _add_ns(self, ns: str) -> None:
        try:
            _ip("netns", "add", ns)
        except FileNotFoundError:
            pytest.skip("the `ip` command (iproute2) is not installed")
        except subprocess.CalledProcessError as e:
            if self._made:
                raise
            pytest.skip(f"cannot create a network namespace (`ip netns add`): {e.stderr.strip()}")
        self._made.append(ns)

    @staticmethod
    def _port(i: int) -> str:
        return f"p{i}"

    # ---- using -----------------------------------------------------------

    def prefix(self, i: int) -> list[str]:
        """Run a command inside node i's namespace."""
        return ["ip", "netns", "exec", self.nodes[i]]

    def addr(self, i: int) -> str:
        return f"10.213.{self.subnet}.{i + 1}"

    def cut(self, i: int) -> None:
        """Partition node i: its switch port goes down. The node sees its
        carrier drop, packets to and from it vanish, and its TCP connections
        stay open but dead, as with a pulled cable (no RST, no FIN)."""
        _ip("-n", self.bridge_ns, "link", "set", self._port(i), "down")

    def heal(self, i: int) -> None:
        _ip("-n", self.bridge_ns, "link", "set", self._port(i), "up")

    def cut_pair(self, i: int, j: int) -> None:
        """Cut only the path between nodes i and j (both ways: blackhole routes
        in both namespaces); each still reaches the others. TCP connections
        between the two stay open but dead."""
        _ip("-n", self.nodes[i], "route", "add", "blackhole", f"{self.addr(j)}/32")
        _ip("-n", self.nodes[j], "route", "add", "blackhole", f"{self.addr(i)}/32")

    def heal_pair(self, i: int, j: int) -> None:
        _ip("-n", self.nodes[i], "route", "del", "blackhole", f"{self.addr(j)}/32", check=False)
        _ip("-n", self.nodes[j], "route", "del", "blackhole", f"{self.addr(i)}/32", check=False)

    # ---- teardown ---------------------------------------------------------

    def pids(self, ns: str) -> list[int]:
        done = _ip("netns", "pids", ns, check=False)
        return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []

    def teardown(self) -> None:
        for ns in reversed(self._made):
            for pid in self.pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)
        self._made.clear()
