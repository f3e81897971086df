"""What a job submitted to the service may name, and how the service resolves those names.

A job document is validated by the config classes (:func:`haq.jobs.parse_job`); the service
adds what only it knows, at submission, so a job that cannot run is refused at once with the
field named:

* models are zoo names (a ``package.module:callable`` would run code of the caller's choosing);
* tables are names of tables the service knows: shipped ones and those uploaded to, or built
  by, the service (no file paths);
* a transfer's ``source`` is the id of one of the service's search or transfer jobs;
* a table build's ``device`` is an analytical device, ``cpu`` (the service's machine) or
  ``agent:NAME``, a registered device agent whose token stays in the service; its ``out`` is
  the file name (``NAME.json``) the table gets among the service's tables;
* a table check writes its report into the job (no ``save`` or ``rescore`` paths).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import latency_tables
from haq.core.errors import ConfigError
from haq.hardware.build_analytical import ANALYTICAL_DEVICES
from haq.hardware.device.runner import RemoteAccess
from haq.jobs.document import Job
from haq.jobs.execute import Resolver
from haq.models import model_names
from haq.service.store import JOB_ID, NAME, Store
from haq.tables.protocols import DeviceTable
from haq.tables.table import load_table

AGENT_PREFIX = "agent:"
SOURCE_KINDS = ("search", "transfer")


def known_tables(store: Store) -> dict[str, Path]:
    """Every table the service knows by name: shipped, then uploaded / built."""
    tables = {name: latency_tables.TABLE_DIR / f"{name}.json" for name in latency_tables.available()}
    for path in sorted(store.tables_dir.glob("*.json")):
        if NAME.fullmatch(path.stem) and path.stem not in tables:
            tables[path.stem] = path
    return tables


def load_known_table(store: Store, name: str, field: str) -> DeviceTable:
    """A table by name; an unknown one is a :class:`ConfigError` naming ``field``."""
    tables = known_tables(store)
    if name not in tables:
        raise ConfigError(
            f"{field}: unknown table {name!r}; the service knows {', '.join(tables) or 'none'} "
            "(upload one with POST /tables/NAME)"
        )
    return load_table(tables[name], name)


def resolver(store: Store) -> Resolver:
    """How a worker resolves a job's names in this store."""

    def table(name: str) -> DeviceTable:
        return load_known_table(store, name, "table")

    def source(job_id: str) -> str:
        return str(store.run_dir(job_id))

    def device(spec: str) -> tuple[str, RemoteAccess]:
        if not spec.startswith(AGENT_PREFIX):
            raise ConfigError(f"build.device: {spec!r} is not a device the service builds on")
        agent = store.agent(spec[len(AGENT_PREFIX) :])
        if agent is None:
            raise ConfigError(f"build.device: no registered device agent {spec[len(AGENT_PREFIX) :]!r}")
        return agent.spec, RemoteAccess(agent.token, agent.tls_ca)

    return Resolver(table=table, source=source, device=device)


def check_submission(job: Job, store: Store) -> None:
    """Refuse what the service cannot run (see the module docstring); the message names the field."""
    if job.kind == "search":
        _check_env(job.section("search").env, "search.env", store)
    elif job.kind == "baseline":
        _check_env(job.section("env"), "env", store)
    elif job.kind == "transfer":
        cfg = job.section("transfer")
        _check_source(cfg.source, store)
        _check_table(cfg.table, "transfer.table", store)
        if cfg.model is not None:
            _check_model(cfg.model, "transfer.model")
    elif job.kind == "table_build":
        cfg = job.section("build")
        for i, model in enumerate(cfg.models):
            _check_model(model, f"build.models[{i}]")
        _check_device(cfg.device, store)
        table_file_name(cfg.out)
    elif job.kind == "table_check":
        cfg = job.section("check")
        _check_model(cfg.model, "check.model")
        _check_table(cfg.table, "check.table", store)
        if cfg.save is not None or cfg.rescore is not None:
            raise ConfigError("check.save / check.rescore: the service keeps the report with the job; leave both out")


def table_file_name(out: Path) -> str:
    """The table name a build's ``out`` gives (``NAME.json``, not a shipped name)."""
    text = str(out)
    if out.name != text or out.suffix != ".json" or not NAME.fullmatch(out.stem):
        raise ConfigError(
            f"build.out: the service stores built tables by name; give a file name NAME.json "
            f"(letters, digits, _ . -), got {text!r}"
        )
    if out.stem in latency_tables.available():
        raise ConfigError(f"build.out: {out.stem!r} is a shipped table's name; choose another")
    return out.stem


def planned_total(job: Job) -> int | None:
    """Episodes (evaluations) a job plans, for progress and ETA."""
    if job.kind == "search":
        return int(job.section("search").episodes)
    if job.kind == "baseline":
        return int(job.section("baseline").evaluations)
    if job.kind == "transfer":
        return int(job.section("transfer").episodes) + 1
    return None


def _check_env(env: Any, where: str, store: Store) -> None:
    _check_model(env.workload.model, f"{where}.workload.model")
    _check_table(env.table, f"{where}.table", store)


def _check_model(model: str, field: str) -> None:
    names = model_names()
    if model not in names:
        raise ConfigError(f"{field}: the service runs zoo models ({', '.join(names)}); got {model!r}")


def _check_table(name: str, field: str, store: Store) -> None:
    if name not in known_tables(store):
        raise ConfigError(f"{field}: unknown table {name!r}; the service knows {', '.join(known_tables(store))}")


def _check_source(source: str, store: Store) -> None:
    info = store.job(source) if JOB_ID.fullmatch(source) else None
    if info is None or info.kind not in SOURCE_KINDS:
        raise ConfigError(
            f"transfer.source: give the id of one of this service's {' or '.join(SOURCE_KINDS)} jobs, got {source!r}"
        )


def _check_device(device: str, store: Store) -> None:
    if device in ANALYTICAL_DEVICES or device == "cpu":
        return
    if device.startswith(AGENT_PREFIX) and store.agent(device[len(AGENT_PREFIX) :]) is not None:
        return
    agents = ", ".join(AGENT_PREFIX + a.name for a in store.agents()) or "none registered"
    raise ConfigError(
        f"build.device: choose {', '.join(ANALYTICAL_DEVICES)}, cpu or a registered agent ({agents}); got {device!r}"
    )


__all__ = ["AGENT_PREFIX", "check_submission", "known_tables", "load_known_table", "planned_total", "resolver", "table_file_name"]
