"""A service worker: runs one job of the store in its own process, or exports a job's best policy.

``python -m haq.service.worker --store DIR --parent PID JOB_ID`` runs the job through
:func:`haq.jobs.execute.run_job` (the CLI's code path), always with resume, so a worker started
again after a kill continues from the last checkpoint. It writes ``progress.json`` after every
episode, then ``result.json`` (exit 0) or ``error.json`` (exit 2 for a job that cannot run,
1 for a bug). It dies with the service: it asks the kernel for SIGKILL when its parent dies
(Linux) and a watchdog thread exits when the parent process is gone. An exclusive lock on
``worker.lock`` guarantees one writer per run directory.

``python -m haq.service.worker --store DIR --export JOB_ID`` writes the best policy as QDQ ONNX
(``best.onnx``) for ``GET /jobs/{id}/onnx``.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import torch

from haq.core import config as serial
from haq.core.errors import HaqError, RunDirError
from haq.core.fileio import atomic_write_bytes, atomic_write_text
from haq.export import export_policy
from haq.hardware.measured import container_options
from haq.jobs.document import RUN_KINDS, Job, parse_job
from haq.jobs.execute import run_job
from haq.problem.config import EnvConfig
from haq.quant import QuantPolicy
from haq.runs.progress import Progress
from haq.runs.rundir import RunDir
from haq.service.names import resolver, table_file_name
from haq.service.store import Store
from haq.service.workers import ERROR_FILE, EXIT_USER_ERROR, PROGRESS_FILE, RESULT_FILE
from haq.tables.schema import UNSIGNED_WEIGHTS
from haq.training import parse_torch_device
from haq.workload import load_workload

JOB_FILE = "job.json"
LOCK_FILE = "worker.lock"
ONNX_FILE = "best.onnx"
ONNX_STAMP = "best.onnx.json"
EXPORT_ERROR_FILE = "export.error.json"
_PR_SET_PDEATHSIG = 1
EXPORT_CALIBRATION = 64


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m haq.service.worker", description="run one job of a haq service store")
    p.add_argument("--store", required=True, help="the service's store directory")
    p.add_argument("--parent", type=int, default=None, help="pid of the service; the worker exits when it is gone")
    p.add_argument("--export", action="store_true", help="export the job's best policy as ONNX instead of running it")
    p.add_argument("job_id")
    ns = p.parse_args(argv)
    if ns.parent is not None:
        die_with_parent(ns.parent)
    torch.set_num_threads(1)
    store = Store(Path(ns.store))
    job_dir = store.job_dir(ns.job_id)
    if ns.export:
        return _guarded(job_dir, EXPORT_ERROR_FILE, lambda: export_best(store, ns.job_id))
    with open(job_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        return _guarded(job_dir, ERROR_FILE, lambda: run(store, ns.job_id))


def _guarded(job_dir: Path, error_file: str, work: Any) -> int:
    """Run ``work``; a user error is written to ``error_file`` (exit 2), a bug too, with its traceback printed (exit 1)."""
    try:
        work()
        return 0
    except HaqError as exc:
        print(f"haq worker: error: {exc}", flush=True)
        atomic_write_text(job_dir / error_file, json.dumps({"message": str(exc)}) + "\n")
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 - recorded for the service, then the worker fails
        traceback.print_exc()
        atomic_write_text(job_dir / error_file, json.dumps({"message": f"internal error: {type(exc).__name__}: {exc}"}) + "\n")
        return 1


def run(store: Store, job_id: str) -> None:
    """Run (or resume) the job; write result.json when it is done."""
    job_dir = store.job_dir(job_id)
    job = parse_job(json.loads((job_dir / JOB_FILE).read_text()), "job")
    out = output_of(store, job_id, job)
    progress = ProgressFile(job_dir / PROGRESS_FILE, _episodes_logged(out) if job.kind in RUN_KINDS else 0)
    print(f"haq worker {os.getpid()}: {job.kind} job {job_id} -> {out}", flush=True)
    outcome = run_job(job, out, resume=True, log=_log, progress=progress, resolver=resolver(store))
    result: dict[str, Any] = {"kind": job.kind, "summary": dict(outcome.summary)}
    if outcome.result is not None:
        best = outcome.result.best
        result["episodes"] = outcome.result.episodes_done
        result["best"] = {"episode": best.episode, "reward": best.reward}
        result["message"] = f"{outcome.result.episodes_done} episodes; best reward {best.reward:+.4f} (episode {best.episode})"
    else:
        result["message"] = ", ".join(f"{k}: {v}" for k, v in outcome.summary.items())
    atomic_write_text(job_dir / RESULT_FILE, json.dumps(result, indent=1) + "\n")


def output_of(store: Store, job_id: str, job: Job) -> Path:
    """Where a job writes: its run directory, or for a table build the store's table file."""
    if job.kind == "table_build":
        return store.tables_dir / f"{table_file_name(job.section('build').out)}.json"
    return store.run_dir(job_id)


class ProgressFile:
    """The worker's progress for the service: episodes done, best reward, and this worker's pace."""

    def __init__(self, path: Path, done_at_start: int) -> None:
        self.path = path
        self.state: dict[str, Any] = {
            "session_start": time.time(),
            "done_at_start": done_at_start,
            "done": done_at_start,
            "time": time.time(),
        }
        self._write()

    def __call__(self, p: Progress) -> None:
        self.state.update(done=p.episode + 1, episodes=p.episodes, best_reward=p.best_reward, reward=p.reward, time=time.time())
        self._write()

    def _write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.state) + "\n")


def export_best(store: Store, job_id: str) -> None:
    """Export the job's best policy (QDQ ONNX, emulated where the CPU lacks a kernel) to ``best.onnx``,
    its 8-bit weights stored in the container the run's costs were timed with (uint8 when none)."""
    job_dir = store.job_dir(job_id)
    run = RunDir(store.run_dir(job_id))
    best = run.read_best()
    if best is None:
        raise RunDirError(f"job {job_id} has no finished episode yet; nothing to export")
    env = serial.from_dict(EnvConfig, run.read_config()["config"]["env"], "env", stored=True)
    wl = load_workload(env.workload, parse_torch_device(env.torch_device), log=_log)
    x, _ = wl.data.subset("train", EXPORT_CALIBRATION)
    policy: QuantPolicy = best.quant_policy()
    options = container_options(run.export_weights() or UNSIGNED_WEIGHTS, emulated=True)
    exported = export_policy(wl.model, wl.layers, policy, wl.data.input_shape, x, options)
    atomic_write_bytes(job_dir / ONNX_FILE, exported.onnx_bytes)
    atomic_write_text(job_dir / ONNX_STAMP, json.dumps({"episode": best.episode}) + "\n")


def die_with_parent(parent: int) -> None:
    """Exit when the service is gone: the kernel's parent-death signal where there is one, and a watchdog."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(3)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="haq-parent-watchdog", daemon=True).start()


def _episodes_logged(run_dir: Path) -> int:
    try:
        return len(RunDir(run_dir).read_episodes())
    except HaqError:
        return 0


def _log(msg: str) -> None:
    print(msg, flush=True)


if __name__ == "__main__":
    sys.exit(main())
