"""Structured logs: RT and agent records as ECS documents, through a durable
ordered spool, to sinks that each acknowledge what they delivered (the
embedded searchable store, an Elasticsearch-compatible `_bulk` exporter)."""
