"""What the log pipeline asks of a sink (the embedded store, the `_bulk`
exporter): deliver a batch of spool records in order and say how far it got.

The pipeline acknowledges up to the last settled record in the spool, so a
sink resumes exactly where it stopped after an outage or a crash; a sink owns
its backoff and tells the pipeline when to try again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# (seq, time_ns, level, ECS document as compact JSON)
Record = tuple[int, int, int, bytes]


@dataclass(frozen=True)
class Delivery:
    done: int  # leading records of the batch settled (delivered, or dead-lettered for good)
    retry_after_s: float | None = None  # the rest must wait this long (outage, 429, 5xx)


class Sink(Protocol):
    name: str

    def deliver(self, records: Sequence[Record]) -> Delivery: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
