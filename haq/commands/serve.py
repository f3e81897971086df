"""``haq serve``: the search service (jobs over HTTP, persisted, resumed after a crash; a page to watch them)."""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from haq.core.errors import ConfigError
from haq.core.types import stderr_log as log

SERVICE_PACKAGES = ("fastapi", "uvicorn", "sqlalchemy")


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    from haq.service.config import DEFAULT_PORT, TOKEN_ENV

    p = sub.add_parser("serve", help="the search service: submit, watch and resume jobs over HTTP (token in $HAQ_SERVICE_TOKEN)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument(
        "--store", required=True, help="directory of the jobs, their run directories, uploaded tables and the database"
    )
    p.add_argument("--max-jobs", type=int, default=2, help="jobs running at once, one worker process each (default 2)")
    p.epilog = f"The bearer token comes from ${TOKEN_ENV} (16+ non-blank characters); the service refuses to start without one."
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from haq.service.config import TOKEN_ENV, ServiceConfig

    missing = [name for name in SERVICE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"haq serve needs {', '.join(missing)}: pip install 'haq[service]'")
    cfg = ServiceConfig(
        store=Path(ns.store), token=os.environ.get(TOKEN_ENV, ""), host=ns.host, port=ns.port, max_jobs=ns.max_jobs
    )
    from haq.service.server import serve

    serve(cfg, log)
    return 0
