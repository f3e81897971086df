"""Medium 5: the token never crosses the network. Requests answer a per-connection challenge
with an HMAC, replies are signed for their request, recorded exchanges cannot be replayed or
altered, and ``--tls-cert/--tls-key`` encrypt the whole exchange."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from tls_helpers import NEEDS_OPENSSL, self_signed

from haq.cli import main as haq_main
from haq.core.errors import DeviceError
from haq.hardware.device.agent import AgentConfig, DeviceAgent
from haq.hardware.device.client import DeviceClient
from haq.hardware.device.runner import RemoteRunner
from haq.hardware.device.sentinel import sentinel_model
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.wire import read_frame

TOKEN = "auth-secret-for-the-wire-0123"
QUICK = ProtocolConfig(sessions=1, warmup_runs=1, warmup_s=0.0, batch_warmup_s=0.0, repeats=2, min_repeat_ms=0.2, max_retries=0)


class RecordingProxy:
    """Relays one TCP connection at a time to ``upstream``, recording both directions;
    ``alter`` may rewrite what the agent sends back (a man in the middle)."""

    def __init__(self, upstream: tuple[str, int], alter: Callable[[bytes], bytes] = lambda b: b) -> None:
        self.upstream, self.alter = upstream, alter
        self.to_agent, self.to_client = bytearray(), bytearray()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = self._server.getsockname()[:2]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            agent = socket.create_connection(self.upstream, timeout=30)
            up = threading.Thread(target=self._pump, args=(client, agent, self.to_agent, lambda b: b), daemon=True)
            up.start()
            self._pump(agent, client, self.to_client, self.alter)
            up.join(timeout=30)
            client.close()
            agent.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, record: bytearray, alter: Callable[[bytes], bytes]) -> None:
        try:
            while chunk := src.recv(1 << 16):
                record.extend(chunk)
                dst.sendall(alter(chunk))
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._server.close()


@pytest.fixture(scope="module")
def agent() -> Iterator[DeviceAgent]:
    with DeviceAgent(AgentConfig(port=0, token=TOKEN, header_timeout_s=2.0)).start() as running:
        yield running


def test_the_token_never_travels(agent: DeviceAgent) -> None:
    proxy = RecordingProxy(agent.address)
    try:
        host, port = proxy.address
        runner = RemoteRunner(host, port, TOKEN, 60.0, QUICK)
        assert runner.device_info()["agent"]["wire"] == 2
        assert runner.measure(sentinel_model(16)).n_samples == 2
    finally:
        proxy.close()
    assert proxy.to_agent and proxy.to_client
    for secret in (TOKEN.encode(), TOKEN.encode().hex().encode()):
        assert secret not in proxy.to_agent and secret not in proxy.to_client


def test_a_recorded_request_cannot_be_replayed(agent: DeviceAgent) -> None:
    proxy = RecordingProxy(agent.address)
    try:
        DeviceClient(*proxy.address, TOKEN, timeout=30).ping()
    finally:
        proxy.close()
    with socket.create_connection(agent.address, timeout=10) as sock:
        assert read_frame(sock, time.monotonic() + 10)["op"] == "hello"  # a fresh challenge
        sock.sendall(bytes(proxy.to_agent))
        sock.shutdown(socket.SHUT_WR)
        reply = read_frame(sock, time.monotonic() + 10)
    assert reply["error"] == "unauthorized"


def test_an_altered_reply_is_rejected(agent: DeviceAgent) -> None:
    proxy = RecordingProxy(agent.address, alter=lambda b: b.replace(b'"threads": 1', b'"threads": 9'))
    try:
        with pytest.raises(DeviceError, match="not signed with the token"):
            DeviceClient(*proxy.address, TOKEN, timeout=30).ping()
    finally:
        proxy.close()


@NEEDS_OPENSSL
def test_tls_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = self_signed(tmp_path, "agent")
    other, _ = self_signed(tmp_path, "other")
    cfg = AgentConfig(port=0, token=TOKEN, header_timeout_s=1.0, tls_cert=cert, tls_key=key)
    with DeviceAgent(cfg).start() as tls_agent:
        host, port = tls_agent.address
        proxy = RecordingProxy(tls_agent.address)
        try:
            runner = RemoteRunner(*proxy.address, TOKEN, 60.0, QUICK, tls_ca=cert)
            assert runner.device_info()["agent"]["tls"] is True
            assert runner.measure(sentinel_model(16)).kernels == ("MatMul", "Relu")
        finally:
            proxy.close()
        assert b"MatMul" not in proxy.to_client and b"challenge" not in proxy.to_client  # encrypted
        with pytest.raises(DeviceError, match="--tls-ca"):
            DeviceClient(host, port, TOKEN, timeout=10).ping()
        with pytest.raises(DeviceError, match="TLS .* failed"):
            DeviceClient(host, port, TOKEN, timeout=10, tls_ca=other).ping()
        assert haq_main(["device", "ping", f"remote://{host}:{port}", "--token", TOKEN, "--tls-ca", cert]) == 0
        assert '"tls": true' in capsys.readouterr().out
