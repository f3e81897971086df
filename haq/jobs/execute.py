"""Running a job: what ``haq search / baseline / transfer / tables build`` and the service's workers share.

:func:`run_tracked` is the one tail of every run, from the CLI and from a worker: it stores the
resolved document beside the run (``job.toml``) and tracks it in MLflow when the job asks
(TensorBoard is the proposers' own). :func:`run_job` is the whole of a worker's job: it resolves
the job's names through a :class:`Resolver` (the service's also knows its uploaded tables, its
jobs as transfer sources and its registered device agents), builds the problem with
:func:`haq.jobs.problems.make_problem` as the commands do, and runs the proposer (or the
table build / check) through the same functions the commands call.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from haq.baselines import BaselineConfig, baseline_env, run_baseline
from haq.core import config as serial
from haq.core.errors import HaqError, InternalError
from haq.core.fileio import atomic_write_text
from haq.core.types import Log, quiet
from haq.hardware.backends import device_backend
from haq.hardware.build import LOCAL_DEVICES, DeviceBackend, build_table
from haq.hardware.check import check_table
from haq.hardware.device.runner import TLS_CA_ENV, TOKEN_ENV, LocalRunner, RemoteAccess
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.feedback import FEEDBACK_CACHE
from haq.hardware.networks import load_network
from haq.jobs.document import RUN_KINDS, Job
from haq.jobs.files import write_job
from haq.jobs.problems import load_device_table, make_problem
from haq.plots import plot_run
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.problem.select import pick_images
from haq.runs.final_pick import PICK_FILE, POLICY_FILE, PickConfig, pick_run, write_pick
from haq.runs.finetune_lr_file import recorded_finetune_lr
from haq.runs.progress import OnProgress, Progress
from haq.runs.proposer import RunResult
from haq.runs.rundir import BEST_FILE, CONFIG_FILE
from haq.runs.tracking import MlflowRun
from haq.search.config import SearchConfig
from haq.search.run import run_search
from haq.tables.protocols import DeviceTable
from haq.tables.schema import UNSIGNED_WEIGHTS
from haq.transfer.config import TransferConfig
from haq.transfer.run import run_transfer, transfer_env

CHECK_REPORT = "check.json"


def _env_access(spec: str) -> tuple[str, RemoteAccess]:
    """The CLI's remote device: the spec as given, the token from ``$HAQ_DEVICE_TOKEN`` and the
    certificate of an agent serving TLS from ``$HAQ_DEVICE_TLS_CA``."""
    return spec, RemoteAccess(os.environ.get(TOKEN_ENV) or None, os.environ.get(TLS_CA_ENV) or None)


@dataclass(frozen=True)
class Resolver:
    """How a job's names become things. The defaults are the CLI's.

    table: a table name -> the table (default: shipped name or table file).
    source: a transfer's ``source`` -> its run directory (default: the path itself).
    device: a table build's ``device`` -> (device spec, how to reach it) for a remote agent
        (default: the spec itself, ``$HAQ_DEVICE_TOKEN`` and ``$HAQ_DEVICE_TLS_CA``).
    """

    table: Callable[[str], DeviceTable] = load_device_table
    source: Callable[[str], str] = str
    device: Callable[[str], tuple[str, RemoteAccess]] = _env_access


@dataclass(frozen=True)
class JobOutcome:
    """What a job produced: a run's result and problem, or a table job's summary."""

    kind: str
    result: RunResult | None = None
    problem: SearchProblem | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)


def run_job(
    job: Job,
    out: Path,
    *,
    resume: bool,
    log: Log | None = None,
    progress: OnProgress | None = None,
    resolver: Resolver | None = None,
) -> JobOutcome:
    """Run ``job`` into ``out`` (a run directory; a table check's report directory; a table build's
    table file)."""
    res = resolver or Resolver()
    if job.kind in RUN_KINDS:
        return _run_proposer(job, out, resume, log, progress, res)
    if job.kind == "table_build":
        return _build_table(job, out, log, res)
    if job.kind == "table_check":
        return _check_table(job, out, log, res)
    raise InternalError(f"job kind {job.kind!r} has no runner")


def _run_proposer(
    job: Job,
    out: Path,
    resume: bool,
    log: Log | None,
    progress: OnProgress | None,
    res: Resolver,
) -> JobOutcome:
    env, start = _proposer(job, res)
    recorded = recorded_finetune_lr(out) if resume else None
    problem = make_problem(env, log=log, feedback_cache=out / FEEDBACK_CACHE, table=res.table(env.table), finetune_lr=recorded)
    result = run_tracked(
        job, out, problem, lambda p: start(problem, out, resume, p, log), resume=resume, progress=progress, log=log
    )
    return JobOutcome(job.kind, result, problem)


def run_tracked(
    job: Job,
    out: Path,
    problem: SearchProblem,
    start: Callable[[OnProgress | None], RunResult],
    *,
    resume: bool,
    progress: OnProgress | None,
    log: Log | None = None,
) -> RunResult:
    """Run a proposer (``start(progress)``) into ``out`` as ``job``: the resolved document is stored
    beside the run (``job.toml``), the run's final pick is made when its episodes are done
    (:mod:`haq.runs.final_pick`, the job's ``pick`` section) and, when the job asks, the run is
    tracked in MLflow (params, metrics per episode, then the best and final policies, config and
    plots as artifacts)."""
    if resume or not (out / CONFIG_FILE).exists():
        out.mkdir(parents=True, exist_ok=True)
        write_job(out, job)
    tracker = _mlflow(job, out, problem)
    pick: PickConfig = job.section("pick")
    if tracker is None:
        return with_pick(pick, out, problem, start(progress), log)
    try:
        result = with_pick(pick, out, problem, start(_chain(tracker.progress, progress)), log)
    except BaseException:
        tracker.finish([], status="FAILED")
        raise
    picked = [out / PICK_FILE, out / POLICY_FILE] if result.final is not None else []
    tracker.finish([out / BEST_FILE, *picked, out / CONFIG_FILE, *plot_files(out)])
    return result


def with_pick(cfg: PickConfig, out: Path, problem: SearchProblem, result: RunResult, log: Log | None) -> RunResult:
    """``result`` with the run's final pick made and written into ``out`` (none with ``cfg.k`` 0)."""
    if cfg.k == 0:
        return result
    if log:
        select, _ = pick_images(problem, cfg.select_samples)
        also = f", and the {cfg.repeats} most repeated not among them," if cfg.repeats else ""
        under = f" under {cfg.select_seeds} evaluator seeds the search did not use" if cfg.select_seeds else ""
        log(f"final pick: re-scoring the top {cfg.k} policies{also} on {select.count} held-out images ({select}){under}")
        if cfg.defer:
            margin = f"more than {cfg.defer:g} images' worth"
            log(f"final pick: the most proposed policy is re-scored too, and kept unless beaten there by {margin}")
    final = pick_run(problem, result.records, cfg)
    write_pick(out, final)
    return dataclasses.replace(result, final=final)


def plot_files(run_dir: Path) -> list[Path]:
    """The run's PNGs (``haq plot``), or none without matplotlib."""
    try:
        return plot_run(run_dir)
    except HaqError:
        return []


Start = Callable[[SearchProblem, Path, bool, OnProgress | None, Log | None], RunResult]
"""Runs a proposer: (problem, run directory, resume, progress, log) -> result."""


def _proposer(job: Job, res: Resolver) -> tuple[EnvConfig, Start]:
    """The environment a run job's problem is built from, and the call that runs its proposer."""
    if job.kind == "search":
        cfg: SearchConfig = job.section("search")
        return cfg.env, lambda problem, out, resume, progress, log: run_search(
            cfg, problem, out, resume=resume, progress=progress, log=log
        )
    if job.kind == "baseline":
        base: BaselineConfig = job.section("baseline")
        return baseline_env(job.section("env")), lambda problem, out, resume, progress, log: run_baseline(
            base, problem, out, resume=resume, progress=progress, log=log
        )
    tcfg: TransferConfig = job.section("transfer")
    tcfg = dataclasses.replace(tcfg, source=res.source(tcfg.source))
    return transfer_env(tcfg), lambda problem, out, resume, progress, log: run_transfer(
        tcfg, problem, out, resume=resume, progress=progress, log=log
    )


def _mlflow(job: Job, out: Path, problem: SearchProblem) -> MlflowRun | None:
    uri = job.tracking.mlflow
    if uri is None:
        return None
    params = {name: serial.to_dict(cfg) for name, cfg in job.configs.items()}
    return MlflowRun(uri, out, f"{job.kind}-{out.name}", {"kind": job.kind, **params}, problem.budget)


def _chain(first: OnProgress, second: OnProgress | None) -> OnProgress:
    def both(p: Progress) -> None:
        first(p)
        if second is not None:
            second(p)

    return both


def _build_table(job: Job, out: Path, log: Log | None, res: Resolver) -> JobOutcome:
    cfg = dataclasses.replace(job.section("build"), out=out)
    protocol: ProtocolConfig = job.section("protocol")
    report = build_table(cfg, lambda: table_backend(cfg.device, protocol, res, log, weights=cfg.weights), log or quiet)
    summary = {"table": str(report.path), "added": report.added, "kept": report.kept, "entries": report.entries}
    return JobOutcome(job.kind, summary=summary)


def table_backend(
    device: str,
    protocol: ProtocolConfig,
    res: Resolver,
    log: Log | None,
    field: str = "build.device",
    weights: str = UNSIGNED_WEIGHTS,
) -> DeviceBackend:
    """The backend a table build's ``device`` names (timing 8-bit weights stored as ``weights``), a
    device agent's name resolved by ``res`` first (the service knows its agents; the command line
    takes the address as it is)."""
    spec, access = (device, RemoteAccess()) if device in LOCAL_DEVICES else res.device(device)
    return device_backend(spec, protocol, log, access, field, weights)


def _check_table(job: Job, out: Path, log: Log | None, res: Resolver) -> JobOutcome:
    cfg = job.section("check")
    table = res.table(cfg.table)
    net = load_network(cfg.model)
    report = check_table(table, net, LocalRunner(ProtocolConfig(sessions=cfg.sessions), log), cfg.n, cfg.seed, log)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CHECK_REPORT, json.dumps(report.to_dict(), indent=1) + "\n")
    atomic_write_text(out / "check.md", report.markdown() + "\n")
    return JobOutcome(job.kind, summary={"report": str(out / CHECK_REPORT)})


__all__ = ["CHECK_REPORT", "JobOutcome", "Resolver", "table_backend", "plot_files", "run_job", "run_tracked"]
