"""What the API reports about a job and a table, assembled from the store and the files its
workers write: a job's progress (episodes, best reward, pace, ETA), the details the page draws,
the baselines to overlay, and table summaries, each re-read only when its file changes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from haq.core.errors import HaqError
from haq.jobs.document import RUN_KINDS
from haq.runs.rundir import EpisodeRecord, RunDir, best_of
from haq.service.peek import file_stamp, read_object
from haq.service.store import RUNNING, JobInfo, Store
from haq.service.worker import JOB_FILE
from haq.service.workers import PROGRESS_FILE
from haq.tables.table import load_table

T = TypeVar("T")


class RunCache:
    """Episode logs and table summaries, re-read only when their file changes."""

    def __init__(self) -> None:
        self._records: dict[Path, tuple[tuple[int, int], list[EpisodeRecord]]] = {}
        self._tables: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def records(self, run_dir: Path) -> list[EpisodeRecord]:
        """The complete episodes of a run directory (none if it holds no log yet)."""
        return self._fresh(self._records, RunDir(run_dir).episodes_path, lambda: _episodes(run_dir))

    def table_summary(self, name: str, path: Path, source: str) -> dict[str, Any]:
        """Name, device, metrics and size of a table."""
        return self._fresh(self._tables, path, lambda: _table_summary(name, path, source))

    def _fresh(self, cache: dict[Path, tuple[tuple[int, int], T]], path: Path, read: Callable[[], T]) -> T:
        """The cached value for ``path`` while the file is unchanged, else ``read()`` (outside the lock)."""
        stamp = file_stamp(path)
        with self._lock:
            cached = cache.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        value = read()
        with self._lock:
            cache[path] = (stamp, value)
        return value


def _episodes(run_dir: Path) -> list[EpisodeRecord]:
    try:
        return RunDir(run_dir).read_episodes()
    except HaqError:
        return []


def _table_summary(name: str, path: Path, source: str) -> dict[str, Any]:
    try:
        t = load_table(path, name)
    except HaqError as exc:
        return {"name": name, "source": source, "error": str(exc)}
    return {
        "name": name,
        "source": source,
        "device": t.device,
        "metrics": list(t.metrics),
        "signatures": len(t.signatures),
        "models": list(t.meta.get("models", [])),
    }


def job_view(store: Store, runs: RunCache, info: JobInfo) -> dict[str, Any]:
    """A job's row and its progress: episodes done, best reward so far, evaluations per minute, ETA."""
    return {**info.to_dict(), "progress": progress_of(store, runs, info)}


def progress_of(store: Store, runs: RunCache, info: JobInfo) -> dict[str, Any]:
    """Progress from the run directory (what is logged) and the worker's progress file (its pace)."""
    if info.kind not in RUN_KINDS:
        return {
            "episodes_done": None,
            "episodes_total": None,
            "best_reward": None,
            "evaluations_per_minute": None,
            "eta_seconds": None,
        }
    records = runs.records(store.run_dir(info.id))
    best = best_of(records)
    pf = read_object(store.job_dir(info.id) / PROGRESS_FILE)
    total = pf.get("episodes") if isinstance(pf.get("episodes"), int) else info.total
    rate = None
    done_now, done_then = pf.get("done"), pf.get("done_at_start")
    start, last = pf.get("session_start"), pf.get("time")
    if all(isinstance(x, (int, float)) for x in (done_now, done_then, start, last)):
        elapsed = (time.time() if info.state == RUNNING else last) - start
        if done_now > done_then and elapsed > 0:
            rate = (done_now - done_then) / elapsed * 60.0
    eta = None
    if rate and total is not None and info.state == RUNNING:
        eta = max(0.0, (total - len(records)) / rate * 60.0)
    return {
        "episodes_done": len(records),
        "episodes_total": total,
        "best_reward": best.reward if best else None,
        "best_episode": best.episode if best else None,
        "evaluations_per_minute": rate,
        "eta_seconds": eta,
    }


def job_details(store: Store, info: JobInfo) -> dict[str, Any]:
    """What the page draws besides the episodes: the budget, the float reference, the layers and related baselines."""
    details: dict[str, Any] = {"baselines": related_baselines(store, info)}
    config = read_object(RunDir(store.run_dir(info.id)).config_path)
    for key in ("budget", "reference", "layers"):
        details[key] = config.get(key)
    return details


def related_baselines(store: Store, info: JobInfo) -> list[str]:
    """Baseline jobs on the same model, table and budget as a search or baseline job (to overlay)."""
    env = _job_env(store, info.id)
    if env is None:
        return []
    key = _env_key(env)
    return [j.id for j in store.jobs() if j.kind == "baseline" and j.id != info.id and _env_key(_job_env(store, j.id)) == key]


def _job_env(store: Store, job_id: str) -> dict[str, Any] | None:
    doc = read_object(store.job_dir(job_id) / JOB_FILE)
    kind = doc.get("kind")
    env = doc.get("search", {}).get("env") if kind == "search" else doc.get("env") if kind == "baseline" else None
    return env if isinstance(env, dict) else None


def _env_key(env: dict[str, Any] | None) -> Any:
    if env is None:
        return None
    workload = env.get("workload", {})
    return (workload.get("model"), workload.get("dataset"), env.get("table"), json.dumps(env.get("budget"), sort_keys=True))


def table_source(store: Store, path: Path) -> str:
    """``shipped`` with haq, or ``store``: uploaded to, or built by, this service."""
    return "store" if path.parent == store.tables_dir else "shipped"
