/*
 * LD_PRELOAD interposer that counts heap allocations of the whole process
 * into a shared file ($RTC_ALLOC_COUNTER), so a test can read the count from
 * outside while the RT loop runs. glibc's __libc_* entry points do the work,
 * which avoids dlsym (itself allocating) during start-up.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static uint64_t *counter;

__attribute__((constructor)) static void setup(void)
{
    const char *path = getenv("RTC_ALLOC_COUNTER");
    if (path == NULL)
        return;
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ftruncate(fd, 4096) != 0)
        return;
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p != MAP_FAILED)
        counter = (uint64_t *)p;
}

static inline void count(void)
{
    if (counter)
        __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n) { count(); return __libc_malloc(n); }
void *calloc(size_t n, size_t s) { count(); return __libc_calloc(n, s); }
void *realloc(void *p, size_t n) { count(); return __libc_realloc(p, n); }
void free(void *p) { if (p) count(); __libc_free(p); }

int posix_memalign(void **out, size_t align, size_t n)
{
    count();
    void *p = __libc_memalign(align, n);
    if (p == NULL)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}

void *aligned_alloc(size_t align, size_t n) { count(); return __libc_memalign(align, n); }
void *memalign(size_t align, size_t n) { count(); return __libc_memalign(align, n); }
