"""The service's store: jobs and device agents in SQLite (through SQLAlchemy), files in directories.

Layout of ``--store DIR``::

    DIR/service.db             jobs (state, attempts, worker pid, message) and device agents
    DIR/jobs/<id>/job.json     the submitted document, resolved (every field explicit)
    DIR/jobs/<id>/run/         the job's run directory (search, baseline, transfer; a table
                               check's report)
    DIR/jobs/<id>/worker.log   what the job's workers printed
    DIR/jobs/<id>/progress.json, result.json, error.json   written by the worker
    DIR/tables/<name>.json     uploaded tables and tables built by jobs
    DIR/agents/<name>.pem      the certificate a registered agent serving TLS is trusted by

Only the service process writes the database; workers read it (a table build looks up its
registered device agent). The store directory and the database are private to the user
(0700 / 0600): the database holds the device agents' tokens.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import Boolean, Float, Integer, String, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from haq.core.errors import ConfigError
from haq.core.fileio import atomic_write_text

QUEUED, RUNNING, FINISHED, FAILED, CANCELLED = "queued", "running", "finished", "failed", "cancelled"
STATES = (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED)
DONE_STATES = (FINISHED, FAILED, CANCELLED)
JOB_ID = re.compile(r"[0-9a-f]{16}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Names of uploaded tables and device agents."""


class _Base(DeclarativeBase):
    pass


class _JobRow(_Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), index=True)
    created: Mapped[float] = mapped_column(Float)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str | None] = mapped_column(String, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kills: Mapped[int] = mapped_column(Integer, default=0)


class _AgentRow(_Base):
    __tablename__ = "agents"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    token: Mapped[str] = mapped_column(String(1024))
    created: Mapped[float] = mapped_column(Float)


@dataclass(frozen=True)
class JobInfo:
    """One job's row.

    total: episodes (evaluations) the job plans, when its kind has them.
    attempts: workers started for it.
    kills: its workers killed while the service ran (restarted with resume up to the service's limit).
    """

    id: str
    kind: str
    state: str
    created: float
    started: float | None
    finished: float | None
    attempts: int
    pid: int | None
    message: str | None
    cancel_requested: bool
    total: int | None
    kills: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the pid is an implementation detail and stays out)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "attempts": self.attempts,
            "message": self.message,
            "total": self.total,
            "cancel_requested": self.cancel_requested,
        }


@dataclass(frozen=True)
class AgentInfo:
    """A registered device agent; ``token`` never leaves the service (see :meth:`public`)."""

    name: str
    host: str
    port: int
    token: str
    created: float
    tls_ca: str | None = None
    """The certificate file (PEM) the agent's TLS is checked against; ``None``: it speaks plain TCP."""

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but the token."""
        return {"name": self.name, "host": self.host, "port": self.port, "created": self.created, "tls": self.tls_ca is not None}

    @property
    def spec(self) -> str:
        """The ``remote://HOST:PORT`` address the device runner takes."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"remote://{host}:{self.port}"


class Store:
    """The store directory and its database (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for d in (root, root / "jobs", root / "tables", root / "agents"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        db = root / "service.db"
        self.engine: Engine = create_engine(f"sqlite:///{db}", connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(self.engine, "connect", _sqlite_pragmas)
        _Base.metadata.create_all(self.engine)
        os.chmod(db, 0o600)
        self._lock = threading.Lock()

    @property
    def tables_dir(self) -> Path:
        """Uploaded and built tables."""
        return self.root / "tables"

    def job_dir(self, job_id: str) -> Path:
        """A job's directory (the id is checked, so no path can escape the store)."""
        if not JOB_ID.fullmatch(job_id):
            raise ConfigError(f"job id {job_id!r} is not a job id (16 hex digits)")
        return self.root / "jobs" / job_id

    def run_dir(self, job_id: str) -> Path:
        """A job's run directory."""
        return self.job_dir(job_id) / "run"

    def new_job_id(self) -> str:
        """An id no job has (for the directory written before the row)."""
        while True:
            job_id = secrets.token_hex(8)
            if self.job(job_id) is None:
                return job_id

    def add_job(self, job_id: str, kind: str, total: int | None) -> JobInfo:
        """Add a queued job under ``job_id`` (its directory already written)."""
        row = _JobRow(
            id=job_id, kind=kind, state=QUEUED, created=time.time(), attempts=0, cancel_requested=False, total=total, kills=0
        )
        with self._lock, Session(self.engine) as s:
            s.add(row)
            s.commit()
            return _job(row)

    def job(self, job_id: str) -> JobInfo | None:
        """One job, or None."""
        with Session(self.engine) as s:
            row = s.get(_JobRow, job_id)
            return _job(row) if row is not None else None

    def jobs(self, states: Iterable[str] | None = None) -> list[JobInfo]:
        """Jobs (in ``states`` when given), oldest first."""
        with Session(self.engine) as s:
            q = select(_JobRow).order_by(_JobRow.created, _JobRow.id)
            if states is not None:
                q = q.where(_JobRow.state.in_(list(states)))
            return [_job(r) for r in s.scalars(q)]

    def update(self, job_id: str, **fields: Any) -> JobInfo:
        """Change fields of a job's row."""
        with self._lock, Session(self.engine) as s:
            row = s.get(_JobRow, job_id)
            if row is None:
                raise ConfigError(f"no job {job_id}")
            for key, value in fields.items():
                setattr(row, key, value)
            s.commit()
            return _job(row)

    def _agent_pem(self, name: str) -> Path:
        """Where an agent's certificate is kept (the name is checked, so no path can escape the store)."""
        if not NAME.fullmatch(name):
            raise ConfigError(f"agent name {name!r} must match {NAME.pattern}")
        return self.root / "agents" / f"{name}.pem"

    def add_agent(self, name: str, host: str, port: int, token: str, tls_ca: str | None = None) -> AgentInfo:
        """Register (or re-register) a device agent; ``tls_ca`` is the PEM text of the certificate
        (or CA) of an agent that serves TLS, kept beside the database with the same privacy."""
        pem = self._agent_pem(name)
        with self._lock, Session(self.engine) as s:
            if tls_ca is None:
                pem.unlink(missing_ok=True)
            else:
                atomic_write_text(pem, tls_ca)
                os.chmod(pem, 0o600)
            row = s.get(_AgentRow, name) or _AgentRow(name=name)
            row.host, row.port, row.token, row.created = host, port, token, time.time()
            s.add(row)
            s.commit()
            return self._info(row)

    def agents(self) -> list[AgentInfo]:
        """Registered device agents, by name."""
        with Session(self.engine) as s:
            return [self._info(r) for r in s.scalars(select(_AgentRow).order_by(_AgentRow.name))]

    def agent(self, name: str) -> AgentInfo | None:
        """One device agent, or None."""
        with Session(self.engine) as s:
            row = s.get(_AgentRow, name)
            return self._info(row) if row is not None else None

    def remove_agent(self, name: str) -> bool:
        """Forget a device agent; False if there was none."""
        with self._lock, Session(self.engine) as s:
            row = s.get(_AgentRow, name)
            if row is None:
                return False
            s.delete(row)
            s.commit()
            self._agent_pem(name).unlink(missing_ok=True)
            return True

    def _info(self, row: _AgentRow) -> AgentInfo:
        """An agent's row with its certificate, when one is kept."""
        pem = self._agent_pem(row.name)
        return AgentInfo(row.name, row.host, row.port, row.token, row.created, str(pem) if pem.is_file() else None)

    def close(self) -> None:
        """Release the database's connections."""
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the workers read while the service writes."""
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _job(row: _JobRow) -> JobInfo:
    return JobInfo(
        row.id,
        row.kind,
        row.state,
        row.created,
        row.started,
        row.finished,
        row.attempts or 0,
        row.pid,
        row.message,
        bool(row.cancel_requested),
        row.total,
        row.kills or 0,
    )


__all__ = [
    "CANCELLED",
    "DONE_STATES",
    "FAILED",
    "FINISHED",
    "JOB_ID",
    "NAME",
    "QUEUED",
    "RUNNING",
    "STATES",
    "AgentInfo",
    "JobInfo",
    "Store",
]
