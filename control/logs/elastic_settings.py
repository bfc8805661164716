"""Where and how the log exporter reaches Elasticsearch (or OpenSearch): the
URL, credentials, CA, index prefix, timeouts, each checked when made, so a
bad setting is one line at start. Apart from the exporter, so checking the
configuration does not load the HTTP client."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit


class ElasticConfigError(ValueError):
    """The Elasticsearch settings cannot work; the one-line message says why,
    `kind` which error counter a failed delivery adds to."""

    def __init__(self, message: str, kind: str = "setup") -> None:
        super().__init__(message)
        self.kind = kind


def redact(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url)


@dataclass(frozen=True)
class ElasticSettings:
    url: str  # http(s)://host[:port][/path], without credentials
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)  # the encoded key ES hands out
    ca_file: str | None = None
    index_prefix: str = "rtcore-logs"
    timeout_s: float = 10.0
    max_batch_bytes: int = 5 << 20

    def __post_init__(self) -> None:
        shown = redact(self.url)
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as e:
            raise ElasticConfigError(f"Elasticsearch URL {shown!r}: {e}") from None  # bad port
        expected = "; expected http(s)://[user:password@]host:port"
        problem = ""
        if parts.scheme not in ("http", "https"):
            problem = f"Elasticsearch URL {shown!r} must start with http:// or https://{expected}"
        elif not parts.hostname or parts.port == 0:
            problem = (
                f"Elasticsearch URL {shown!r} needs a host and a port from 1 to 65535{expected}"
            )
        elif parts.username is not None:
            problem = (
                "Elasticsearch credentials in the URL must go through ElasticSettings.from_url"
            )
        elif parts.query or parts.fragment:
            problem = f"Elasticsearch URL {shown!r} must not carry a query or a fragment{expected}"
        elif self.api_key and self.username is not None:
            problem = "Elasticsearch: give a user and password or an API key, not both"
        elif not self.index_prefix:
            problem = "Elasticsearch index prefix is empty"
        elif self.timeout_s <= 0 or self.max_batch_bytes <= 0:
            problem = "Elasticsearch timeout and batch size must be positive"
        if problem:
            raise ElasticConfigError(problem)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ElasticSettings:
        """Settings from `http(s)://[user:password@]host:port`; `options` are
        the other fields. Credentials in the URL are moved out of it."""
        try:
            parts = urlsplit(url.strip())
        except ValueError as e:
            raise ElasticConfigError(f"Elasticsearch URL {redact(url)!r}: {e}") from None
        if parts.username is not None:
            if "username" in options or "api_key" in options:
                raise ElasticConfigError(
                    "Elasticsearch credentials given both in the URL and as options; keep one"
                )
            options["username"] = unquote(parts.username)
            options["password"] = unquote(parts.password or "")
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        return cls(url=parts.geturl().rstrip("/"), **options)
