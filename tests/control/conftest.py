from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Spawner
from tests.control.agentproc import AgentProc

_ids = itertools.count()


@pytest.fixture
def agent_factory(spawn: Spawner, tmp_path: Path) -> Iterator[Callable[..., AgentProc]]:
    made: list[AgentProc] = []

    def make(*extra: str, node_id: str | None = None) -> AgentProc:
        a = AgentProc(spawn, tmp_path, node_id or f"t{os.getpid()}x{next(_ids)}", *extra)
        made.append(a)
        return a

    yield make
    for a in made:
        a.cleanup()
