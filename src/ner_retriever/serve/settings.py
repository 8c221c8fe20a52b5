"""The limits and switches of one server (``ner-retriever serve`` builds them from its options)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ner_retriever.errors import ConfigError

DEFAULT_EXAMPLES = ("politician", "river", "car model", "sports team", "award", "city",
                    "musician", "company")
MIN_TOKEN_CHARS = 16


@dataclass
class ServeSettings:
    """Limits and switches of one server. ``write_token=None`` makes the index read-only."""

    write_token: str | None = None
    cors_origins: Sequence[str] = ()
    examples: Sequence[str] = DEFAULT_EXAMPLES
    max_query_chars: int = 256
    max_k: int = 100
    max_offset: int = 1000
    max_per_doc: int = 20
    max_entities: int = 1000  # GET /entities?top=
    max_body_bytes: int = 8 * 1024 * 1024
    max_documents: int = 1000
    max_text_chars: int = 200_000
    max_id_chars: int = 512
    cache_size: int = 4096
    max_batch: int = 32
    max_wait_ms: float = 2.0
    # Slow clients (slowloris): deadlines on receiving a request body and a request's line and
    # headers (408), and on an idle keep-alive connection (closed). See ``server_config``.
    body_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    keep_alive_s: int = 5

    def __post_init__(self) -> None:
        if self.write_token is not None:
            token = self.write_token
            if len(token) < MIN_TOKEN_CHARS or token != token.strip() or not token.isprintable():
                raise ConfigError(
                    f"the write token must be at least {MIN_TOKEN_CHARS} printable characters "
                    "without surrounding spaces; generate one with: python -c "
                    "\"import secrets; print(secrets.token_urlsafe(32))\"")
