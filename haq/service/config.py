"""The service's settings (``haq serve``), validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from haq.core import validate
from haq.core.errors import ConfigError

TOKEN_ENV = "HAQ_SERVICE_TOKEN"
MIN_TOKEN_CHARS = 16
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class ServiceConfig:
    """How one service runs.

    store: directory holding the database (``service.db``), the jobs' directories and the
        uploaded tables; created if absent.
    token: the bearer token every route but ``/health`` and the page requires.
    max_jobs: jobs running at once (each in its own worker process); the rest queue.
    max_body_bytes: largest request body (a job document, an agent registration).
    max_table_bytes: largest uploaded table.
    max_attempts: how often a job whose worker was killed is restarted before it fails.
    export_timeout_s: seconds an ONNX export of a best policy may take.
    """

    store: Path
    token: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_jobs: int = 2
    max_body_bytes: int = 64 * 1024
    max_table_bytes: int = 16 * 1024 * 1024
    max_attempts: int = 3
    export_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        check_token(self.token)
        validate.count("--port", self.port, 0, 65535)
        validate.count("--max-jobs", self.max_jobs, 1, 64)
        validate.count("max_body_bytes", self.max_body_bytes, 1024)
        validate.count("max_table_bytes", self.max_table_bytes, 1024)
        validate.count("max_attempts", self.max_attempts, 1, 100)
        validate.positive("export_timeout_s", self.export_timeout_s)
        if not self.host:
            raise ConfigError("--host must be an address to listen on, e.g. 127.0.0.1")
        if self.store.exists() and not self.store.is_dir():
            raise ConfigError(f"--store {self.store} exists and is not a directory")


def check_token(token: str) -> None:
    """A service token: at least :data:`MIN_TOKEN_CHARS` characters, none of them blank."""
    if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS or any(ch.isspace() for ch in token) or not token.isprintable():
        raise ConfigError(
            f"${TOKEN_ENV} must hold a token of at least {MIN_TOKEN_CHARS} printable non-blank characters "
            "(e.g. `export HAQ_SERVICE_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')`)"
        )


__all__ = ["DEFAULT_PORT", "MIN_TOKEN_CHARS", "TOKEN_ENV", "ServiceConfig", "check_token"]
