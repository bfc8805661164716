"""One logging configuration for the whole agent.

loguru writes to stderr, DATA_DIR/agent.log and, while an agent runs, its
log pipeline (ECS documents through the spool); the standard library's
`logging` (our modules that use it, grpc, prometheus_client) is routed into
loguru, so every line of the agent ends up in the same places with the same
level. The RT's records reach the pipeline straight from the drainer; those
echoed to stderr for the operator carry `spooled=True` and are not spooled
twice. Reconfiguring replaces exactly the sinks this module added, under a
lock, so concurrent level changes never leave duplicated sinks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

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
_level = "INFO"
# the running agent's log pipeline: takes a loguru record
_pipeline: list[Callable[[dict[str, Any]], None]] = []


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
    global _level
    name = LOGURU_LEVELS[level]
    with _lock:
        _level = level
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
        for feed in _pipeline:
            _sinks.append(
                logger.add(
                    _records_to(feed),
                    level=name,
                    format="{message}",
                    filter=_not_spooled,
                    catch=True,
                )
            )
        root = logging.getLogger()
        root.handlers = [_ToLoguru()]
        root.setLevel(logging.getLevelName(name))
        # one line per HTTP request of the log exporter would feed the log it ships
        logging.getLogger("urllib3").setLevel(max(logging.WARNING, root.level))


def _records_to(feed: Callable[[dict[str, Any]], None]) -> Callable[[Any], None]:
    def sink(message: Any) -> None:
        feed(message.record)

    return sink


def _not_spooled(record: Any) -> bool:
    return not record["extra"].get("spooled")


def attach_pipeline(data_dir: str, feed: Callable[[dict[str, Any]], None] | None) -> None:
    """Send the agent's records to `feed` too (None: stop), at the current level."""
    with _lock:
        _pipeline[:] = [feed] if feed is not None else []
    configure(data_dir, _level)
