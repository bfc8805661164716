"""A real OpenSearch (bench/opensearch.py, built by `make opensearch`) shared by
the whole session, fault-injecting proxies (bench/faultproxy.py) to put in
front of it, real agents and a task that logs at a chosen rate."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.faultproxy import FaultProxy, make_test_ca
from bench.opensearch import OpenSearch, unavailable
from tests.control.conftest import agent_factory  # noqa: F401 - real agents, here too

CHATTY = Path(__file__).resolve().parents[2] / "bench" / "tasks" / "chatty.c"
INCLUDE = Path(__file__).resolve().parents[2] / "rtcore" / "include"


@pytest.fixture(scope="module")
def chatty(tmp_path_factory: pytest.TempPathFactory) -> str:
    """bench/tasks/chatty.c built: logs a chosen number of records a cycle at
    a chosen level, and a WARN record every K-th cycle."""
    lib = str(tmp_path_factory.mktemp("chatty") / "libchatty.so")
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", f"-I{INCLUDE}", "-o", lib, str(CHATTY)],
        check=True,
        timeout=120,
    )
    return lib


@pytest.fixture(scope="session")
def _opensearch_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSearch]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    node = OpenSearch(tmp_path_factory.mktemp("opensearch"))
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
def opensearch(_opensearch_node: OpenSearch) -> OpenSearch:
    """The session's OpenSearch, running and empty (no index, no index
    template): a test that stopped or killed it gets it back here, and no
    test sees another's documents."""
    if not _opensearch_node.running():
        _opensearch_node.start()
    _opensearch_node.wipe()
    return _opensearch_node


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Makes started FaultProxy(upstream, tls=..., require_auth=...) objects;
    all are stopped after the test."""
    proxies: list[FaultProxy] = []

    def make(
        upstream: str, *, tls: tuple[str, str] | None = None, require_auth: str | None = None
    ) -> FaultProxy:
        proxy = FaultProxy(upstream, tls=tls, require_auth=require_auth).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """(ca_file, cert_file, key_file): a throwaway CA and a certificate for
    127.0.0.1 signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("no `openssl` on PATH to make a test CA")
    return make_test_ca(Path(tmp_path_factory.mktemp("tls")))
