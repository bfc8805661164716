# Declarations of the OS interfaces the RT process uses at start-up and in the loop.
from libc.stdint cimport int64_t, uint64_t
from posix.time cimport timespec


cdef extern from "<time.h>" nogil:
    int TIMER_ABSTIME
    int clock_nanosleep(int clock_id, int flags, const timespec *req, timespec *rem)


cdef extern from "<sys/mman.h>" nogil:
    int MCL_CURRENT
    int MCL_FUTURE
    int mlockall(int flags)


cdef extern from "<sched.h>" nogil:
    ctypedef struct cpu_set_t:
        pass
    struct sched_param:
        int sched_priority               # 1..99 for SCHED_FIFO
    int SCHED_FIFO
    void CPU_ZERO(cpu_set_t *s)
    void CPU_SET(int cpu, cpu_set_t *s)
    int CPU_ISSET(int cpu, cpu_set_t *s)
    int sched_setscheduler(int pid, int policy, const sched_param *p)
    int sched_setaffinity(int pid, size_t size, const cpu_set_t *s)
    int sched_getaffinity(int pid, size_t size, cpu_set_t *s)


cdef extern from "<unistd.h>" nogil:
    int gettid()
    int getpid()


cdef extern from "<dlfcn.h>" nogil:
    int RTLD_NOW
    int RTLD_LOCAL
    void *dlopen(const char *path, int flags)
    void *dlsym(void *handle, const char *symbol)
    char *dlerror()


cdef extern from "<sys/random.h>" nogil:
    ssize_t getrandom(void *buf, size_t n, unsigned int flags)


cdef extern from "<numa.h>" nogil:
    int numa_available()
    int numa_max_node()
    void *numa_alloc_onnode(size_t size, int node)
    void numa_free(void *mem, size_t size)
    void numa_set_preferred(int node)
    void numa_set_localalloc()
    void numa_tonode_memory(void *mem, size_t size, int node)


cdef extern from "<numaif.h>" nogil:
    int MPOL_BIND
    int MPOL_MF_MOVE
    int MPOL_MF_STRICT
    long mbind(void *addr, unsigned long len, int mode, const unsigned long *nodemask,
               unsigned long maxnode, unsigned int flags)


cdef extern from "<errno.h>" nogil:
    int ENOTSUP
    int ESTALE


cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)
