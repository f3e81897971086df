"""Jobs: submit a job document, list and watch jobs, read a job's document and log, cancel it."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from haq.core.errors import ConfigError
from haq.core.fileio import atomic_write_text
from haq.jobs.document import RUN_KINDS, parse_job
from haq.jobs.files import to_toml
from haq.service.names import check_submission, planned_total
from haq.service.routes.shared import JobId, Service
from haq.service.store import DONE_STATES
from haq.service.views import job_details, job_view
from haq.service.worker import JOB_FILE
from haq.service.workers import LOG_FILE

MAX_PAGE = 1000
"""The most episodes one page of ``/jobs/{id}/episodes`` returns."""


def job_routes(service: Service) -> APIRouter:
    """The routes under ``/jobs`` that submit, watch and cancel jobs."""
    api = APIRouter()
    store, runs = service.store, service.runs

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
        service.pool.wake()
        return job_view(store, runs, info)

    @api.get("/jobs", tags=["jobs"], summary="every job with its state and progress")
    def list_jobs(state: str | None = Query(None, pattern="^(queued|running|finished|failed|cancelled)$")) -> dict[str, Any]:
        return {"jobs": [job_view(store, runs, j) for j in store.jobs([state] if state else None)]}

    @api.get("/jobs/{job_id}", tags=["jobs"], summary="a job's state, progress, budget and related baselines")
    def get_job(job_id: JobId) -> dict[str, Any]:
        info = service.job_or_404(job_id)
        return {**job_view(store, runs, info), **job_details(store, info)}

    @api.get("/jobs/{job_id}/document", tags=["jobs"], summary="the resolved job document (JSON, or TOML with format=toml)")
    def get_document(job_id: JobId, fmt: str = Query("json", alias="format", pattern="^(json|toml)$")) -> Response:
        info = service.job_or_404(job_id)
        doc = json.loads((store.job_dir(info.id) / JOB_FILE).read_text())
        if fmt == "toml":
            return PlainTextResponse(to_toml(doc), media_type="application/toml")
        return JSONResponse(doc)

    @api.get("/jobs/{job_id}/episodes", tags=["results"], summary="a page of the job's episode log")
    def get_episodes(
        job_id: JobId, offset: int = Query(0, ge=0, le=10**9), limit: int = Query(100, ge=1, le=MAX_PAGE)
    ) -> dict[str, Any]:
        info = service.job_or_404(job_id)
        records = runs.records(store.run_dir(info.id)) if info.kind in RUN_KINDS else []
        page = records[offset : offset + limit]
        return {"total": len(records), "offset": offset, "limit": limit, "episodes": [json.loads(r.to_json()) for r in page]}

    @api.get("/jobs/{job_id}/log", tags=["jobs"], summary="the last lines its workers printed")
    def get_log(job_id: JobId, lines: int = Query(50, ge=1, le=2000)) -> PlainTextResponse:
        info = service.job_or_404(job_id)
        path = store.job_dir(info.id) / LOG_FILE
        text = path.read_text(errors="replace") if path.is_file() else ""
        return PlainTextResponse("\n".join(text.splitlines()[-lines:]) + "\n")

    @api.post("/jobs/{job_id}/cancel", tags=["jobs"], summary="cancel a queued or running job")
    def cancel(job_id: JobId) -> dict[str, Any]:
        info = service.job_or_404(job_id)
        if info.state in DONE_STATES:
            raise HTTPException(409, f"job_id: job {info.id} is already {info.state}")
        return job_view(store, runs, service.pool.cancel(info))

    return api
