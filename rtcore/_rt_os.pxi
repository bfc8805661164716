# OS set-up of the RT process, before the loop: memory locking, CPU
# affinity, NUMA binding, SCHED_FIFO. Each returns (ok, message) rather than
# raising, so start-up decides what is fatal (--allow-degraded). Included by
# _rt.pyx.


def lock_memory():
    """mlockall + a pre-faulted stack. Returns (ok, message)."""
    if mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        err = errno
        return False, (f"cannot lock memory (mlockall: {os.strerror(err)}): needs "
                       f"CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK (run as root, or "
                       f"'ulimit -l unlimited' / memlock in limits.conf)")
    rtc_prefault_stack()
    return True, "memory locked"


def set_affinity(cpus):
    """Pin this (the RT) thread to cpus. Returns (ok, message)."""
    cdef cpu_set_t mask
    CPU_ZERO(&mask)
    for c in cpus:
        CPU_SET(c, &mask)
    if sched_setaffinity(0, sizeof(cpu_set_t), &mask) != 0:
        err = errno
        hint = ("the CPUs are outside this process's cpuset" if err == EINVAL
                else "needs CAP_SYS_NICE to change affinity")
        return False, (f"cannot pin the RT thread to CPUs {format_cpus(cpus)} "
                       f"({os.strerror(err)}): {hint}")
    return True, f"pinned to CPUs {format_cpus(cpus)}"


cdef bind_numa(rtc_segment *seg, int node):
    """Bind the segment's pages to node (moving those already there) and
    prefer node for later allocations. Returns (ok, message)."""
    if numa_available() < 0:
        return False, "cannot bind to a NUMA node: the kernel has no NUMA support"
    cdef unsigned long mask[16]
    memset(mask, 0, sizeof(mask))
    if node < 0 or node >= 16 * 64:
        return False, f"NUMA node {node} is out of range"
    mask[node // 64] = 1UL << (node % 64)
    if mbind(seg, sizeof(rtc_segment), MPOL_BIND, mask, 16 * 64,
             MPOL_MF_MOVE) != 0:
        err = errno
        return False, (f"cannot bind the shared-memory segment to NUMA node {node} "
                       f"(mbind: {os.strerror(err)}): needs CAP_SYS_NICE to move pages")
    numa_set_preferred(node)
    seg.status.numa_node = node
    return True, f"memory on NUMA node {node}"


cdef set_fifo(rtc_segment *seg, int priority):
    """SCHED_FIFO at priority. Returns (ok, message)."""
    cdef sched_param p
    p.sched_priority = priority
    if sched_setscheduler(0, SCHED_FIFO, &p) != 0:
        err = errno
        return False, (f"cannot set SCHED_FIFO priority {priority} ({os.strerror(err)}): "
                       f"needs CAP_SYS_NICE or RLIMIT_RTPRIO >= {priority} (run as root, "
                       f"'setcap cap_sys_nice+ep', or rtprio in limits.conf)")
    seg.status.priority = priority
    return True, f"SCHED_FIFO priority {priority}"


def format_cpus(cpus):
    return ",".join(str(c) for c in sorted(cpus))
