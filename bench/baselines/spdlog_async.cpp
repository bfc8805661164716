// Baseline for `rtctl bench logging`: the caller's cost of one call to an
// spdlog asynchronous logger, the usual C++ answer to "log from a hot loop".
//
//   spdlog_async [CALLS [CPU [WORKER_CPU]]]     (CPU, WORKER_CPU: -1 = not pinned)
//
// Prints one JSON line: calls, total_ns, mean_ns, dropped, cpu, worker_cpu,
// spdlog_version.
//
// The sink is a null sink. Everything the caller pays for happens before the
// sink: the level check, fmt formatting the arguments into the message buffer,
// the timestamp, copying the message into the thread pool's queue under its
// mutex and waking the worker. The sink runs on the worker thread. A file sink
// to /dev/null would only add pattern formatting and fwrite there, which makes
// the worker slower than the caller: the queue then stays full, every call
// overwrites the oldest message and never has to wake an idle worker, so the
// figure would describe a backlogged logger and depend on how slow the sink is.
// With a null sink the worker keeps the queue nearly drained, like the
// drainer of our ring, as long as its CPU is free: `dropped` says when it was
// not (then the caller looks cheaper: it overwrites a full queue instead of
// handing messages to a worker that is waiting for them).
//
// The worker thread is pinned to WORKER_CPU, away from the caller, as our
// ring's reader is, so the caller's time does not include the worker's.
#include <sched.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

#include <pthread.h>

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

namespace {

constexpr size_t QUEUE_ITEMS = 8192;
constexpr long MAX_WARMUP = 100000;
constexpr int DRAIN_WAIT_MS = 5000;

int64_t now_ns()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

bool pin(pthread_t thread, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(thread, sizeof set, &set) == 0;
}

long parse(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long v = std::strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s) {
        std::fprintf(stderr, "spdlog_async: %s must be an integer, not '%s'\n", what, s);
        std::exit(2);
    }
    return v;
}

}  // namespace

// One call as the RT loop would make it. Not inlined and with C linkage so
// that callgrind can name it (instructions per call); the call itself costs
// the caller a few instructions, as a call to our push does.
extern "C" __attribute__((noipa)) void rtc_spdlog_call(
    spdlog::logger *logger, double late, int skipped, uint64_t cycle, int job)
{
    logger->info(
        "deadline miss: woke {:.1f} us late, {} periods skipped, cycle {}, job {}",
        late, skipped, cycle, job);
}

static void batch(spdlog::logger *logger, long first, long count)
{
    for (long i = first; i < first + count; i++)
        rtc_spdlog_call(logger, double(i % 1000) * 0.7 + 1.3, int(i % 7), uint64_t(i), int(i % 97));
}

int main(int argc, char **argv)
{
    long calls = argc > 1 ? parse(argv[1], "CALLS") : 1000000;
    int cpu = argc > 2 ? int(parse(argv[2], "CPU")) : -1;
    int worker_cpu = argc > 3 ? int(parse(argv[3], "WORKER_CPU")) : -1;
    if (calls <= 0) {
        std::fprintf(stderr, "spdlog_async: CALLS must be positive\n");
        return 2;
    }

    std::atomic<bool> worker_pinned{true};
    auto pool = std::make_shared<spdlog::details::thread_pool>(QUEUE_ITEMS, 1, [&] {
        if (worker_cpu >= 0 && !pin(pthread_self(), worker_cpu))
            worker_pinned = false;
    });
    // overrun_oldest: a full queue drops its oldest message instead of
    // blocking the caller, as our ring drops (the newest) instead of waiting
    auto logger = std::make_shared<spdlog::async_logger>(
        "bench", std::make_shared<spdlog::sinks::null_sink_mt>(), pool,
        spdlog::async_overflow_policy::overrun_oldest);
    logger->set_level(spdlog::level::info);
    // pinned after the pool started, so that an unpinned worker does not
    // inherit the caller's CPU
    if (cpu >= 0 && !pin(pthread_self(), cpu)) {
        std::fprintf(stderr, "spdlog_async: cannot pin the caller to CPU %d\n", cpu);
        return 1;
    }

    long warmup = calls < MAX_WARMUP ? calls : MAX_WARMUP;
    batch(logger.get(), 0, warmup);
    // start the timed batch with an empty queue and an idle worker
    for (int waited = 0; pool->queue_size() > 0 && waited < DRAIN_WAIT_MS; waited++)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (!worker_pinned) {
        std::fprintf(stderr, "spdlog_async: cannot pin the worker to CPU %d\n", worker_cpu);
        return 1;
    }

    size_t overrun_before = pool->overrun_counter();
    int64_t t0 = now_ns();
    batch(logger.get(), warmup, calls);
    int64_t t1 = now_ns();
    size_t dropped = pool->overrun_counter() - overrun_before;

    std::printf(
        "{\"calls\": %ld, \"total_ns\": %" PRId64 ", \"mean_ns\": %.2f, \"dropped\": %zu, "
        "\"cpu\": %d, \"worker_cpu\": %d, \"spdlog_version\": \"%d.%d.%d\"}\n",
        calls, t1 - t0, double(t1 - t0) / double(calls), dropped, cpu, worker_cpu,
        SPDLOG_VER_MAJOR, SPDLOG_VER_MINOR, SPDLOG_VER_PATCH);
    return 0;
}
