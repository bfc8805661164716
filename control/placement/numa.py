"""NUMA placement of the RT process: where its pages are, how the node's
allocations go, and moving pages back when they drift (FR-003, FR-004).

The RT process binds itself at start (`--numa-node N`): its task state comes
from numa_alloc_onnode(N), its shared-memory segment is mbind()-ed to N, and
its own policy prefers N. Memory policy cannot be set on another process
(set_mempolicy and mbind act on the caller only), so the agent never changes
the policy: new allocations of the RT process keep following the node it chose
at start. What the agent can do at runtime is `migrate` the pages already
there with migrate_pages(2); nothing restarts. Moving the RT to a different
node for good means restarting it with the new `--numa-node`, because its CPU
affinity, preferred node and segment binding all stay on the old one.

Sources, all read without touching the RT process:

- /proc/PID/numa_maps: per mapping, its policy and pages per node.
- /sys/devices/system/node/nodeN/numastat: node-wide page *allocation*
  counters. local_node counts pages of node N handed to tasks running on node
  N, other_node those handed to tasks on other nodes. They are system-wide and
  counted at allocation, not per load or store: the closest a kernel counter
  comes to SC-003's "memory accesses", not a measurement of them.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from control.errors import FailedPrecondition, InvalidArgument, NotFound
from control.placement.procfs import stat_fields, unescape
from rtcore import topology

NUMASTAT_KEYS = (
    "numa_hit",
    "numa_miss",
    "numa_foreign",
    "interleave_hit",
    "local_node",
    "other_node",
)
# Fewer allocations than this on the node between two samples say nothing
# about locality: one page a kernel thread took from another node would read
# as 100% remote.
MIN_ALLOCATIONS = 64
# Mappings named in a remote-pages alert, largest first.
ALERT_MAPPINGS = 5
# Node masks passed to migrate_pages: 1024 nodes, as the RT's bind_numa.
_MASK_WORDS = 16
_MASK_BITS = _MASK_WORDS * 64

# Two policy names contain a space ("prefer (many)", "weighted interleave").
_LINE = re.compile(
    r"^(?P<addr>[0-9a-f]+) "
    r"(?P<policy>prefer \(many\)\S*|weighted interleave\S*|\S+)(?P<rest>.*)$"
)
_NODE = re.compile(r"^N(\d+)$")

OnAlert = Callable[[str, str, dict[str, Any]], None]


def _system(sysfs: str) -> str:
    return os.path.join(sysfs, "devices", "system")


def parse_numa_maps(text: str) -> dict[str, Any]:
    """Parse /proc/PID/numa_maps.

    Returns `pages_by_node` and `bytes_by_node` over the whole process (only
    pages the kernel placed on a node: a mapping with nothing faulted in has
    none), `total_pages`, `total_bytes`, and `mappings`: one dict per line
    with `address`, `policy` (as the kernel prints it: 'default', 'bind:0',
    'prefer:1', 'interleave:0-3'), `kind` ('file', 'heap', 'stack', 'anon'),
    `file`, `huge`, `pages_by_node`, `kernelpagesize_kB` (None when no page is
    present) and `counts` (anon, dirty, mapped, mapmax, active, ...).
    Page counts are in the mapping's own page size: 2048 kB for a huge page.
    """
    pages: dict[int, int] = {}
    nbytes: dict[int, int] = {}
    mappings: list[dict[str, Any]] = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m is None:
            continue
        mapping: dict[str, Any] = {
            "address": int(m["addr"], 16),
            "policy": m["policy"],
            "kind": "anon",
            "file": None,
            "huge": False,
            "pages_by_node": {},
            "kernelpagesize_kB": None,
            "counts": {},
        }
        for token in m["rest"].split():
            key, sep, value = token.partition("=")
            if not sep:
                if key in ("heap", "stack"):
                    mapping["kind"] = key
                elif key == "huge":
                    mapping["huge"] = True
            elif key == "file":
                mapping["kind"] = "file"
                mapping["file"] = unescape(value)
            elif key == "kernelpagesize_kB":
                mapping["kernelpagesize_kB"] = int(value)
            elif node := _NODE.match(key):
                mapping["pages_by_node"][int(node.group(1))] = int(value)
            elif value.isdigit():
                mapping["counts"][key] = int(value)
        page_bytes = _page_bytes(mapping)
        for n, count in mapping["pages_by_node"].items():
            pages[n] = pages.get(n, 0) + count
            nbytes[n] = nbytes.get(n, 0) + count * page_bytes
        mappings.append(mapping)
    return {
        "pages_by_node": dict(sorted(pages.items())),
        "bytes_by_node": dict(sorted(nbytes.items())),
        "total_pages": sum(pages.values()),
        "total_bytes": sum(nbytes.values()),
        "mappings": mappings,
    }


def read_numastat(sysfs: str = "/sys") -> dict[int, dict[str, int]]:
    """The numastat counters of every online node, in pages since boot."""
    out: dict[int, dict[str, int]] = {}
    base = os.path.join(_system(sysfs), "node")
    for node in topology.numa_nodes(_system(sysfs)):
        try:
            with open(os.path.join(base, f"node{node}", "numastat")) as f:
                text = f.read()
        except FileNotFoundError:
            continue
        counters = dict.fromkeys(NUMASTAT_KEYS, 0)
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                counters[key] = int(value)
        out[node] = counters
    return out


def validate_node(node: int, sysfs: str = "/sys") -> None:
    """InvalidArgument('node', ...) unless `node` is an online NUMA node."""
    nodes = topology.numa_nodes(_system(sysfs))
    if isinstance(node, bool) or not isinstance(node, int) or node not in nodes:
        raise InvalidArgument(
            "node",
            f"NUMA node {node} does not exist on this machine "
            f"(nodes: {topology.format_cpu_list(nodes)})",
        )


def choose_cpus(node: int, sysfs: str = "/sys") -> list[int]:
    """The CPUs of `node`: where an RT thread using its memory should run."""
    validate_node(node, sysfs)
    try:
        return topology.node_cpus(node, _system(sysfs))
    except topology.TopologyError:
        with_cpus = [n for n in topology.numa_nodes(_system(sysfs)) if _has_cpus(n, sysfs)]
        raise InvalidArgument(
            "node",
            f"NUMA node {node} has no CPUs (a memory-only node): run the RT on a node "
            f"with CPUs ({topology.format_cpu_list(with_cpus) or 'none'})",
        ) from None


def _has_cpus(node: int, sysfs: str) -> bool:
    try:
        return bool(topology.node_cpus(node, _system(sysfs)))
    except topology.TopologyError:
        return False


def _node_of_cpu(cpu: int, sysfs: str) -> int | None:
    for node in topology.numa_nodes(_system(sysfs)):
        if _has_cpus(node, sysfs) and cpu in topology.node_cpus(node, _system(sysfs)):
            return node
    return None


def _read_numa_maps(pid: int, proc: str) -> dict[str, Any] | None:
    """Parsed numa_maps of pid; None if there is no such process."""
    path = os.path.join(proc, str(pid), "numa_maps")
    try:
        with open(path) as f:
            return parse_numa_maps(f.read())
    except (FileNotFoundError, ProcessLookupError):
        return None
    except PermissionError:
        raise FailedPrecondition(
            f"cannot read {path}: the agent must run as the RT process's user or have "
            f"CAP_SYS_PTRACE (e.g. 'setcap cap_sys_ptrace+ep' on its interpreter, or root)"
        ) from None


def _last_cpu(pid: int, proc: str) -> int | None:
    try:
        with open(os.path.join(proc, str(pid), "stat")) as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat_fields(stat)
    # field 39 of proc_pid_stat(5), 'processor': the CPU it last ran on
    return int(fields[36]) if len(fields) > 36 else None


def _changes(
    before: dict[str, Any], after: dict[str, Any]
) -> Iterator[tuple[dict[str, Any], dict[int, int], dict[int, int]]]:
    """For each mapping in both numa_maps of one process (matched by start
    address): the mapping now, pages lost per node, pages gained per node.
    A mapping that appeared or went away is not movement and is skipped."""
    old = {m["address"]: m for m in before["mappings"]}
    for m in after["mappings"]:
        prev = old.get(m["address"])
        if prev is None:
            continue
        a, b = prev["pages_by_node"], m["pages_by_node"]
        down = {n: a[n] - b.get(n, 0) for n in a if a[n] > b.get(n, 0)}
        up = {n: b[n] - a.get(n, 0) for n in b if b[n] > a.get(n, 0)}
        if down and up:
            yield m, down, up


def _moved(
    before: dict[str, Any], after: dict[str, Any]
) -> tuple[int, int, dict[int, int], dict[int, int]]:
    """Pages that changed node between two numa_maps of one process: within a
    mapping, pages lost on some nodes and gained on others count as moved up
    to the smaller of the two, so growing or shrinking is not movement.
    Returns (pages, bytes, lost per node, gained per node)."""
    pages = nbytes = 0
    lost: dict[int, int] = {}
    gained: dict[int, int] = {}
    for m, down, up in _changes(before, after):
        count = min(sum(down.values()), sum(up.values()))
        pages += count
        nbytes += count * _page_bytes(m)
        for n, c in down.items():
            lost[n] = lost.get(n, 0) + c
        for n, c in up.items():
            gained[n] = gained.get(n, 0) + c
    return pages, nbytes, dict(sorted(lost.items())), dict(sorted(gained.items()))


def _page_bytes(mapping: dict[str, Any]) -> int:
    # a mapping with no page present prints no kernelpagesize_kB
    return (mapping["kernelpagesize_kB"] or 4) * 1024


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 3) if whole else None


class NumaMonitor:
    """Samples the RT process's NUMA placement; call `sample()` periodically
    from one thread (seconds apart: reading numa_maps walks the RT process's
    page tables under its mmap lock).

    `pid_getter` returns the RT process's pid, or 0/None while none runs.
    `node` is the node the RT is bound to, or None for an unbound RT: its
    locality is then judged against the node of the CPU it last ran on.
    The local page share is by bytes, so a 2 MiB huge page weighs 512 small
    ones. Alerts go to on_alert(kind, severity, details):

    - 'numa_remote' WARN when the remote share of its pages, or of the node's
      allocations (from MIN_ALLOCATIONS on), exceeds warn_remote_pct; once per
      episode, again only after both came back to or under the threshold.
    - 'numa_migration' WARN when its pages moved between nodes since the
      previous sample.
    """

    def __init__(
        self,
        pid_getter: Callable[[], int | None],
        node: int | None,
        *,
        on_alert: OnAlert,
        sysfs: str = "/sys",
        proc: str = "/proc",
        warn_remote_pct: float = 5.0,
    ) -> None:
        if node is not None:
            validate_node(node, sysfs)
        if not 0.0 <= warn_remote_pct < 100.0:
            raise InvalidArgument(
                "warn_remote_pct", f"{warn_remote_pct} is out of range: use 0 to below 100"
            )
        self.pid_getter = pid_getter
        self.node = node
        self.on_alert = on_alert
        self.sysfs = sysfs
        self.proc = proc
        self.warn_remote_pct = warn_remote_pct
        self.samples = 0
        self._pid: int | None = None
        self._maps: dict[str, Any] | None = None
        self._counters: dict[int, dict[str, int]] | None = None
        self._remote_episode = False

    def sample(self) -> dict[str, Any]:
        """One look at the RT process and its node; returns the status dict
        (page figures are None or empty while no RT process is running)."""
        pid = self.pid_getter() or 0
        single = len(topology.numa_nodes(_system(self.sysfs))) == 1
        maps = _read_numa_maps(pid, self.proc) if pid > 0 else None
        node = self.node
        if node is None and maps is not None:
            cpu = _last_cpu(pid, self.proc)
            node = None if cpu is None else _node_of_cpu(cpu, self.sysfs)

        local_pages = None
        if maps is not None and node is not None:
            local_pages = _pct(maps["bytes_by_node"].get(node, 0), maps["total_bytes"])
        counters = read_numastat(self.sysfs)
        delta = self._delta(counters, node)
        self._counters = counters
        allocs = delta["local_node"] + delta["other_node"] if delta else 0
        local_access = _pct(delta["local_node"], allocs) if delta else None
        if single:
            # one node: every page and every allocation is local by construction
            local_pages = 100.0 if local_pages is not None else None
            local_access = 100.0

        migrated: tuple[int, int, dict[int, int], dict[int, int]] = (0, 0, {}, {})
        if maps is not None and self._maps is not None and pid == self._pid:
            migrated = _moved(self._maps, maps)
        self._pid, self._maps = (pid, maps) if maps is not None else (None, None)
        self.samples += 1
        result: dict[str, Any] = {
            "pid": pid if maps is not None else None,
            "node": node,
            "bound": self.node is not None,
            "single_node": single,
            "note": "single NUMA node: all memory is local" if single else "",
            "pages_by_node": maps["pages_by_node"] if maps else {},
            "bytes_by_node": maps["bytes_by_node"] if maps else {},
            "local_pages_pct": local_pages,
            "local_access_pct": local_access,
            "remote_access_pct": None if local_access is None else round(100.0 - local_access, 3),
            "allocations": allocs,
            "numa_miss": delta["numa_miss"] if delta else None,
            "numa_foreign": delta["numa_foreign"] if delta else None,
            "migrated_pages": migrated[0],
            "migrated_bytes": migrated[1],
            "samples": self.samples,
        }
        self._check_remote(result, maps, allocs)
        if migrated[0]:
            self._alert_migration(result, migrated[2], migrated[3])
        result["remote_alert"] = self._remote_episode
        return result

    def _alert_migration(
        self, result: dict[str, Any], lost: dict[int, int], gained: dict[int, int]
    ) -> None:
        pid, pages = result["pid"], result["migrated_pages"]
        self.on_alert(
            "numa_migration",
            "WARN",
            {
                "pid": pid,
                "node": result["node"],
                "migrated_pages": pages,
                "migrated_bytes": result["migrated_bytes"],
                "from_nodes": lost,
                "to_nodes": gained,
                "message": f"{pages} pages of RT process {pid} moved between NUMA nodes "
                f"(from {_nodes_text(lost)} to {_nodes_text(gained)}) since the last sample",
            },
        )

    def _delta(
        self, counters: dict[int, dict[str, int]], node: int | None
    ) -> dict[str, int] | None:
        if node is None or self._counters is None:
            return None
        now, prev = counters.get(node), self._counters.get(node)
        if now is None or prev is None:
            return None
        d = {k: now[k] - prev[k] for k in NUMASTAT_KEYS}
        # counters only grow; one going back was reset, so this interval says nothing
        return d if min(d.values()) >= 0 else None

    def _check_remote(
        self, result: dict[str, Any], maps: dict[str, Any] | None, allocs: int
    ) -> None:
        remote_pages = result["local_pages_pct"]
        remote_pages = None if remote_pages is None else round(100.0 - remote_pages, 3)
        remote_access = result["remote_access_pct"] if allocs >= MIN_ALLOCATIONS else None
        known = [v for v in (remote_pages, remote_access) if v is not None]
        if not known:
            return
        over = [v for v in known if v > self.warn_remote_pct]
        if not over:
            self._remote_episode = False
            return
        if self._remote_episode:
            return
        self._remote_episode = True
        node = result["node"]
        what = []
        if remote_pages is not None and remote_pages > self.warn_remote_pct:
            what.append(f"{remote_pages:.1f}% of its pages are off node {node}")
        if remote_access is not None and remote_access > self.warn_remote_pct:
            what.append(f"{remote_access:.1f}% of node {node}'s allocations went to other nodes")
        self.on_alert(
            "numa_remote",
            "WARN",
            {
                "pid": result["pid"],
                "node": node,
                "threshold_pct": self.warn_remote_pct,
                "remote_pages_pct": remote_pages,
                "remote_access_pct": remote_access,
                "pages_by_node": result["pages_by_node"],
                "top_remote_mappings": _remote_mappings(maps, node),
                "message": f"RT process {result['pid']} on NUMA node {node}: "
                + "; ".join(what)
                + f" (threshold {self.warn_remote_pct}%)",
            },
        )


def _remote_mappings(maps: dict[str, Any] | None, node: int | None) -> list[dict[str, Any]]:
    if maps is None or node is None:
        return []
    rows = []
    for m in maps["mappings"]:
        remote = {n: c for n, c in m["pages_by_node"].items() if n != node}
        if remote:
            rows.append(
                {
                    "address": f"{m['address']:x}",
                    "policy": m["policy"],
                    "what": m["file"] or m["kind"],
                    "remote_pages": remote,
                    "remote_bytes": sum(remote.values()) * _page_bytes(m),
                }
            )
    rows.sort(key=lambda r: r["remote_bytes"], reverse=True)
    return rows[:ALERT_MAPPINGS]


def _nodes_text(counts: dict[int, int]) -> str:
    return ", ".join(f"node {n}: {c}" for n, c in counts.items()) or "none"


@functools.cache
def _migrate_pages() -> Any:
    try:
        lib = ctypes.CDLL("libnuma.so.1", use_errno=True)
    except OSError:
        raise FailedPrecondition(
            "libnuma is not installed: install it (Debian: 'apt-get install libnuma1')"
        ) from None
    fn = lib.migrate_pages
    fn.restype = ctypes.c_long
    mask = ctypes.POINTER(ctypes.c_ulong)
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, mask, mask]
    return fn


def _nodemask(nodes: Iterable[int]) -> ctypes.Array[ctypes.c_ulong]:
    mask = (ctypes.c_ulong * _MASK_WORDS)()
    for n in nodes:
        mask[n // 64] |= 1 << (n % 64)
    return mask


def migrate(
    pid: int,
    from_nodes: Iterable[int],
    to_node: int,
    *,
    sysfs: str = "/sys",
    proc: str = "/proc",
) -> dict[str, Any]:
    """Move the pages of `pid` on `from_nodes` to `to_node` (migrate_pages(2)).

    Only existing pages move: the process's policy for new allocations is its
    own (see the module docstring). Pages are unmapped while they move, so an
    RT loop touching them waits: expect late cycles during the call.
    Returns pages moved (numa_maps before and after), pages the kernel could
    not move, pages per node before and after, and the call's elapsed ms."""
    sources = sorted(set(from_nodes))
    if not sources:
        raise InvalidArgument("from_nodes", "name at least one NUMA node to move pages from")
    for n in sources:
        validate_node(n, sysfs)
    validate_node(to_node, sysfs)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise InvalidArgument("pid", f"{pid!r} is not a process id")
    if max(sources + [to_node]) >= _MASK_BITS:
        raise InvalidArgument("node", f"NUMA node numbers must be below {_MASK_BITS}")

    before = _read_numa_maps(pid, proc)
    if before is None:
        raise NotFound(f"process {pid} does not exist")
    fn = _migrate_pages()
    old, new = _nodemask(sources), _nodemask([to_node])
    t0 = time.perf_counter()
    # maxnode counts one past the last bit, as libnuma's numa_migrate_pages passes it
    rc = fn(pid, _MASK_BITS + 1, old, new)
    elapsed_ms = (time.perf_counter() - t0) * 1000.0
    if rc < 0:
        _raise_migrate_error(ctypes.get_errno(), pid, sources, to_node)
    after = _read_numa_maps(pid, proc) or {"pages_by_node": {}, "mappings": []}

    moved = moved_bytes = 0
    for m, down, up in _changes(before, after):
        count = min(sum(c for n, c in down.items() if n in sources), up.get(to_node, 0))
        moved += count
        moved_bytes += count * _page_bytes(m)
    return {
        "pid": pid,
        "from_nodes": sources,
        "to_node": to_node,
        "pages_moved": moved,
        "bytes_moved": moved_bytes,
        "pages_not_moved": int(rc),
        "pages_by_node_before": before["pages_by_node"],
        "pages_by_node_after": after["pages_by_node"],
        "elapsed_ms": round(elapsed_ms, 3),
    }


def _raise_migrate_error(err: int, pid: int, sources: list[int], to_node: int) -> None:
    what = f"migrate_pages of process {pid} from {sources} to node {to_node}"
    if err == errno.ESRCH:
        raise NotFound(f"process {pid} does not exist")
    if err == errno.EPERM:
        raise FailedPrecondition(
            f"{what} refused ({os.strerror(err)}): the agent needs CAP_SYS_NICE to move "
            f"another process's pages (and the RT process's user or CAP_SYS_PTRACE); run it "
            f"as root or 'setcap cap_sys_nice,cap_sys_ptrace+ep' on its interpreter"
        )
    if err == errno.EINVAL:
        raise InvalidArgument(
            "node",
            f"{what}: node {to_node} has no memory or is outside the agent's cpuset (cpuset.mems)",
        )
    raise FailedPrecondition(f"{what} failed: {os.strerror(err)}")
