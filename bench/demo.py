"""`make demo`: a local three-node cluster with RT loops, a job, a fault
drill, and a summary.

Three agents on loopback (each with its RT loop on the same CPU) elect a
primary; a trajectory job runs on it; halfway through, the primary's agent
and RT are killed with SIGKILL; a standby takes over and finishes the job
from the state it shadowed. The summary comes from the nodes themselves:
roles, terms, the job, and the actuation journals (the failover gap, and
the proof that no two nodes drove the outputs at once).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time

from bench import machine
from bench.failover import Cluster, _first_actuated_mono, _last_actuated_mono
from bench.runner import BenchError, wait_until

WAYPOINTS = 24
DT_S = 0.25


def _say(text: str) -> None:
    print(text, flush=True)


def _intervals(cluster: Cluster) -> list[tuple[str, int, int | None]]:
    out = []
    for n in cluster.nodes:
        try:
            with n.client() as c:
                for iv in c.journal()["intervals"]:
                    out.append((n.node_id, iv["start_mono_ns"], iv["end_mono_ns"]))
        except Exception:  # noqa: BLE001 - a node that is down has none to give
            continue
    return out


def main() -> int:
    cpu = machine.default_cpu()
    root = tempfile.mkdtemp(prefix="rtcore-demo-")
    cluster = Cluster(cpu, root)
    try:
        _say(f"starting 3 nodes on loopback (RT loops on CPU {cpu}, data in {root}) ...")
        cluster.start()
        primary = cluster.settled()
        roles = cluster.roles()
        _say("cluster up: " + ", ".join(f"{n} {r} (term {t})" for n, (r, t) in roles.items()))
        with primary.client() as c:
            job = c.submit_job(
                "demo-sweep",
                [(DT_S * (i + 1), [0.3 * ((i % 4) - 1.5) / 1.5] * 6) for i in range(WAYPOINTS)],
            )
        job_id = int(job["id"])
        _say(f"job {job_id} submitted to {primary.node_id}: {WAYPOINTS} waypoints")

        def half_way() -> bool:
            with primary.client() as c:
                return int(c.get_job(job_id)["cursor"]) >= WAYPOINTS // 3

        wait_until(half_way, 60, "the job a third of the way", interval=0.05)
        _say(f"fault drill: kill -9 of {primary.node_id}'s agent and RT, mid-job")
        primary.kill()
        last = _last_actuated_mono(primary)
        new = cluster.primary(exclude=primary.node_id)
        gap_ms = (_first_actuated_mono(new) - last) / 1e6
        _say(f"{new.node_id} is primary; outputs resumed {gap_ms:.1f} ms after the last cycle")
        primary.start()
        cluster.watch(primary)

        def done() -> dict | None:
            with new.client() as c:
                j = c.get_job(job_id)
            return j if j["state"] in ("done", "failed", "cancelled") else None

        final = wait_until(done, WAYPOINTS * DT_S + 60, "the job to finish", interval=0.1)
        time.sleep(1.0)
        roles = cluster.roles()
        ivs = sorted(_intervals(cluster), key=lambda iv: iv[1])
        overlap = any(
            a[0] != b[0] and a[1] < (b[2] or 2**62) and b[1] < (a[2] or 2**62)
            for i, a in enumerate(ivs)
            for b in ivs[i + 1 :]
        )
        _say("")
        _say("summary")
        _say("  roles now:  " + ", ".join(f"{n} {r} (term {t})" for n, (r, t) in roles.items()))
        _say(
            f"  job {job_id}: {final['state']}, {final['cursor']}/{WAYPOINTS} waypoints, "
            f"sent to an RT {final['attempts']} time(s)"
        )
        _say(f"  failover gap (journals): {gap_ms:.1f} ms")
        _say(
            f"  actuation intervals: {len(ivs)} across the nodes; "
            + ("TWO NODES ACTUATED AT ONCE" if overlap else "never two nodes at once")
        )
        _say(f"  duplicate waypoints: {len(cluster.waypoints.duplicates())}")
        return 0 if final["state"] == "done" and not overlap else 1
    except BenchError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
