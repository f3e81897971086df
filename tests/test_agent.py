"""The device agent over loopback: remote measurement, refusals, and that it keeps serving."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

from haq.cli import main as haq_main
from haq.core.config import to_dict
from haq.core.errors import ConfigError, DeviceError
from haq.hardware.device.agent import AgentConfig, DeviceAgent
from haq.hardware.device.client import DeviceClient
from haq.hardware.device.runner import RemoteRunner
from haq.hardware.device.sentinel import sentinel_model
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.wire import MAGIC, read_frame, write_frame

TOKEN = "loopback-secret"
QUICK = ProtocolConfig(sessions=2, warmup_runs=2, warmup_s=0.0, repeats=4, min_repeat_ms=0.5, max_retries=0)


@pytest.fixture(scope="module")
def agent() -> Iterator[DeviceAgent]:
    cfg = AgentConfig(host="127.0.0.1", port=0, token=TOKEN, max_bytes=600_000, timeout_s=60.0, io_timeout_s=2.0)
    with DeviceAgent(cfg).start() as running:
        yield running


def runner(agent: DeviceAgent, token: str = TOKEN, timeout: float = 60.0, protocol: ProtocolConfig = QUICK) -> RemoteRunner:
    host, port = agent.address
    return RemoteRunner(host, port, token, timeout, protocol)


def raw_exchange(agent: DeviceAgent, data: bytes) -> dict[str, Any]:
    """Send raw bytes, half-close, read the agent's reply frame."""
    with socket.create_connection(agent.address, timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return read_frame(sock, time.monotonic() + 10, 1 << 20)


def assert_still_serving(agent: DeviceAgent) -> None:
    assert runner(agent).device_info()["agent"]["max_bytes"] == 600_000


def test_remote_measurement_matches_the_protocol(agent: DeviceAgent) -> None:
    r = runner(agent)
    info = r.device_info()
    assert info["cpu"] and info["onnxruntime"] and info["threads"] == 1
    a, b = r.measure_many([sentinel_model(16), sentinel_model(64)])
    for m in (a, b):
        assert len(m.samples_ms) == 2 and m.n_samples == 8 and m.median_ms > 0
        assert m.kernels == ("MatMul", "Relu")
    assert r.measure(sentinel_model(16)).n_samples == 8


def test_wrong_or_missing_token_is_refused(agent: DeviceAgent) -> None:
    with pytest.raises(DeviceError, match="unauthorized"):
        runner(agent, token="not-the-token").measure(sentinel_model(16))
    with pytest.raises(DeviceError, match="unauthorized"):
        runner(agent, token="not-the-token").device_info()
    body = json.dumps({"op": "ping"}).encode()
    reply = raw_exchange(agent, MAGIC + struct.pack(">I", len(body)) + body)
    assert reply["error"] == "unauthorized" and "device" not in reply
    assert_still_serving(agent)


def test_garbage_model_bytes_are_refused(agent: DeviceAgent) -> None:
    with pytest.raises(DeviceError, match="bad_model.*cannot load"):
        runner(agent).measure(b"\x08\x01garbage that is not a model")
    assert_still_serving(agent)


def test_model_reading_files_of_the_device_is_refused(agent: DeviceAgent) -> None:
    from onnx import TensorProto, helper

    for location in ("/etc/hostname", "../../etc/hostname"):
        weight = TensorProto(name="w", data_type=TensorProto.UINT8, dims=[4], data_location=TensorProto.EXTERNAL)
        for key, value in (("location", location), ("offset", "0"), ("length", "4")):
            weight.external_data.add(key=key, value=value)
        out = helper.make_tensor_value_info("y", TensorProto.UINT8, [4])
        graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "leak", [], [out], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
        with pytest.raises(DeviceError, match="bad_model.*[Ee]xternal data"):
            runner(agent).measure(model.SerializeToString())
    assert_still_serving(agent)


def test_oversize_request_is_refused_before_upload(agent: DeviceAgent) -> None:
    with pytest.raises(DeviceError, match="too_large.*at most 600000"):
        runner(agent).measure(b"\0" * 700_000)
    assert_still_serving(agent)


@pytest.mark.parametrize(
    "data, code",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "bad_request"),
        (MAGIC + struct.pack(">I", 2**31), "bad_request"),
        (MAGIC + struct.pack(">I", 4) + b"{{{{", "bad_request"),
        (MAGIC + struct.pack(">I", 2) + b"[]", "bad_request"),
        (MAGIC + struct.pack(">I", 100) + b"{}", "bad_request"),
        (MAGIC, "bad_request"),
    ],
)
def test_malformed_requests_get_an_error_reply(agent: DeviceAgent, data: bytes, code: str) -> None:
    assert raw_exchange(agent, data)["error"] == code
    assert_still_serving(agent)


def test_malformed_measure_headers(agent: DeviceAgent) -> None:
    bad_headers = [
        {"op": "launch"},
        {"op": "measure", "sizes": []},
        {"op": "measure", "sizes": [10, -1]},
        {"op": "measure", "sizes": [10], "sentinel_size": "x"},
        {"op": "measure", "sizes": [10], "protocol": {"sessions": 10_000}},
        {"op": "measure", "sizes": [10], "protocol": {"pickle": 1}},
        {"op": "measure", "sizes": [10], "protocol": {"sessions": "5"}},
        {"op": "measure", "sizes": [10], "protocol": [1, 2]},
        {"op": "measure", "sizes": [10], "timeout_s": -5},
    ]
    for header in bad_headers:
        with socket.create_connection(agent.address, timeout=10) as sock:
            write_frame(sock, {**header, "token": TOKEN})
            reply = read_frame(sock, time.monotonic() + 10)
        assert reply["ok"] is False and reply["error"] == "bad_request", header
    assert_still_serving(agent)


def test_silent_or_truncated_clients_time_out(agent: DeviceAgent) -> None:
    with socket.create_connection(agent.address, timeout=10) as sock:
        reply = read_frame(sock, time.monotonic() + 10)  # send nothing: the 2 s io limit answers
    assert reply["error"] == "timeout"
    with socket.create_connection(agent.address, timeout=10) as sock:
        write_frame(sock, {"op": "measure", "sizes": [1000], "token": TOKEN, "protocol": to_dict(QUICK)})
        assert read_frame(sock, time.monotonic() + 10)["continue"] is True
        sock.sendall(b"\0" * 10)
        reply = read_frame(sock, time.monotonic() + 10)
    assert reply["error"] == "timeout"
    assert_still_serving(agent)


def test_runaway_measurement_is_killed(agent: DeviceAgent) -> None:
    slow = ProtocolConfig(sessions=1, warmup_runs=1, warmup_s=30.0, repeats=1)
    start = time.monotonic()
    with pytest.raises(DeviceError, match="timeout.*killed"):
        runner(agent, timeout=2.0, protocol=slow).measure(sentinel_model(16))
    assert time.monotonic() - start < 15
    assert_still_serving(agent)


def test_config_and_client_validation() -> None:
    with pytest.raises(ConfigError, match="at least 8"):
        AgentConfig(token="short")
    with pytest.raises(ConfigError, match="--port"):
        AgentConfig(token=TOKEN, port=70_000)
    with pytest.raises(ConfigError, match="--max-bytes"):
        AgentConfig(token=TOKEN, max_bytes=0)
    with pytest.raises(ConfigError, match="--timeout"):
        AgentConfig(token=TOKEN, timeout_s=float("inf"))
    with pytest.raises(ConfigError, match="device timeout"):
        DeviceClient("127.0.0.1", 1, TOKEN, timeout=0)
    with pytest.raises(DeviceError, match="cannot reach"):
        DeviceClient("127.0.0.1", 1, TOKEN, timeout=2).ping()


def test_cli_serve_and_ping(capsys: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "HAQ_DEVICE_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "haq.cli", "device", "serve", "--port", "0", "--timeout", "30"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving on 127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        assert haq_main(["device", "ping", f"remote://127.0.0.1:{port}", "--token", TOKEN]) == 0
        assert json.loads(capsys.readouterr().out)["agent"]["timeout_s"] == 30.0
        assert haq_main(["device", "ping", f"remote://127.0.0.1:{port}", "--token", "wrong-token"]) == 2
        assert "unauthorized" in capsys.readouterr().err
    finally:
        proc.terminate()
        proc.wait(timeout=10)
