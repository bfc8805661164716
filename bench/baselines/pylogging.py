"""Python's logging into a QueueHandler as a baseline: the caller's cost of
one logger.info call, the usual way to keep a Python loop off slow handlers.

Nothing consumes the queue while a batch is timed. A QueueListener thread
would share the GIL with the caller, so its work (handling and freeing the
records) would be charged to the caller's batch in slices of the switch
interval; what the caller pays is the call itself: the level check, making
the LogRecord (caller look-up included), QueueHandler.prepare formatting the
message, and the put. The calls are timed in sub-batches of BATCH_CALLS with
the queue emptied between them, untimed, so that a million records never pile
up and the garbage collector's passes stay those of a short queue. The
collector stays enabled, as in a real process.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import time

from bench.runner import BenchError

BATCH_CALLS = 10_000
WARMUP_CALLS = 1_000
MESSAGE = "deadline miss: woke %.1f us late, %d periods skipped, cycle %d, job %d"


def _queue_logger(q: queue.SimpleQueue) -> logging.Logger:
    """A logger of its own, not propagating, whose only handler is the queue."""
    logger = logging.getLogger("rtcore.bench.baselines.pylogging")
    logger.handlers.clear()
    logger.addHandler(logging.handlers.QueueHandler(q))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def _drain(q: queue.SimpleQueue) -> int:
    n = 0
    while not q.empty():
        q.get_nowait()
        n += 1
    return n


def _batch(logger: logging.Logger, first: int, count: int) -> int:
    """ns taken by count calls, timed as one batch."""
    info = logger.info
    clock = time.perf_counter_ns
    t0 = clock()
    for i in range(first, first + count):
        info(MESSAGE, (i % 1000) * 0.7 + 1.3, i % 7, i, i % 97)
    return clock() - t0


def python_queue_logging_ns(count: int) -> dict:
    """Time `count` calls of logger.info(MESSAGE, ...) into a QueueHandler over
    a queue.SimpleQueue. Returns calls, total_ns, mean_ns."""
    if count <= 0:
        raise ValueError(f"count must be positive, not {count}")
    q: queue.SimpleQueue = queue.SimpleQueue()
    logger = _queue_logger(q)
    try:
        _batch(logger, 0, min(count, WARMUP_CALLS))
        _drain(q)
        total = 0
        done = 0
        while done < count:
            n = min(BATCH_CALLS, count - done)
            total += _batch(logger, done, n)
            if _drain(q) != n:
                # a filter or logging.disable() would make this a no-op benchmark
                raise BenchError(f"logging dropped records: {n} calls reached the queue less often")
            done += n
    finally:
        logger.handlers.clear()
    return {"calls": count, "total_ns": total, "mean_ns": round(total / count, 2)}
