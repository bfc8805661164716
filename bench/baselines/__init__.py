"""Same-run baselines for `rtctl bench logging`: what other loggers cost per
call on this machine, measured in the same invocation as our ring push.

- spdlog: spdlog's asynchronous logger (C++), caller's cost per call.
- pylogging: Python's logging into a QueueHandler, caller's cost per call.
- callgrind: instructions per call of one function under valgrind, a figure
  that does not depend on the machine's clock or load.
"""

from __future__ import annotations

from bench.runner import BenchError


class BaselineUnavailable(BenchError):
    """A baseline cannot run on this machine (a tool or library is missing);
    `reason` says what to install."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
