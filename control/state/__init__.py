"""Durable state: checkpoint files on disk (later: replication to standbys)."""
