"""How the embedded log store indexes a record and answers a query: the
tantivy schema, the fields taken from a record's ECS document, the filters
as one boolean query (and as a predicate over records not indexed yet), the
time windows a busy day is searched in, and the hits read back.

Filters are MUST clauses of one boolean query, so tantivy intersects posting
lists and a common word with a rare level and a rare event costs what the
rare terms cost. Newest first means top-k by the time fast field, whose cost
grows with the matches: when a query matches many records of a day, the day
is searched in time windows from the newest back, the first sized from the
terms' document frequencies to hold a few times `limit`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
import tantivy

from control.logs.fresh import Fresh

DAY_NS = 86_400 * 1_000_000_000

# windowed search: used when a day may hold more matches than this
WINDOW_ABOVE = 20_000
WINDOW_TARGET = 4  # the first window is sized to hold this many times what is still needed
WINDOW_GROWTH = 8
MIN_WINDOW_NS = 1_000_000_000


def _schema() -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    sb.add_integer_field("time_ns", fast=True)  # ranges and order come from the column
    sb.add_integer_field("seq", fast=True)
    sb.add_integer_field("level", indexed=True)  # level_min: a union of at most 5 posting lists
    for name in ("event", "trace", "node"):
        sb.add_text_field(name, tokenizer_name="raw", index_option="basic")
    sb.add_text_field("message", index_option="basic")  # words must match, no phrases
    sb.add_bytes_field("doc", stored=True)
    return sb.build()


SCHEMA = _schema()
# tantivy's "default" tokenizer, which indexes message: the query's words go through it too
WORDS = (
    tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
    .filter(tantivy.Filter.remove_long(40))
    .filter(tantivy.Filter.lowercase())
    .build()
)


@dataclass(frozen=True)
class Filters:
    terms: list[tuple[str, str]]  # (field, exact term): all must match
    levels: list[int]  # any of them must match; empty: every level

    def build(self, *ranges: tantivy.Query) -> tantivy.Query:
        clauses = [
            tantivy.Query.term_query(SCHEMA, f, v, index_option="basic") for f, v in self.terms
        ]
        if self.levels:
            clauses.append(tantivy.Query.term_set_query(SCHEMA, "level", self.levels))
        clauses += ranges
        return tantivy.Query.boolean_query([(tantivy.Occur.Must, q) for q in clauses])

    def accepts(self, fields: Fields) -> bool:
        """Whether the terms match a record not yet in the index, as the index
        would match them (the message's words through the same analyzer)."""
        words: set[str] | None = None
        for name, value in self.terms:
            if name == "message":
                if words is None:
                    words = set(WORDS.analyze(fields.message)) if fields.message else set()
                if value not in words:
                    return False
            elif getattr(fields, name) != value:
                return False
        return True

    def needles(self) -> tuple[list[bytes], list[bytes]]:
        """Bytes a matching document must hold: each exact term as JSON
        writes it, and (in the document lowered) each ASCII word. A word with
        other letters has no needle: bytes.lower() folds only ASCII."""
        exact = [orjson.dumps(v)[1:-1] for f, v in self.terms if f != "message"]
        lowered = [v.encode() for f, v in self.terms if f == "message" and v.isascii()]
        return exact, lowered

    def most_matches(self, searcher: tantivy.Searcher) -> int:
        """An upper bound on the day's matches, from document frequencies."""
        bound = searcher.num_docs
        for f, v in self.terms:
            bound = min(bound, searcher.doc_freq(f, v))
        if self.levels:
            bound = min(bound, sum(searcher.doc_freq("level", lv) for lv in self.levels))
        return bound


def windows(matches: int, start: int, end: int, wanted: int) -> Iterator[tuple[int, int]]:
    """[lo, hi] windows covering [start, end] from the newest back, growing,
    for a day with at most `matches` matches: small enough that top-k by
    time does not walk every match of a busy day."""
    if start > end:
        return
    if matches <= WINDOW_ABOVE:
        yield start, end
        return
    width = max(MIN_WINDOW_NS, DAY_NS * WINDOW_TARGET * wanted // matches)
    hi = end
    while hi >= start:
        lo = max(start, hi - width + 1)
        yield lo, hi
        hi = lo - 1
        width *= WINDOW_GROWTH


def range_query(name: str, lo: int | None, hi: int | None) -> tantivy.Query:
    return tantivy.Query.range_query(SCHEMA, name, tantivy.FieldType.Integer, lo, hi)


def count(searcher: tantivy.Searcher, query: tantivy.Query) -> int:
    return int(searcher.search(query, 1).count)  # type: ignore[attr-defined]  # not in the stub


class Fields(NamedTuple):
    """What the index keeps of a record: its document (a malformed one made a
    document search can return) and the fields queries filter on. A tuple:
    one is made for every record the store indexes, and a frozen dataclass
    cost a µs more each."""

    doc: bytes
    ecs: dict[str, Any]
    malformed: bool
    message: str | None
    event: str | None
    trace: str | None
    node: str | None


def fields_of(doc: bytes) -> Fields:
    try:
        ecs = orjson.loads(doc)
    except orjson.JSONDecodeError:
        ecs = None
    malformed = not isinstance(ecs, dict)
    if malformed:
        # kept searchable by its text, stored as a document search can return
        ecs = {"message": doc.decode(errors="replace"), "rtcore": {"malformed": "not JSON"}}
        doc = orjson.dumps(ecs)
    # spelled out rather than looped: this runs for every record
    message = ecs.get("message")
    event = ecs.get("event")
    action = event.get("action") if isinstance(event, dict) else None
    trace = ecs.get("trace")
    trace_id = trace.get("id") if isinstance(trace, dict) else None
    service = ecs.get("service")
    node = service.get("node") if isinstance(service, dict) else None
    name = node.get("name") if isinstance(node, dict) else None
    return Fields(
        doc,
        ecs,
        malformed,
        message if isinstance(message, str) else None,
        action if isinstance(action, str) else None,
        trace_id if isinstance(trace_id, str) else None,
        name if isinstance(name, str) else None,
    )


@dataclass(frozen=True, slots=True)
class Hit:
    time_ns: int
    seq: int
    doc: dict[str, Any]


def matching(
    fresh: list[Fresh], query: Filters, lo: int, hi: int, limit: int, by_seq: bool
) -> list[Hit]:
    """The fresh records (not in the index yet) the query matches: the first
    `limit` by seq, or the newest `limit` by time. Parsing a document costs
    ~3 us, so a record is parsed only once nothing cheaper rules it out:
    time and level, then each term's text as bytes in the document (a
    necessary condition), and without terms only the records returned."""
    exact, lowered = query.needles()
    candidates = []
    for rec in fresh:
        seq, time_ns, level, doc = rec
        if not lo <= time_ns <= hi or (query.levels and level not in query.levels):
            continue
        if exact and not all(map(doc.__contains__, exact)):
            continue
        if lowered and not all(map(doc.lower().__contains__, lowered)):
            continue
        candidates.append(rec)
    if not query.terms:
        if not by_seq:  # fresh is in seq order, and time mostly follows it
            candidates.sort(key=lambda r: (r[1], r[0]), reverse=True)
        candidates = candidates[:limit]
    hits = []
    for seq, time_ns, _, doc in candidates:
        fields = fields_of(doc)
        if query.accepts(fields):
            hits.append(Hit(time_ns, seq, fields.ecs))
            if by_seq and len(hits) == limit:
                break
    return hits


def results(hits: list[tuple[tantivy.Searcher, tantivy.DocAddress]]) -> list[Hit]:
    columns: dict[int, tuple[int, int]] = {}  # position in hits -> (time_ns, seq)
    # one read per column and searcher: each read opens the column
    for searcher in {id(s): s for s, _ in hits}.values():
        positions = [i for i, (s, _) in enumerate(hits) if s is searcher]
        addresses = [hits[i][1] for i in positions]
        times = searcher.fast_field_values("time_ns", addresses)
        seqs = searcher.fast_field_values("seq", addresses)
        columns.update(
            (i, (int(t or 0), int(q or 0))) for i, t, q in zip(positions, times, seqs, strict=True)
        )
    return [
        Hit(*columns[i], orjson.loads(searcher.doc(address).get_first("doc") or b"{}"))
        for i, (searcher, address) in enumerate(hits)
    ]


def max_seq(searcher: tantivy.Searcher) -> int:
    hits = searcher.search(tantivy.Query.all_query(), 1, count=False, order_by_field="seq").hits
    return int(hits[0][0]) if hits else -1
