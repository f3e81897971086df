"""The service's HTTP API (FastAPI): jobs, their progress and results, tables and device agents.

Every route but ``/health`` and the page (``/``, static, holding no data) needs
``Authorization: Bearer <token>`` (compared in constant time). Request bodies are capped (a
job document or an agent registration: ``max_body_bytes``; a table upload:
``max_table_bytes``). Every bad request is a 4xx whose ``detail`` names the field: a job
document is validated by the CLI's config classes and :mod:`haq.service.names` before it is
queued. Jobs run in worker processes (:mod:`haq.service.workers`); handlers only read the store
(plots and ONNX exports are made on request: plots here, exports in a worker process).
The routes are in :mod:`haq.service.routes`, one module per resource. The schema is at
``/openapi.json``.
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from haq import __version__
from haq.core.errors import ConfigError, HaqError, PolicyError, RunDirError, TableError
from haq.core.types import Log
from haq.service.body_limit import BodyLimit
from haq.service.config import ServiceConfig
from haq.service.routes.agents import agent_routes
from haq.service.routes.jobs import job_routes
from haq.service.routes.results import result_routes
from haq.service.routes.shared import Service
from haq.service.routes.tables import table_routes
from haq.service.store import Store
from haq.service.views import RunCache
from haq.service.workers import WorkerPool

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data: blob:",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def create_app(cfg: ServiceConfig, log: Log) -> FastAPI:
    """The app for one store; its lifespan starts and stops the worker pool."""
    store = Store(cfg.store)
    service = Service(cfg, store, WorkerPool(store, cfg.max_jobs, cfg.max_attempts, log), RunCache())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.pool.start()
        try:
            yield
        finally:
            service.pool.stop()
            store.close()

    app = FastAPI(
        title="haq service",
        version=__version__,
        lifespan=lifespan,
        description="Runs, persists and resumes haq searches, baselines, transfers and table builds. "
        "Every route but /health and the page needs `Authorization: Bearer <token>` ($HAQ_SERVICE_TOKEN of the service).",
    )
    app.state.store, app.state.pool = store, service.pool
    bearer = HTTPBearer(auto_error=False, description="the service's token ($HAQ_SERVICE_TOKEN)")

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = credentials.credentials if credentials is not None and credentials.scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode("utf-8", "replace"), cfg.token.encode("utf-8")):
            raise HTTPException(401, "Authorization: a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(HaqError)
    async def haq_error(_request: Request, exc: HaqError) -> JSONResponse:
        status = 409 if isinstance(exc, RunDirError) else 422 if isinstance(exc, (ConfigError, TableError, PolicyError)) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors]
        return JSONResponse(
            {"detail": "; ".join(parts) or "invalid request", "errors": _jsonable_errors(errors)}, status_code=422
        )

    @app.get("/health", tags=["service"], summary="liveness (no token needed)")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = resources.files("haq.service").joinpath("page.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers=PAGE_HEADERS)

    for routes in (job_routes, result_routes, table_routes, agent_routes):
        app.include_router(
            routes(service),
            dependencies=[Depends(authorized)],
            responses={401: {"description": "missing or wrong bearer token"}},
        )
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes, table_limit=cfg.max_table_bytes)
    return app


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append({"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
    return out


__all__ = ["create_app"]
