"""The real OpenSearch the log-export tests rely on, and the fault proxy in
front of it: each test pins down one behaviour the exporter depends on."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
import urllib3

from bench.faultproxy import FaultProxy
from bench.jaeger import free_port
from bench.opensearch import OpenSearch

HTTP = urllib3.PoolManager(retries=False, timeout=30)


def ndjson(index: str, ids: list[str]) -> bytes:
    lines = []
    for i in ids:
        lines.append({"create": {"_index": index, "_id": i}})
        lines.append({"message": f"record {i}", "n": len(lines)})
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def bulk(
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    pool: urllib3.PoolManager = HTTP,
) -> urllib3.BaseHTTPResponse:
    return pool.request(
        "POST",
        url + "/_bulk",
        body=body,
        headers={"Content-Type": "application/x-ndjson", **(headers or {})},
    )


def items(resp: urllib3.BaseHTTPResponse) -> list[dict[str, Any]]:
    assert resp.status == 200, resp.data
    return [item["create"] for item in resp.json()["items"]]


def test_duplicate_create_is_a_409_item_inside_a_200(opensearch: OpenSearch) -> None:
    first = items(bulk(opensearch.url, ndjson("dup", ["n1-0", "n1-1"])))
    assert [i["status"] for i in first] == [201, 201]

    again = bulk(opensearch.url, ndjson("dup", ["n1-1", "n1-2"]))
    assert again.json()["errors"] is True
    conflict, created = items(again)
    assert conflict["status"] == 409
    assert conflict["error"]["type"] == "version_conflict_engine_exception"
    assert created["status"] == 201
    assert opensearch.ids("dup") == {"n1-0": 1, "n1-1": 1, "n1-2": 1}


def test_ids_counts_every_copy_over_all_pages(opensearch: OpenSearch) -> None:
    many = [f"id-{i}" for i in range(6000)]  # more than one scroll page
    for start in range(0, len(many), 2000):
        assert bulk(opensearch.url, ndjson("ids-a", many[start : start + 2000])).status == 200
    # a replay that landed in the next day's index is a duplicate too
    assert items(bulk(opensearch.url, ndjson("ids-b", ["id-7"])))[0]["status"] == 201
    found = opensearch.ids("ids-*")
    assert len(found) == 6000
    assert found.most_common(1) == [("id-7", 2)]
    assert sum(found.values()) == 6001


def test_bulk_needs_a_json_content_type(opensearch: OpenSearch) -> None:
    resp = HTTP.request("POST", opensearch.url + "/_bulk", body=ndjson("ct", ["a"]))
    assert resp.status == 406


def test_index_template_shapes_a_new_daily_index(opensearch: OpenSearch) -> None:
    template = {
        "index_patterns": ["tlogs-*"],
        "template": {
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {
                "properties": {
                    "@timestamp": {"type": "date_nanos"},
                    "log": {"properties": {"level": {"type": "keyword"}}},
                    "message": {"type": "text"},
                }
            },
        },
    }
    status, out = opensearch.request("PUT", "/_index_template/tlogs", template)
    assert status == 200, out
    doc = {"@timestamp": "2026-12-02T01:02:03.123456789Z", "log": {"level": "ERROR"}}
    body = json.dumps({"create": {"_index": "tlogs-2026.12.02", "_id": "a"}}) + "\n"
    body += json.dumps({**doc, "message": "deadline miss"}) + "\n"
    # the template fixed @timestamp as a date: a document that is not one is
    # rejected for good (a mapping conflict), the rest of the batch goes in
    body += json.dumps({"create": {"_index": "tlogs-2026.12.02", "_id": "b"}}) + "\n"
    body += json.dumps({**doc, "@timestamp": "yesterday"}) + "\n"
    ok, conflict = items(bulk(opensearch.url, body.encode()))
    assert ok["status"] == 201
    assert conflict["status"] == 400
    assert conflict["error"]["type"] == "mapper_parsing_exception"

    _, mapping = opensearch.request("GET", "/tlogs-2026.12.02/_mapping")
    props = mapping["tlogs-2026.12.02"]["mappings"]["properties"]
    assert props["@timestamp"]["type"] == "date_nanos"
    assert props["log"]["properties"]["level"]["type"] == "keyword"
    _, health = opensearch.request("GET", "/_cluster/health/tlogs-*")
    assert health["status"] == "green"  # replicas 0 came from the template
    opensearch.refresh("tlogs-*")
    assert opensearch.count("tlogs-*", {"term": {"log.level": "ERROR"}}) == 1


@pytest.mark.slow
def test_documents_survive_stop_and_kill(opensearch: OpenSearch) -> None:
    assert [i["status"] for i in items(bulk(opensearch.url, ndjson("keep", ["a", "b"])))] == [
        201,
        201,
    ]
    opensearch.stop()
    with pytest.raises(OSError):
        opensearch.request("GET", "/")
    opensearch.start()
    # acknowledged means in the translog: SIGKILL right after loses nothing
    assert [i["status"] for i in items(bulk(opensearch.url, ndjson("keep", ["c"])))] == [201]
    opensearch.kill()
    opensearch.start()
    assert opensearch.ids("keep") == {"a": 1, "b": 1, "c": 1}


def test_fail_next_answers_bulk_without_forwarding(
    opensearch: OpenSearch, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(opensearch.url)
    proxy.fail_next(2, status=429, retry_after=1.5)
    for _ in range(2):
        resp = bulk(proxy.url, ndjson("fail", ["a"]))
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1.5"
        assert resp.json()["error"]["type"] == "es_rejected_execution_exception"
    # not a bulk request: never failed
    assert HTTP.request("GET", proxy.url + "/").status == 200
    assert opensearch.ids("fail") == {}
    assert [i["status"] for i in items(bulk(proxy.url, ndjson("fail", ["a"])))] == [201]
    assert (proxy.requests, proxy.bulk_requests, proxy.faults_injected) == (4, 3, 2)


def test_rewritten_items_were_indexed_and_retry_gets_409(
    opensearch: OpenSearch, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(opensearch.url)
    proxy.rewrite_items(every_n=2, status=429)
    resp = bulk(proxy.url, ndjson("rw", ["a", "b", "c", "d", "e"]))
    assert resp.json()["errors"] is True
    got = items(resp)
    assert [i["status"] for i in got] == [201, 429, 201, 429, 201]
    assert got[1]["error"]["type"] == "es_rejected_execution_exception"
    assert got[1]["_id"] == "b"
    assert proxy.faults_injected == 2
    # the client retries only the rejected items: they were really indexed
    retry = items(bulk(proxy.url, ndjson("rw", ["b", "d"])))
    assert [i["status"] for i in retry] == [409, 409]
    assert opensearch.ids("rw") == dict.fromkeys("abcde", 1)


def test_require_auth_rejects_other_credentials(
    opensearch: OpenSearch, fault_proxy: Callable[..., FaultProxy]
) -> None:
    basic = "Basic " + base64.b64encode(b"user:pw").decode()
    proxy = fault_proxy(opensearch.url, require_auth=basic)
    for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"user:no").decode()}):
        resp = bulk(proxy.url, ndjson("auth", ["a"]), headers)
        assert resp.status == 401
        assert resp.json()["error"]["type"] == "security_exception"
    assert (
        items(bulk(proxy.url, ndjson("auth", ["a"]), {"Authorization": basic}))[0]["status"] == 201
    )
    assert opensearch.ids("auth") == {"a": 1}


def test_tls_proxy_is_trusted_only_with_the_ca(
    opensearch: OpenSearch,
    fault_proxy: Callable[..., FaultProxy],
    tls_files: tuple[str, str, str],
) -> None:
    ca, cert, key = tls_files
    proxy = fault_proxy(opensearch.url, tls=(cert, key))
    assert proxy.url.startswith("https://127.0.0.1:")
    trusting = urllib3.PoolManager(retries=False, timeout=30, ca_certs=ca)
    assert items(bulk(proxy.url, ndjson("tls", ["a"]), pool=trusting))[0]["status"] == 201
    with pytest.raises(urllib3.exceptions.SSLError):
        bulk(proxy.url, ndjson("tls", ["b"]), pool=urllib3.PoolManager(retries=False))
    assert opensearch.ids("tls") == {"a": 1}


def test_down_resets_connections_until_up_again(
    opensearch: OpenSearch, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(opensearch.url)
    pool = urllib3.PoolManager(retries=False, timeout=30)
    assert HTTP.request("GET", proxy.url + "/").status == 200
    proxy.down(True)
    # the reset may land while the client still sets up the socket
    reset = (urllib3.exceptions.ProtocolError, urllib3.exceptions.NewConnectionError)
    with pytest.raises(reset):
        bulk(proxy.url, ndjson("down", ["a"]), pool=pool)
    proxy.down(False)
    assert items(bulk(proxy.url, ndjson("down", ["a"]), pool=pool))[0]["status"] == 201


def test_delay_holds_requests(
    opensearch: OpenSearch, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(opensearch.url)
    proxy.delay(2.0)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        urllib3.PoolManager(retries=False, timeout=0.3).request("GET", proxy.url + "/")
    proxy.delay(0)
    assert HTTP.request("GET", proxy.url + "/").status == 200


def test_unreachable_upstream_is_a_502(fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(f"http://127.0.0.1:{free_port()}")
    resp = bulk(proxy.url, ndjson("none", ["a"]))
    assert resp.status == 502
    assert "upstream unreachable" in resp.json()["error"]["reason"]
