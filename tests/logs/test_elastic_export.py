"""The `_bulk` exporter against a real OpenSearch 2.19, with a fault-injecting
proxy in front of it for what the server cannot be made to do (429s, item
rejections, credentials, TLS, resets)."""

from __future__ import annotations

import base64
import calendar
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.faultproxy import FaultProxy, make_test_ca
from bench.jaeger import free_port
from bench.opensearch import OpenSearch
from control.logs import elastic
from control.logs.elastic import ElasticSink
from control.logs.elastic_settings import ElasticConfigError, ElasticSettings
from control.logs.sink import Delivery, Record

NODE, SPOOL = "node-a", "sp1"
ALL = "rtcore-logs-*"
# 2026-12-02T00:00:00Z: a fixed day, so the daily index name is known
DAY0_NS = calendar.timegm((2026, 12, 2, 0, 0, 0)) * 1_000_000_000
DAY0_INDEX = "rtcore-logs-2026.12.02"

MakeProxy = Callable[..., FaultProxy]


def iso(time_ns: int) -> str:
    seconds, ns = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ns:09d}Z"


def record(seq: int, time_ns: int | None = None, cycle: Any = None) -> Record:
    """A spool record carrying an ECS document shaped like the lead's encoder's."""
    t = DAY0_NS + seq * 1_000_000 if time_ns is None else time_ns
    doc = {
        "@timestamp": iso(t),
        "log": {"level": "ERROR", "logger": "rt.loop"},
        "message": f"deadline miss number {seq}",
        "ecs": {"version": "8.11.0"},
        "process": {"pid": 1234, "name": "rtcore-rt", "thread": {"id": 1235}},
        "service": {"name": "rtcore", "node": {"name": NODE}},
        "host": {"name": "vm1"},
        "event": {"dataset": "rtcore.rt", "action": "deadline_miss"},
        "rtcore": {
            "node": NODE,
            "cycle": seq if cycle is None else cycle,
            "time_ns": t,
            "fields": {"late_us": 512.3, "skipped": 0},
        },
    }
    return (seq, t, 40, orjson.dumps(doc))


def batch(first: int, n: int) -> list[Record]:
    return [record(seq) for seq in range(first, first + n)]


def doc_id(seq: int) -> str:
    return f"{NODE}-{SPOOL}-{seq}"


def make_sink(url: str, tmp_path: Path, **options: Any) -> ElasticSink:
    settings = ElasticSettings.from_url(url, **options)
    return ElasticSink(settings, NODE, SPOOL, str(tmp_path / "dead-letter.jsonl"))


def drain(sink: ElasticSink, records: Sequence[Record], rounds: int = 100) -> list[Delivery]:
    """Drive the sink as the pipeline does: hand it what is not settled yet,
    wait (a little) when told to, until everything is settled."""
    seen: list[Delivery] = []
    pos = 0
    for _ in range(rounds):
        if pos == len(records):
            return seen
        d = sink.deliver(records[pos:])
        seen.append(d)
        assert 0 <= d.done <= len(records) - pos
        pos += d.done
        if d.retry_after_s is not None:
            time.sleep(min(d.retry_after_s, 0.3))
    raise AssertionError(f"not settled after {rounds} rounds: {seen[-3:]} {sink.stats()}")


def stored_order(opensearch: OpenSearch, index: str = DAY0_INDEX) -> list[str]:
    """The _ids of an index in the order the server indexed them."""
    opensearch.refresh(index)
    out = opensearch.search(index, {"size": 10_000, "sort": ["_seq_no"], "_source": False})
    return [hit["_id"] for hit in out["hits"]["hits"]]


def assert_once_in_order(opensearch: OpenSearch, seqs: Sequence[int]) -> None:
    """Every seq stored exactly once, first copies in seq order."""
    counts = opensearch.ids(ALL)
    assert counts == {doc_id(s): 1 for s in seqs}
    assert stored_order(opensearch) == [doc_id(s) for s in seqs]


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dead-letter.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def one_line_error(check: Callable[[], Any]) -> str:
    with pytest.raises(ElasticConfigError) as info:
        check()
    message = str(info.value)
    assert message and "\n" not in message
    return message


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- delivery against the real server ------------------------------------------


def test_a_server_away_at_start_gets_the_template_before_any_document(
    opensearch: OpenSearch, fault_proxy: MakeProxy, tmp_path: Path
) -> None:
    """check() failed at start (the agent said so and ran on): the first
    delivery that reaches the server installs the template first, so the
    daily index still gets the ECS mapping."""
    proxy = fault_proxy(opensearch.url)
    proxy.down(True)
    sink = make_sink(proxy.url, tmp_path)
    with pytest.raises(ElasticConfigError):
        sink.check()
    d = sink.deliver(batch(1, 3))
    assert d.done == 0 and d.retry_after_s and sink.stats()["errors"] == {"connection": 1}
    proxy.down(False)
    drain(sink, batch(1, 3))
    assert_once_in_order(opensearch, range(1, 4))
    status, index = opensearch.request("GET", "/_index_template/rtcore-logs")
    assert status == 200
    _, mapping = opensearch.request("GET", "/rtcore-logs-*/_mapping")
    for body in mapping.values():
        assert body["mappings"]["properties"]["@timestamp"]["type"] == "date_nanos"


def test_documents_land_in_daily_indices_with_the_template_mapping(
    opensearch: OpenSearch, tmp_path: Path
) -> None:
    sink = make_sink(opensearch.url, tmp_path)
    sink.check()
    last_ns_of_day = DAY0_NS - 1  # 2026-12-01T23:59:59.999999999Z
    records = [record(1, last_ns_of_day), record(2, DAY0_NS), record(3, DAY0_NS + 5)]

    drain(sink, records)

    assert opensearch.ids(ALL) == {doc_id(1): 1, doc_id(2): 1, doc_id(3): 1}
    assert opensearch.count("rtcore-logs-2026.12.01") == 1
    assert opensearch.count(DAY0_INDEX) == 2
    status, mapping = opensearch.request("GET", f"/{DAY0_INDEX}/_mapping")
    assert status == 200
    props = mapping[DAY0_INDEX]["mappings"]["properties"]
    assert props["@timestamp"]["type"] == "date_nanos"
    assert props["log"]["properties"]["level"]["type"] == "keyword"
    assert props["event"]["properties"]["action"]["type"] == "keyword"
    assert props["process"]["properties"]["thread"]["properties"]["id"]["type"] == "long"
    assert props["rtcore"]["properties"]["cycle"]["type"] == "long"
    assert props["message"]["type"] == "text"
    # date_nanos keeps the nanoseconds: a range 1 ns wide finds exactly one document
    hits = opensearch.count(
        ALL, {"range": {"@timestamp": {"gte": iso(DAY0_NS + 5), "lte": iso(DAY0_NS + 5)}}}
    )
    assert hits == 1
    stats = sink.stats()
    assert (stats["delivered"], stats["duplicates"], stats["dead_lettered"]) == (3, 0, 0)
    assert stats["last_success_ns"] > 0 and stats["backoff_s"] == 0.0


def test_a_replay_is_answered_409_and_never_duplicates(
    opensearch: OpenSearch, tmp_path: Path
) -> None:
    records = batch(1, 50)
    first = make_sink(opensearch.url, tmp_path)
    first.check()
    drain(first, records)
    # as after a crash before the spool cursor was saved: a new sink, same batch
    again = make_sink(opensearch.url, tmp_path)
    drain(again, records)

    stats = again.stats()
    assert (stats["delivered"], stats["duplicates"], stats["dead_lettered"]) == (0, 50, 0)
    assert_once_in_order(opensearch, range(1, 51))


def test_a_mapping_conflict_is_dead_lettered_and_the_rest_delivered_in_order(
    opensearch: OpenSearch, tmp_path: Path
) -> None:
    sink = make_sink(opensearch.url, tmp_path)
    sink.check()
    records = batch(1, 10)
    records[3] = record(4, cycle="not-a-number")  # rtcore.cycle is mapped `long`

    drain(sink, records)

    (line,) = dead_letters(tmp_path)
    assert line["_id"] == doc_id(4) and line["index"] == DAY0_INDEX and line["status"] == 400
    assert line["error"]["type"] == "mapper_parsing_exception"
    assert "rtcore.cycle" in line["error"]["reason"]
    assert line["document"] == orjson.loads(records[3][3])
    assert sink.stats()["dead_lettered"] == 1 and sink.stats()["delivered"] == 9
    assert_once_in_order(opensearch, [1, 2, 3, 5, 6, 7, 8, 9, 10])


def test_a_replay_after_a_crash_does_not_dead_letter_a_document_twice(
    opensearch: OpenSearch, tmp_path: Path
) -> None:
    records = batch(1, 6)
    records[2] = record(3, cycle="not-a-number")
    first = make_sink(opensearch.url, tmp_path)
    first.check()
    drain(first, records)
    # the agent dies before the spool persisted its acknowledgements: the next
    # one sends the same records again and gets the same refusal
    again = make_sink(opensearch.url, tmp_path)
    drain(again, records)

    assert [line["_id"] for line in dead_letters(tmp_path)] == [doc_id(3)]
    stats = again.stats()
    assert (stats["duplicates"], stats["dead_lettered"], stats["dead_letter_replays"]) == (5, 0, 1)
    assert_once_in_order(opensearch, [1, 2, 4, 5, 6])


def test_a_document_refused_again_in_the_same_run_is_dead_lettered_once(
    opensearch: OpenSearch, tmp_path: Path
) -> None:
    """Also within one run (a rewind after a sink fault hands a batch again),
    and after a line a crash cut short, the new line stands on its own."""
    path = tmp_path / "dead-letter.jsonl"
    path.write_bytes(b'{"_id": "cut-by-a-cra')
    records = batch(1, 4)
    records[1] = record(2, cycle="not-a-number")
    sink = make_sink(opensearch.url, tmp_path)
    sink.check()
    drain(sink, records)
    drain(sink, records)
    assert path.read_bytes().startswith(b'{"_id": "cut-by-a-cra\n{')
    assert [line["_id"] for line in dead_letters_after_the_cut(tmp_path)] == [doc_id(2)]
    assert sink.stats()["dead_letter_replays"] == 1
    assert list(elastic._dead_letter_ids(str(path))) == [doc_id(2)]


def dead_letters_after_the_cut(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "dead-letter.jsonl").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines[1:]]


def test_a_dead_letter_file_that_cannot_be_written_settles_nothing_past_it(
    opensearch: OpenSearch, tmp_path: Path
) -> None:
    (tmp_path / "not-a-dir").write_text("")
    settings = ElasticSettings.from_url(opensearch.url)
    sink = ElasticSink(settings, NODE, SPOOL, str(tmp_path / "not-a-dir" / "dead.jsonl"))
    records = batch(1, 5)
    records[2] = record(3, cycle="not-a-number")

    d = sink.deliver(records)

    assert d.done == 2 and d.retry_after_s is not None and d.retry_after_s > 0
    assert sink.stats()["errors"] == {"dead_letter": 1}
    assert "dead-letter" in sink.stats()["last_error"]


def test_items_reported_429_are_sent_again_and_their_409_counts_as_delivered(
    opensearch: OpenSearch, fault_proxy: MakeProxy, tmp_path: Path
) -> None:
    proxy = fault_proxy(opensearch.url)
    sink = make_sink(proxy.url, tmp_path)
    sink.check()
    proxy.rewrite_items(3, status=429)  # items 3, 6, 9 indexed for real but reported 429
    records = batch(1, 10)

    deliveries = drain(sink, records)

    # (a real 429 of the whole request, when the server is busy, comes first)
    first = next(d for d in deliveries if d.done)
    assert first.done == 2 and first.retry_after_s is not None and first.retry_after_s > 0
    stats = sink.stats()
    assert stats["retried_items"] >= 8 and stats["dead_lettered"] == 0
    assert stats["delivered"] + stats["duplicates"] == 10 and stats["duplicates"] >= 8
    assert_once_in_order(opensearch, range(1, 11))


@pytest.mark.parametrize("fault", ["429 with Retry-After", "503", "400", "down"])
def test_whole_request_failures_back_off_then_everything_arrives_in_order(
    opensearch: OpenSearch, fault_proxy: MakeProxy, tmp_path: Path, fault: str
) -> None:
    proxy = fault_proxy(opensearch.url)
    sink = make_sink(proxy.url, tmp_path)
    sink.check()
    drain(sink, batch(1, 5))
    if fault == "429 with Retry-After":
        proxy.fail_next(3, status=429, retry_after=0.7)
    elif fault in ("503", "400"):  # a 400 not about one item: nothing is dropped either
        proxy.fail_next(3, status=int(fault))
    else:
        proxy.down()

    failed = [sink.deliver(batch(6, 10)) for _ in range(3)]

    assert [d.done for d in failed] == [0, 0, 0]
    assert all(d.retry_after_s is not None and d.retry_after_s > 0 for d in failed)
    if fault == "429 with Retry-After":
        assert all(d.retry_after_s is not None and d.retry_after_s >= 0.7 for d in failed)
    kinds = {"429 with Retry-After": "throttled", "503": "server", "400": "request"}
    kind = kinds.get(fault, "connection")
    stats = sink.stats()
    assert stats["errors"] == {kind: 3} and stats["last_error"] and stats["backoff_s"] > 0
    proxy.down(False)
    drain(sink, batch(6, 10))
    assert sink.stats()["backoff_s"] == 0.0
    assert_once_in_order(opensearch, range(1, 16))


def test_a_request_that_times_out_is_sent_again_without_duplicates(
    opensearch: OpenSearch, fault_proxy: MakeProxy, tmp_path: Path
) -> None:
    proxy = fault_proxy(opensearch.url)
    make_sink(proxy.url, tmp_path).check()  # creating an index may take longer than 0.5 s
    sink = make_sink(proxy.url, tmp_path, timeout_s=0.5)
    sink.check()  # quick now: the template is replaced, the index is there
    proxy.delay(1.5)  # the proxy still forwards it: the documents do get indexed

    d = sink.deliver(batch(1, 10))

    assert d.done == 0 and d.retry_after_s is not None and d.retry_after_s > 0
    assert sink.stats()["errors"] == {"timeout": 1}
    proxy.delay(0)
    for _ in range(100):  # the late request lands: the retry is a replay
        opensearch.refresh(ALL)
        if opensearch.count(ALL) == 10:
            break
        time.sleep(0.1)
    drain(sink, batch(1, 10))
    assert sink.stats()["duplicates"] == 10
    assert_once_in_order(opensearch, range(1, 11))


def test_delivery_resumes_after_the_server_was_stopped(
    opensearch: OpenSearch, tmp_path: Path
) -> None:
    sink = make_sink(opensearch.url, tmp_path)
    sink.check()
    drain(sink, batch(1, 20))
    opensearch.stop()
    try:
        outage = [sink.deliver(batch(21, 20)) for _ in range(5)]
        assert all(d.done == 0 and (d.retry_after_s or 0) > 0 for d in outage)
        assert sink.stats()["errors"]["connection"] == 5
    finally:
        opensearch.start()
    drain(sink, batch(21, 20))
    assert_once_in_order(opensearch, range(1, 41))


def test_batches_are_split_by_size_and_halved_on_413(
    opensearch: OpenSearch, fault_proxy: MakeProxy, tmp_path: Path
) -> None:
    proxy = fault_proxy(opensearch.url)
    one = len(record(1)[3]) + 80  # a document plus its action line, roughly
    sink = make_sink(proxy.url, tmp_path, max_batch_bytes=4 * one)
    sink.check()
    before = proxy.bulk_requests
    assert sink.deliver(batch(1, 12)) == Delivery(12)
    assert proxy.bulk_requests - before == 3  # 4 documents per request

    proxy.fail_next(1, status=413)
    before = proxy.bulk_requests
    assert sink.deliver(batch(13, 4)) == Delivery(4)
    assert proxy.bulk_requests - before == 3  # refused, then two halves
    # a document too large on its own is dead-lettered, never blocks the rest
    proxy.fail_next(1, status=413)
    assert sink.deliver(batch(17, 1)) == Delivery(1)
    assert [line["status"] for line in dead_letters(tmp_path)] == [413]
    assert sink.deliver(batch(18, 1)) == Delivery(1)
    assert_once_in_order(opensearch, [*range(1, 17), 18])


# -- settings and check(): one line each --------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1:9200",
        "127.0.0.1:9200",
        "http://:9200",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:port",
        "https://elastic:s3cret@127.0.0.1:9200?x=1",
    ],
)
def test_a_malformed_url_is_one_line_without_the_password(url: str) -> None:
    message = one_line_error(lambda: ElasticSettings.from_url(url))
    assert "s3cret" not in message


def test_credentials_in_the_url_are_used_but_never_shown() -> None:
    s = ElasticSettings.from_url("https://elastic:s%40cret@es.example:9243/")
    assert (s.url, s.username, s.password) == ("https://es.example:9243", "elastic", "s@cret")
    assert "cret" not in repr(s)
    sink = ElasticSink(s, NODE, SPOOL, "/nonexistent/dead.jsonl")
    assert "cret" not in repr(sink.stats())


def test_check_names_an_unreachable_server(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    message = one_line_error(make_sink(f"http://127.0.0.1:{port}", tmp_path).check)
    assert f"127.0.0.1:{port}" in message and "refused" in message.lower()


def test_bad_credentials_fail_check_and_only_delay_delivery(
    opensearch: OpenSearch, fault_proxy: MakeProxy, tmp_path: Path
) -> None:
    proxy = fault_proxy(opensearch.url, require_auth=basic("elastic", "right"))
    host = proxy.url.removeprefix("http://")
    wrong = make_sink(f"http://elastic:wrong@{host}", tmp_path)
    message = one_line_error(wrong.check)
    assert "credentials" in message and "401" in message and "wrong" not in message
    make_sink(f"http://elastic:right@{host}", tmp_path).check()

    d = wrong.deliver(batch(1, 3))

    assert d.done == 0 and d.retry_after_s is not None and d.retry_after_s > 0
    assert wrong.stats()["errors"] == {"auth": 1} and "401" in wrong.stats()["last_error"]
    proxy.require_auth = basic("elastic", "wrong")  # fixed on the server's side
    drain(wrong, batch(1, 3))
    assert_once_in_order(opensearch, [1, 2, 3])


def test_an_api_key_is_sent_as_authorization_header(
    opensearch: OpenSearch, fault_proxy: MakeProxy, tmp_path: Path
) -> None:
    proxy = fault_proxy(opensearch.url, require_auth="ApiKey a2V5OnNlY3JldA==")
    one_line_error(make_sink(proxy.url, tmp_path, api_key="b3RoZXI6a2V5").check)
    sink = make_sink(proxy.url, tmp_path, api_key="a2V5OnNlY3JldA==")
    sink.check()
    drain(sink, batch(1, 2))
    assert opensearch.ids(ALL) == {doc_id(1): 1, doc_id(2): 1}


def test_tls_works_with_the_right_ca_and_fails_in_one_line_with_another(
    opensearch: OpenSearch,
    fault_proxy: MakeProxy,
    tls_files: tuple[str, str, str],
    tmp_path: Path,
) -> None:
    ca_file, cert_file, key_file = tls_files
    proxy = fault_proxy(opensearch.url, tls=(cert_file, key_file))
    assert proxy.url.startswith("https://")
    sink = make_sink(proxy.url, tmp_path, ca_file=ca_file)
    sink.check()
    drain(sink, batch(1, 3))

    other_ca, _, _ = make_test_ca(tmp_path / "other-ca")
    message = one_line_error(make_sink(proxy.url, tmp_path, ca_file=other_ca).check)
    assert "TLS" in message and "certificate verify failed" in message
    assert other_ca in message
    message = one_line_error(make_sink(proxy.url, tmp_path, ca_file=str(tmp_path / "no.crt")).check)
    assert "CA file" in message and "No such file" in message
    # plain HTTP to a TLS port: the server hangs up
    message = one_line_error(make_sink(proxy.url.replace("https", "http"), tmp_path).check)
    assert proxy.url.removeprefix("https://") in message
    assert_once_in_order(opensearch, [1, 2, 3])


@pytest.mark.parametrize(
    ("prefix", "says"), [("RTCORE-logs", "lower cased"), ("-rtcore", "must not start with")]
)
def test_an_index_prefix_the_server_refuses_fails_check_with_its_reason(
    opensearch: OpenSearch, tmp_path: Path, prefix: str, says: str
) -> None:
    message = one_line_error(make_sink(opensearch.url, tmp_path, index_prefix=prefix).check)
    assert prefix in message and says in message


def test_dead_lettered_ids_are_read_back_past_a_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "dead-letter.jsonl"
    lines = [orjson.dumps({"_id": doc_id(seq), "seq": seq}) for seq in range(1, 200)]
    path.write_bytes(b"\n".join(lines) + b'\n{"_id": "cut-by-a-cr')
    assert list(elastic._dead_letter_ids(str(path))) == [doc_id(seq) for seq in range(1, 200)]
    # only the file's end is read, and only the newest ids are kept
    monkeypatch.setattr(elastic, "DEAD_LETTER_TAIL_BYTES", len(lines[0]) * 50)
    monkeypatch.setattr(elastic, "DEAD_IDS_KEPT", 10)
    assert list(elastic._dead_letter_ids(str(path))) == [doc_id(seq) for seq in range(190, 200)]
    assert elastic._dead_letter_ids(str(tmp_path / "none.jsonl")) == {}
    # a tail that starts exactly at a line: that line is read too
    line_195 = len(b"\n".join(lines[:194])) + 1
    monkeypatch.setattr(elastic, "DEAD_LETTER_TAIL_BYTES", path.stat().st_size - line_195)
    assert list(elastic._dead_letter_ids(str(path)))[0] == doc_id(195)
