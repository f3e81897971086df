"""The worker pool: jobs run in their own processes (``python -m haq.service.worker``), never in a
request handler; at most ``max_jobs`` at once, the rest queue.

One supervisor thread owns the processes: it starts queued jobs (oldest first), reaps finished
workers and records the outcome. Every worker is started from that thread (a worker asks the
kernel to kill it when its parent thread dies, so it must be a thread that lives as long as
the service). A worker the service did not stop that dies of a signal is restarted, resuming
from its checkpoint, up to ``max_attempts`` times.

After a crash of the service (SIGKILL), :meth:`WorkerPool.recover` kills any worker of it that
is still alive and queues every unfinished job again; the proposers' resume continues each one
from its checkpoint, so no finished episode is lost or repeated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from haq.core.types import Log
from haq.service.peek import read_message
from haq.service.store import CANCELLED, DONE_STATES, FAILED, FINISHED, QUEUED, RUNNING, JobInfo, Store

WORKER_MODULE = "haq.service.worker"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
PROGRESS_FILE = "progress.json"
LOG_FILE = "worker.log"
EXIT_USER_ERROR = 2
"""A worker's exit code for a job that cannot run (its message is in error.json)."""
TERM_GRACE_S = 10.0
POLL_S = 0.25


class WorkerPool:
    """Starts, watches, cancels and stops the workers of one store (see the module docstring)."""

    def __init__(self, store: Store, max_jobs: int, max_attempts: int, log: Log) -> None:
        self.store = store
        self.max_jobs = max_jobs
        self.max_attempts = max_attempts
        self.log = log
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._term_sent: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Recover after a crash, then start the supervisor thread."""
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="haq-workers", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Schedule now (a job was submitted or cancelled)."""
        self._wake.set()

    def recover(self) -> None:
        """Queue again every job a previous service left running, killing its worker if it lives on."""
        for job in self.store.jobs([RUNNING]):
            if job.pid is not None and _is_worker_of(job.pid, job.id):
                _kill_and_wait(job.pid)
            if job.cancel_requested:
                self.store.update(job.id, state=CANCELLED, pid=None, finished=time.time(), message="cancelled")
            else:
                self.store.update(job.id, state=QUEUED, pid=None, message="service restarted; resuming from the last checkpoint")

    def cancel(self, job: JobInfo) -> JobInfo:
        """Cancel a queued job at once; ask a running one's worker to stop (the supervisor records it)."""
        with self._lock:
            current = self.store.job(job.id) or job
            if current.state == QUEUED:
                return self.store.update(job.id, state=CANCELLED, finished=time.time(), message="cancelled before it started")
            if current.state != RUNNING:
                return current
            updated = self.store.update(job.id, cancel_requested=True)
            proc = self._procs.get(job.id)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                self._term_sent[job.id] = time.monotonic()
        self.wake()
        return updated

    def stop(self) -> None:
        """Stop the supervisor and the workers; their jobs are queued again for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for proc in self._procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + TERM_GRACE_S
            for job_id, proc in self._procs.items():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                job = self.store.job(job_id)
                if job is not None and job.state == RUNNING:
                    state = CANCELLED if job.cancel_requested else QUEUED
                    self.store.update(job_id, state=state, pid=None, message="service stopped; resumes when it starts again")
            self._procs.clear()

    def running(self) -> int:
        """Workers alive now."""
        with self._lock:
            return sum(1 for p in self._procs.values() if p.poll() is None)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self._reap()
                    self._escalate()
                    if not self._stop.is_set():
                        self._schedule()
            except Exception as exc:  # noqa: BLE001 - the supervisor must outlive one bad job
                self.log(f"haq serve: worker supervisor: {type(exc).__name__}: {exc}")
            self._wake.wait(POLL_S)
            self._wake.clear()

    def _reap(self) -> None:
        for job_id, proc in list(self._procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self._procs[job_id]
            self._term_sent.pop(job_id, None)
            self._record_exit(job_id, code)

    def _record_exit(self, job_id: str, code: int) -> None:
        job = self.store.job(job_id)
        if job is None:
            return
        job_dir = self.store.job_dir(job_id)
        now = time.time()
        if job.cancel_requested:
            self.store.update(job_id, state=CANCELLED, pid=None, finished=now, message="cancelled")
        elif code == 0:
            self.store.update(
                job_id, state=FINISHED, pid=None, finished=now, message=read_message(job_dir / RESULT_FILE) or "finished"
            )
        elif code < 0 and job.kills + 1 < self.max_attempts:
            self.store.update(
                job_id,
                state=QUEUED,
                pid=None,
                kills=job.kills + 1,
                message=f"worker killed by signal {-code}; restarting it to resume from the last checkpoint",
            )
        elif code < 0:
            self.store.update(
                job_id,
                state=FAILED,
                pid=None,
                finished=now,
                kills=job.kills + 1,
                message=f"worker killed by signal {-code} {job.kills + 1} times; giving up",
            )
        else:
            message = read_message(job_dir / ERROR_FILE) or _last_line(job_dir / LOG_FILE) or f"worker exited with code {code}"
            self.store.update(job_id, state=FAILED, pid=None, finished=now, message=message)

    def _escalate(self) -> None:
        """A worker that ignores SIGTERM after a cancel is killed."""
        for job_id, sent in list(self._term_sent.items()):
            proc = self._procs.get(job_id)
            if proc is not None and proc.poll() is None and time.monotonic() - sent > TERM_GRACE_S:
                proc.kill()

    def _schedule(self) -> None:
        free = self.max_jobs - len(self._procs)
        if free <= 0:
            return
        for job in self.store.jobs([QUEUED])[:free]:
            self._launch(job)

    def _launch(self, job: JobInfo) -> None:
        job_dir = self.store.job_dir(job.id)
        for name in (RESULT_FILE, ERROR_FILE):
            (job_dir / name).unlink(missing_ok=True)
        cmd = [sys.executable, "-m", WORKER_MODULE, "--store", str(self.store.root), "--parent", str(os.getpid()), job.id]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(job_dir / LOG_FILE, "ab") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._procs[job.id] = proc
        started = job.started if job.started is not None else time.time()
        self.store.update(job.id, state=RUNNING, pid=proc.pid, started=started, attempts=job.attempts + 1)


def _last_line(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:500] if lines else None


def _is_worker_of(pid: int, job_id: str) -> bool:
    """Whether ``pid`` is alive and is a worker of ``job_id`` (checked on /proc where there is one)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return WORKER_MODULE.encode() in cmdline and job_id.encode() in cmdline


def _kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


__all__ = ["DONE_STATES", "ERROR_FILE", "LOG_FILE", "PROGRESS_FILE", "RESULT_FILE", "WorkerPool"]
