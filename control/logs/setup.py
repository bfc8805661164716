"""A node's log pipeline from its settings: the spool and store in the data
directory, the `_bulk` exporter when --es-url is given.

Nothing here stops an agent from starting: a spool, store or server that
cannot be used is said in one line at start, and the node runs on with what
works (the logs it could not keep are counted and reported in status).
"""

from __future__ import annotations

import os
import time

from loguru import logger

from control.config import AgentConfig
from control.logs.pipeline import LogPipeline
from control.logs.sink import Sink
from control.logs.spool import Spool, SpoolError
from control.logs.store import LogStore, StoreError

MIB = 1 << 20


def open_store(cfg: AgentConfig) -> LogStore | None:
    try:
        return LogStore(
            os.path.join(cfg.data_dir, "logs"),
            max_age_s=cfg.log_retention_days * 86_400,
            max_bytes=cfg.log_store_mb * MIB,
        )
    except StoreError as e:
        logger.error("log store unavailable: {}; logs are kept in the spool only", e)
        return None


def open_elastic(cfg: AgentConfig, spool_id: str) -> Sink | None:
    if not cfg.es_url:
        return None
    from control.logs.elastic import ElasticSink
    from control.logs.elastic_settings import ElasticConfigError, ElasticSettings

    options: dict[str, str] = {}
    if cfg.es_api_key_file:
        with open(cfg.es_api_key_file) as f:  # readable: the setting's rule opened it
            options["api_key"] = f.read().strip()
    if cfg.es_ca_file:
        options["ca_file"] = cfg.es_ca_file
    try:  # checked with the configuration already; the key file may have changed since
        settings = ElasticSettings.from_url(cfg.es_url, index_prefix=cfg.es_index_prefix, **options)
    except ElasticConfigError as e:
        logger.error("log export to Elasticsearch is off: {}", e)
        return None
    sink = ElasticSink(
        settings, cfg.node_id, spool_id, os.path.join(cfg.data_dir, "logs-dead-letter.jsonl")
    )
    try:
        sink.check()
    except ElasticConfigError as e:
        # the server may come (or be fixed) later: the exporter keeps trying,
        # the spool keeps what it has not delivered
        logger.error("log export to Elasticsearch: {}; retrying in the background", e)
    return sink


def open_pipeline(cfg: AgentConfig) -> tuple[LogPipeline, LogStore | None]:
    store = open_store(cfg)
    names = (["store"] if store is not None else []) + (["elastic"] if cfg.es_url else [])
    try:
        spool = Spool(
            os.path.join(cfg.data_dir, "spool"),
            sinks=names,
            max_bytes=cfg.log_spool_mb * MIB,
            first_seq=time.time_ns() // 1000,
        )
    except SpoolError as e:
        logger.error("log spool unavailable: {}; logs are counted as dropped", e)
        return LogPipeline(None, [], spool_error=str(e)), store
    sinks: list[Sink] = [store] if store is not None else []
    if store is not None:  # searchable once spooled, before the store's commit
        spool.on_append = store.fresh.add
    elastic = open_elastic(cfg, spool.spool_id)
    if elastic is not None:
        sinks.append(elastic)
    return LogPipeline(spool, sinks), store
