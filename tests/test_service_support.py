"""Shared by the service tests (no tests here): run ``haq serve`` as a real process on loopback and
talk to it over HTTP with the standard library only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

TOKEN = "service-test-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def tiny_search(episodes: int) -> dict[str, Any]:
    """A search on the embedded default with the cheap evaluator (about a quarter second an episode).

    SAC over uniform bins, not the cheap evaluator's default (DDPG from the sensitivity prior):
    that agent repeats its policies, cached repeats take no time, and the search could end
    before a watcher sees it running."""
    return {
        "version": 1,
        "kind": "search",
        "search": {
            "episodes": episodes,
            "agent": {"algo": "sac", "warmup_episodes": 2},
            "env": {"evaluation": {"kind": "cheap"}, "action_prior": "uniform"},
        },
    }


class ServiceProcess:
    """``python -m haq.cli serve --port 0`` on a store; the address is read from ``service.json``."""

    def __init__(self, store: Path, max_jobs: int = 2) -> None:
        self.store = store
        self.max_jobs = max_jobs
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> "ServiceProcess":
        (self.store / "service.json").unlink(missing_ok=True)
        env = {**os.environ, "HAQ_SERVICE_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
        cmd = [
            sys.executable,
            "-m",
            "haq.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--store",
            str(self.store),
            "--max-jobs",
            str(self.max_jobs),
        ]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                pytest.fail(f"haq serve exited with {self.proc.returncode}: {err}")
            path = self.store / "service.json"
            if path.is_file():
                self.url = json.loads(path.read_text())["url"].rstrip("/")
                if self.health():
                    return self
            time.sleep(0.1)
        pytest.fail("haq serve did not answer /health in time")

    def health(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
        """(status, parsed JSON body) of one request."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw[:1] in (b"{", b"[") else raw
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw[:1] in (b"{", b"[") else raw

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120.0, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]
