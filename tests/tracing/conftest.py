"""A real Jaeger v2 (built by `make jaeger`) on loopback, on free ports: the
launcher is bench/jaeger.py, shared with `rtctl bench tracing`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.jaeger import JAEGER_BIN, Jaeger, attrs

__all__ = ["JAEGER_BIN", "Jaeger", "attrs", "jaeger"]


@pytest.fixture
def jaeger(tmp_path: Path) -> Iterator[Jaeger]:
    if not os.access(JAEGER_BIN, os.X_OK):
        pytest.skip(f"no Jaeger binary at {JAEGER_BIN} (run `make jaeger`; it needs Go)")
    j = Jaeger(tmp_path)
    try:
        j.start()
        yield j
    finally:
        j.stop()
