"""The service's HTTP API (FastAPI): jobs, their progress and results, tables and device agents.

Every route but ``/health`` and the page (``/``, static, holding no data) needs
``Authorization: Bearer <token>`` (compared in constant time). Request bodies are capped (a
job document or an agent registration: ``max_body_bytes``; a table upload:
``max_table_bytes``). Every bad request is a 4xx whose ``detail`` names the field: a job
document is validated by the CLI's config classes and :mod:`haq.service.names` before it is
queued. Jobs run in worker processes (:mod:`haq.service.workers`); handlers only read the store
(plots and ONNX exports are made on request: plots here, exports in a worker process).
The schema is at ``/openapi.json``.
"""

from __future__ import annotations

import enum
import hmac
import json
import os
import ssl
import subprocess
import sys
import threading
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

import latency_tables
from haq import __version__
from haq.core.errors import ConfigError, HaqError, PolicyError, RunDirError, TableError
from haq.core.fileio import atomic_write_bytes, atomic_write_text
from haq.core.types import Log
from haq.jobs.document import RUN_KINDS, parse_job
from haq.jobs.files import to_toml
from haq.plots import plot_run
from haq.runs.final_pick import PICK_FILE, POLICY_FILE
from haq.runs.rundir import BEST_FILE, RunDir, best_of
from haq.service.body_limit import BodyLimit
from haq.service.config import ServiceConfig
from haq.service.names import check_submission, known_tables, planned_total
from haq.service.peek import file_stamp, read_message, read_object
from haq.service.store import DONE_STATES, JOB_ID, NAME, JobInfo, Store
from haq.service.views import RunCache, job_details, job_view, related_baselines, table_source
from haq.service.worker import EXPORT_ERROR_FILE, JOB_FILE, ONNX_FILE, ONNX_STAMP
from haq.service.workers import LOG_FILE, WORKER_MODULE, WorkerPool
from haq.tables.table import load_table

MAX_PAGE = 1000
PLOTS_DIR = "plots"
JobId = Annotated[str, PathParam(description="a job id (16 hex digits)", min_length=16, max_length=16, pattern="^[0-9a-f]{16}$")]
Name = Annotated[
    str, PathParam(description="a table or agent name", min_length=1, max_length=64, pattern="^" + NAME.pattern + "$")
]


class Figure(str, enum.Enum):
    """The PNG figures of a run (``haq plot``)."""

    reward = "reward"
    accuracy_vs_cost = "accuracy_vs_cost"
    bits = "bits"


class AgentIn(BaseModel):
    """A device agent (``haq device serve``) to register for hardware-in-the-loop table builds."""

    host: str = Field(
        min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:-]+$", description="host name or address (IPv6 without brackets)"
    )
    port: int = Field(ge=1, le=65535)
    token: str = Field(min_length=8, max_length=1024, description="the agent's token; stored by the service, never returned")
    tls_ca: str | None = Field(
        None,
        max_length=65536,
        description="PEM certificate (or CA) of an agent that serves TLS (haq device serve --tls-cert); "
        "the service then speaks TLS to it and trusts only this certificate",
    )


def create_app(cfg: ServiceConfig, log: Log) -> FastAPI:
    """The app for one store; its lifespan starts and stops the worker pool."""
    store = Store(cfg.store)
    pool = WorkerPool(store, cfg.max_jobs, cfg.max_attempts, log)
    runs = RunCache()
    plot_lock = threading.Lock()
    export_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pool.start()
        try:
            yield
        finally:
            pool.stop()
            store.close()

    app = FastAPI(
        title="haq service",
        version=__version__,
        lifespan=lifespan,
        description="Runs, persists and resumes haq searches, baselines, transfers and table builds. "
        "Every route but /health and the page needs `Authorization: Bearer <token>` ($HAQ_SERVICE_TOKEN of the service).",
    )
    app.state.store, app.state.pool = store, pool
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
        return HTMLResponse(
            html,
            headers={
                "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                "connect-src 'self'; img-src 'self' data: blob:",
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
            },
        )

    api = APIRouter(dependencies=[Depends(authorized)], responses={401: {"description": "missing or wrong bearer token"}})

    def job_or_404(job_id: str) -> JobInfo:
        info = store.job(job_id) if JOB_ID.fullmatch(job_id) else None
        if info is None:
            raise HTTPException(404, f"job_id: no job {job_id!r}")
        return info

    @api.post("/jobs", status_code=201, tags=["jobs"], summary="submit a job document (validated before it is queued)")
    def submit(
        doc: dict[str, Any] = Body(
            ...,
            description="a haq job document: version, kind and the kind's sections",
            examples=[{"version": 1, "kind": "search", "search": {"episodes": 20, "env": {"evaluation": {"kind": "cheap"}}}}],
        ),
    ) -> dict[str, Any]:
        job = parse_job(doc)
        check_submission(job, store)
        try:
            text = json.dumps(job.to_dict(), indent=2, allow_nan=False) + "\n"
        except ValueError:
            raise ConfigError("the job document holds a number that is not finite (NaN or infinity)") from None
        job_id = store.new_job_id()
        job_dir = store.job_dir(job_id)
        job_dir.mkdir(parents=True)
        atomic_write_text(job_dir / JOB_FILE, text)
        info = store.add_job(job_id, job.kind, planned_total(job))
        pool.wake()
        return job_view(store, runs, info)

    @api.get("/jobs", tags=["jobs"], summary="every job with its state and progress")
    def list_jobs(state: str | None = Query(None, pattern="^(queued|running|finished|failed|cancelled)$")) -> dict[str, Any]:
        return {"jobs": [job_view(store, runs, j) for j in store.jobs([state] if state else None)]}

    @api.get("/jobs/{job_id}", tags=["jobs"], summary="a job's state, progress, budget and related baselines")
    def get_job(job_id: JobId) -> dict[str, Any]:
        info = job_or_404(job_id)
        return {**job_view(store, runs, info), **job_details(store, info)}

    @api.get("/jobs/{job_id}/document", tags=["jobs"], summary="the resolved job document (JSON, or TOML with format=toml)")
    def get_document(job_id: JobId, fmt: str = Query("json", alias="format", pattern="^(json|toml)$")) -> Response:
        info = job_or_404(job_id)
        doc = json.loads((store.job_dir(info.id) / JOB_FILE).read_text())
        if fmt == "toml":
            return PlainTextResponse(to_toml(doc), media_type="application/toml")
        return JSONResponse(doc)

    @api.get("/jobs/{job_id}/episodes", tags=["results"], summary="a page of the job's episode log")
    def get_episodes(
        job_id: JobId, offset: int = Query(0, ge=0, le=10**9), limit: int = Query(100, ge=1, le=MAX_PAGE)
    ) -> dict[str, Any]:
        info = job_or_404(job_id)
        records = runs.records(store.run_dir(info.id)) if info.kind in RUN_KINDS else []
        page = records[offset : offset + limit]
        return {"total": len(records), "offset": offset, "limit": limit, "episodes": [json.loads(r.to_json()) for r in page]}

    def run_file(job_id: str, name: str, missing: str) -> Response:
        """A JSON file of the job's run directory, or a 404 that says why it is not there."""
        info = job_or_404(job_id)
        path = store.run_dir(info.id) / name
        if info.kind not in RUN_KINDS or not path.is_file():
            raise HTTPException(404, f"job_id: job {info.id} has {missing}")
        return FileResponse(path, media_type="application/json")

    @api.get("/jobs/{job_id}/best", tags=["results"], summary="the best policy so far (haq.policy JSON)")
    def get_best(job_id: JobId) -> Response:
        return run_file(job_id, BEST_FILE, "no best policy yet")

    @api.get(
        "/jobs/{job_id}/final",
        tags=["results"],
        summary="the policy to deploy: the final pick's choice, re-scored on held-out images (haq.policy JSON)",
    )
    def get_final(job_id: JobId) -> Response:
        return run_file(job_id, POLICY_FILE, "no final pick (made when the run finishes, unless its [pick] k is 0)")

    @api.get("/jobs/{job_id}/final/pick", tags=["results"], summary="the final pick's evidence (haq.final_pick JSON)")
    def get_final_pick(job_id: JobId) -> Response:
        return run_file(job_id, PICK_FILE, "no final pick (made when the run finishes, unless its [pick] k is 0)")

    @api.get(
        "/jobs/{job_id}/plots/{figure}",
        tags=["results"],
        summary="a PNG of the run (haq plot), baselines overlaid",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def get_plot(figure: Figure, job_id: JobId) -> Response:
        info = job_or_404(job_id)
        run_dir = store.run_dir(info.id)
        if info.kind not in RUN_KINDS or not runs.records(run_dir):
            raise HTTPException(404, f"job_id: job {info.id} has no finished episode to plot yet")
        baselines = [store.run_dir(b) for b in related_baselines(store, info) if runs.records(store.run_dir(b))]
        out = store.job_dir(info.id) / PLOTS_DIR
        stamp = json.dumps([file_stamp(RunDir(d).episodes_path) for d in (run_dir, *baselines)])
        with plot_lock:
            stamp_file = out / "stamp.json"
            if not (stamp_file.is_file() and stamp_file.read_text() == stamp and (out / f"{figure.value}.png").is_file()):
                try:
                    plot_run(run_dir, baselines, out)
                except HaqError as exc:
                    raise HTTPException(404, f"figure: {exc}") from None
                atomic_write_text(stamp_file, stamp)
            data = (out / f"{figure.value}.png").read_bytes()
        return Response(data, media_type="image/png")

    @api.get(
        "/jobs/{job_id}/onnx",
        tags=["results"],
        summary="the best policy exported as QDQ ONNX (made on first request)",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def get_onnx(job_id: JobId) -> Response:
        info = job_or_404(job_id)
        run_dir = store.run_dir(info.id)
        best = best_of(runs.records(run_dir)) if info.kind in RUN_KINDS else None
        if best is None:
            raise HTTPException(404, f"job_id: job {info.id} has no best policy to export yet")
        job_dir = store.job_dir(info.id)
        with export_lock:
            if _stamped_episode(job_dir / ONNX_STAMP) != best.episode:
                _export(cfg, store, info.id)
            data = (job_dir / ONNX_FILE).read_bytes()
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{info.id}-best.onnx"'},
        )

    @api.get("/jobs/{job_id}/log", tags=["jobs"], summary="the last lines its workers printed")
    def get_log(job_id: JobId, lines: int = Query(50, ge=1, le=2000)) -> PlainTextResponse:
        info = job_or_404(job_id)
        path = store.job_dir(info.id) / LOG_FILE
        text = path.read_text(errors="replace") if path.is_file() else ""
        return PlainTextResponse("\n".join(text.splitlines()[-lines:]) + "\n")

    @api.post("/jobs/{job_id}/cancel", tags=["jobs"], summary="cancel a queued or running job")
    def cancel(job_id: JobId) -> dict[str, Any]:
        info = job_or_404(job_id)
        if info.state in DONE_STATES:
            raise HTTPException(409, f"job_id: job {info.id} is already {info.state}")
        return job_view(store, runs, pool.cancel(info))

    @api.get("/tables", tags=["tables"], summary="the tables the service knows: shipped, uploaded and built")
    def list_tables() -> dict[str, Any]:
        tables = known_tables(store).items()
        return {"tables": [runs.table_summary(name, path, table_source(store, path)) for name, path in tables]}

    @api.get("/tables/{name}", tags=["tables"], summary="one table file")
    def get_table(name: Name) -> FileResponse:
        path = known_tables(store).get(name)
        if path is None:
            raise HTTPException(404, f"name: no table {name!r}")
        return FileResponse(path, media_type="application/json")

    @api.put(
        "/tables/{name}",
        status_code=201,
        tags=["tables"],
        summary="upload a table (validated by the table loader)",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    async def put_table(
        request: Request, name: Name, replace: bool = Query(False, description="replace an uploaded table of that name")
    ) -> dict[str, Any]:
        body = await request.body()
        return _store_table(store, runs, name, body, replace)

    @api.get("/agents", tags=["agents"], summary="registered device agents (tokens are never returned)")
    def list_agents() -> dict[str, Any]:
        return {"agents": [a.public() for a in store.agents()]}

    @api.put("/agents/{name}", status_code=201, tags=["agents"], summary="register a device agent for table builds (agent:NAME)")
    def put_agent(agent: AgentIn, name: Name) -> dict[str, Any]:
        if agent.tls_ca is not None:
            check_pem(agent.tls_ca)
        return store.add_agent(name, agent.host, agent.port, agent.token, agent.tls_ca).public()

    @api.delete("/agents/{name}", tags=["agents"], summary="forget a device agent")
    def delete_agent(name: Name) -> dict[str, Any]:
        if not store.remove_agent(name):
            raise HTTPException(404, f"name: no agent {name!r}")
        return {"name": name, "removed": True}

    app.include_router(api)
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes, table_limit=cfg.max_table_bytes)
    return app


def check_pem(pem: str) -> None:
    """Refuse (422, one line) a ``tls_ca`` that is not a certificate ``ssl`` can trust."""
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise HTTPException(422, f"tls_ca: not a PEM certificate ssl can load ({exc}); send the agent's --tls-cert file") from exc


def _store_table(store: Store, runs: RunCache, name: str, body: bytes, replace: bool) -> dict[str, Any]:
    """Validate an uploaded table with the table loader, then move it into place."""
    if name in latency_tables.available():
        raise HTTPException(409, f"name: {name!r} is a shipped table; upload under another name")
    final = store.tables_dir / f"{name}.json"
    if final.exists() and not replace:
        raise HTTPException(409, f"name: a table {name!r} exists; pass replace=true to replace it")
    tmp = store.tables_dir / ".incoming" / f"{name}.json"
    atomic_write_bytes(tmp, body)
    try:
        table = load_table(tmp, name)
    except HaqError as exc:
        tmp.unlink(missing_ok=True)
        raise HTTPException(422, f"body: not a valid cost table: {exc}") from None
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        tmp.unlink(missing_ok=True)
        raise HTTPException(422, f"body: not a valid cost table ({type(exc).__name__})") from None
    tmp.replace(final)
    return runs.table_summary(name, final, "store") | {"device": table.device}


def _export(cfg: ServiceConfig, store: Store, job_id: str) -> None:
    """Export in a worker process (it loads the model), bounded by ``export_timeout_s``."""
    cmd = [sys.executable, "-m", WORKER_MODULE, "--store", str(store.root), "--parent", str(os.getpid()), "--export", job_id]
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=cfg.export_timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HTTPException(504, f"exporting job {job_id} took longer than {cfg.export_timeout_s:g} s") from None
    if done.returncode != 0:
        message = read_message(store.job_dir(job_id) / EXPORT_ERROR_FILE) or f"exit code {done.returncode}"
        raise HTTPException(409, f"job_id: the best policy of job {job_id} cannot be exported: {message}")


def _stamped_episode(path: Path) -> int | None:
    value = read_object(path).get("episode")
    return value if isinstance(value, int) else None


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append({"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
    return out


__all__ = ["Figure", "create_app"]
