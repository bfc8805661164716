"""Tracing: RT and agent spans kept in an embedded store, exported over OTLP,
watched for bottlenecks."""
