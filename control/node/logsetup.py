"""One logging configuration for the whole agent.

loguru writes to stderr and DATA_DIR/agent.log; the standard library's
`logging` (our modules that use it, grpc, prometheus_client) is routed into
loguru, so every line of the agent ends up in the same places with the same
level. Reconfiguring replaces exactly the sinks this module added, under a
lock, so concurrent level changes never leave duplicated sinks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

from loguru import logger

LOGURU_LEVELS = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}
FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level:<8} {message}"

_lock = threading.Lock()
_sinks: list[int] = []


class _ToLoguru(logging.Handler):
    """Hands standard-library records to loguru, keeping their level and origin."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info, depth=6).log(level, record.getMessage())


def configure(data_dir: str, level: str) -> None:
    """Agent logging at `level` (DEBUG, INFO, WARN, ERROR, CRITICAL)."""
    name = LOGURU_LEVELS[level]
    with _lock:
        if not _sinks:
            logger.remove()  # loguru's default stderr sink
        for sink in _sinks:
            with contextlib.suppress(ValueError):  # already removed elsewhere
                logger.remove(sink)
        _sinks[:] = [
            logger.add(sys.stderr, level=name, format=FORMAT),
            logger.add(
                os.path.join(data_dir, "agent.log"),
                level=name,
                format=FORMAT,
                rotation="10 MB",
                retention=5,
            ),
        ]
        root = logging.getLogger()
        root.handlers = [_ToLoguru()]
        root.setLevel(logging.getLevelName(name))
