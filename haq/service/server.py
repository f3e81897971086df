"""Serving the app with uvicorn on a socket this module binds, so ``--port 0`` works and the
address is known: it is printed and written to ``STORE/service.json`` before requests are served."""

from __future__ import annotations

import json
import os
import socket

import uvicorn

from haq.core.errors import ConfigError
from haq.core.fileio import atomic_write_text
from haq.core.types import Log
from haq.service.app import create_app
from haq.service.config import ServiceConfig

SERVICE_FILE = "service.json"


def serve(cfg: ServiceConfig, log: Log) -> None:
    """Bind, announce the address, and serve until SIGINT / SIGTERM (workers are stopped and their jobs queued again)."""
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.host, cfg.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {cfg.host}:{cfg.port} ({exc.strerror or exc}); choose another --host / --port"
        ) from None
    sock.listen(128)
    port = sock.getsockname()[1]
    app = create_app(cfg, log)
    host = f"[{cfg.host}]" if family == socket.AF_INET6 else cfg.host
    url = f"http://{host}:{port}/"
    atomic_write_text(
        cfg.store / SERVICE_FILE, json.dumps({"url": url, "host": cfg.host, "port": port, "pid": os.getpid()}) + "\n"
    )
    log(f"haq serve: {url} (store {cfg.store}, at most {cfg.max_jobs} job(s) at once); the page: {url}#token=...")
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=15)
    )
    server.run(sockets=[sock])


__all__ = ["SERVICE_FILE", "serve"]
