"""What every route module uses: the service's state and the path parameters it validates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import HTTPException
from fastapi import Path as PathParam

from haq.service.config import ServiceConfig
from haq.service.store import JOB_ID, NAME, JobInfo, Store
from haq.service.views import RunCache
from haq.service.workers import WorkerPool

JobId = Annotated[str, PathParam(description="a job id (16 hex digits)", min_length=16, max_length=16, pattern="^[0-9a-f]{16}$")]
Name = Annotated[
    str, PathParam(description="a table or agent name", min_length=1, max_length=64, pattern="^" + NAME.pattern + "$")
]


@dataclass(frozen=True)
class Service:
    """One running service: its settings, its store, its worker pool and its cache of run files."""

    cfg: ServiceConfig
    store: Store
    pool: WorkerPool
    runs: RunCache

    def job_or_404(self, job_id: str) -> JobInfo:
        """The job ``job_id`` names, or a 404 naming the field."""
        info = self.store.job(job_id) if JOB_ID.fullmatch(job_id) else None
        if info is None:
            raise HTTPException(404, f"job_id: no job {job_id!r}")
        return info
