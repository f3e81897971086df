"""The device agent under slow, many or stopped parties: slowloris clients are cut off and
logged, one address cannot take every slot, the measuring child dies with the agent and at its
own deadline, and the client keeps to its --timeout. Bounds are generous timeouts, never
assertions on how long something took."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from haq.core.config import to_dict
from haq.core.errors import DeviceError
from haq.hardware.device.agent import AgentConfig, DeviceAgent
from haq.hardware.device.client import DeviceClient
from haq.hardware.device.sentinel import sentinel_model
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.wire import MAGIC, read_exact, read_frame, sign, write_frame
from haq.hardware.device.worker import ORPHAN_EXIT

TOKEN = "limits-secret-0123456"
SLOW = ProtocolConfig(sessions=1, warmup_runs=1, warmup_s=120.0, repeats=1)
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
LINUX = sys.platform.startswith("linux")


def trickle(address: tuple[str, int], admitted: threading.Semaphore | None = None, seconds: float = 12.0) -> str | None:
    """A slowloris client: after the greeting, one byte of a header every 0.3 s; the error
    code the agent finally answers (None if it never does within ``seconds``)."""
    with socket.create_connection(address, timeout=10) as sock:
        hello = read_frame(sock, time.monotonic() + 10)
        if not hello.get("ok"):
            return str(hello.get("error"))
        if admitted is not None:
            admitted.release()
        data = iter(MAGIC + b"\0\0\1\0" + b" " * 256)
        end = time.monotonic() + seconds
        sock.settimeout(0.3)
        while time.monotonic() < end:
            try:
                first = sock.recv(1)
            except socket.timeout:
                sock.sendall(bytes([next(data)]))
                continue
            if not first:
                return None
            head = first + read_exact(sock, 7, time.monotonic() + 10)
            body = read_exact(sock, struct.unpack(">I", head[4:])[0], time.monotonic() + 10)
            return str(json.loads(body)["error"])
    return None


def signed_ping(address: tuple[str, int], source: str | None = None) -> dict[str, Any]:
    """A ping answered to the challenge, optionally from another loopback address."""
    with socket.create_connection(address, timeout=10, source_address=(source, 0) if source else None) as sock:
        hello = read_frame(sock, time.monotonic() + 10)
        if not hello.get("ok"):
            return hello
        fields = {"op": "ping"}
        write_frame(sock, {**fields, "auth": sign(TOKEN, "request", hello["challenge"], fields)})
        return read_frame(sock, time.monotonic() + 10, 1 << 20)


@pytest.fixture
def logged_agent() -> Iterator[tuple[DeviceAgent, list[str]]]:
    """An agent with the default header limit (3 s) and per-address cap (4), logging to a list."""
    lines: list[str] = []
    with DeviceAgent(AgentConfig(port=0, token=TOKEN), log=lines.append).start() as agent:
        yield agent, lines


def test_slowloris_clients_are_cut_off_and_others_still_served(logged_agent: tuple[DeviceAgent, list[str]]) -> None:
    """Medium 4: eight clients trickling a byte at a time neither hold the agent for its 30 s
    upload allowance nor lock out clients from elsewhere; every refusal is logged."""
    agent, lines = logged_agent
    admitted = threading.Semaphore(0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        slow = [pool.submit(trickle, agent.address, admitted) for _ in range(4)]
        assert all(admitted.acquire(timeout=20) for _ in range(4))  # the four hold this address's slots
        extra = [pool.submit(trickle, agent.address) for _ in range(4)]
        assert [f.result(timeout=30) for f in extra] == ["busy"] * 4
        if LINUX:  # another loopback address is still served while 127.0.0.1 is at its cap
            assert signed_ping(agent.address, source="127.0.0.2")["ok"] is True
        assert [f.result(timeout=30) for f in slow] == ["timeout"] * 4
    assert signed_ping(agent.address)["ok"] is True
    assert any("refused busy: too many connections from 127.0.0.1" in line for line in lines)
    assert sum("refused timeout" in line for line in lines) == 4
    assert all(STAMP.match(line) for line in lines), lines


def test_rejections_are_rate_limited_in_the_log() -> None:
    lines: list[str] = []
    cfg = AgentConfig(port=0, token=TOKEN, max_connections=1, max_per_address=1, header_timeout_s=5.0)
    with DeviceAgent(cfg, log=lines.append).start() as agent:
        with socket.create_connection(agent.address, timeout=10) as held:
            assert read_frame(held, time.monotonic() + 10)["op"] == "hello"
            for _ in range(20):
                with socket.create_connection(agent.address, timeout=10) as sock:
                    assert read_frame(sock, time.monotonic() + 10)["error"] == "busy"
    refused = [line for line in lines if "refused busy" in line]
    assert 1 <= len(refused) < 20


def _worker_pids(agent_pid: int) -> list[int]:
    """Measuring children of a process (Linux /proc)."""
    pids = []
    for task in Path(f"/proc/{agent_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"worker_main" in cmdline:
                pids.append(int(child))
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_for(check: Any, seconds: float) -> Any:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    return check()


@pytest.mark.skipif(not LINUX, reason="finds the measuring process through /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_worker_dies_with_the_agent(sig: signal.Signals, tmp_path: Path) -> None:
    """Low 8: SIGTERM stops the agent and kills its measurement; SIGKILL (no handler runs)
    takes the measurement with it too (PR_SET_PDEATHSIG / parent watch)."""
    env = {**os.environ, "HAQ_DEVICE_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "haq.cli", "device", "serve", "--port", "0"]
    agent = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    workers: list[int] = []
    try:
        assert agent.stderr is not None
        line = agent.stderr.readline()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        client = DeviceClient("127.0.0.1", port, TOKEN, timeout=120)
        thread = threading.Thread(target=_swallow, args=(client,), daemon=True)
        thread.start()
        workers = _wait_for(lambda: _worker_pids(agent.pid), 30)
        assert workers, "no measuring process started"
        os.kill(agent.pid, sig)
        agent.wait(timeout=20)
        assert _wait_for(lambda: not any(_alive(p) for p in workers), 20), "the measuring process outlived the agent"
        thread.join(timeout=20)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _swallow(client: DeviceClient) -> None:
    try:
        client.measure([sentinel_model(16)], SLOW)
    except DeviceError:
        pass


def _run_worker_directly(limits: dict[str, Any], protocol: ProtocolConfig) -> subprocess.CompletedProcess[bytes]:
    model = sentinel_model(16)
    job = {"protocol": to_dict(protocol), "sizes": [len(model)], "sentinel_size": 0, "max_input_elements": 1 << 20}
    body = json.dumps(job).encode()
    code = "from haq.hardware.device.worker import worker_main; worker_main()"
    stdin = len(body).to_bytes(4, "big") + body + model
    return subprocess.run([sys.executable, "-c", code, json.dumps(limits)], input=stdin, capture_output=True, timeout=60)


def test_the_worker_keeps_its_own_deadline() -> None:
    """Low 8: told 1 s, the child stops itself with a timeout reply, whoever waits for it."""
    done = _run_worker_directly({"parent": os.getpid(), "timeout_s": 1.0, "memory_bytes": 1 << 30}, SLOW)
    assert json.loads(done.stdout)["error"] == "timeout"


def test_an_orphaned_worker_exits_at_once() -> None:
    done = _run_worker_directly({"parent": 1 if os.getpid() != 1 else 2, "timeout_s": 60.0, "memory_bytes": 1 << 30}, SLOW)
    assert done.returncode == ORPHAN_EXIT and not done.stdout


def test_client_timeout_is_honoured_against_a_silent_agent() -> None:
    """Low 8: --timeout 3 gives up within seconds of 3 s, not after a 30 s reply margin."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never speaks
        port = silent.getsockname()[1]
        env = {**os.environ, "HAQ_DEVICE_TOKEN": TOKEN}
        cmd = [sys.executable, "-m", "haq.cli", "device", "ping", f"remote://127.0.0.1:{port}", "--timeout", "3"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=14)
    assert done.returncode == 2 and "did not answer within the 3 s timeout" in done.stderr
