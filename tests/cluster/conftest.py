from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.clusterproc import TestCluster, loopback_cluster
from tests.conftest import Spawner

_ids = itertools.count()


@pytest.fixture
def make_cluster(spawn: Spawner, tmp_path: Path) -> Iterator[Callable[..., TestCluster]]:
    """Three members on loopback (started by the test); everything they left
    (agents, RT processes, segments) is gone afterwards."""
    made: list[TestCluster] = []

    def make(*extra: str, witness: bool = False) -> TestCluster:
        c = loopback_cluster(spawn, tmp_path, f"k{next(_ids)}", *extra, witness=witness)
        made.append(c)
        return c

    yield make
    for c in made:
        c.cleanup()
