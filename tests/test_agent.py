"""The device agent over loopback: remote measurement, refusals, and that it keeps serving."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from haq.cli import main as haq_main
from haq.core.config import to_dict
from haq.core.errors import ConfigError, DeviceError
from haq.hardware.device.agent import AgentConfig, DeviceAgent
from haq.hardware.device.client import DeviceClient
from haq.hardware.device.guard import Refusal, check_model
from haq.hardware.device.runner import RemoteRunner
from haq.hardware.device.sentinel import sentinel_model
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.timing import measure_models
from haq.hardware.device.wire import MAGIC, payload_digest, read_frame, sign, write_frame

TOKEN = "loopback-secret-0123"
QUICK = ProtocolConfig(sessions=2, warmup_runs=2, warmup_s=0.0, batch_warmup_s=0.0, repeats=4, min_repeat_ms=0.5, max_retries=0)


@pytest.fixture(scope="module")
def agent() -> Iterator[DeviceAgent]:
    limits = {"max_bytes": 600_000, "timeout_s": 60.0, "io_timeout_s": 2.0, "header_timeout_s": 2.0, "memory_mb": 1024}
    cfg = AgentConfig(host="127.0.0.1", port=0, token=TOKEN, **limits)
    with DeviceAgent(cfg).start() as running:
        yield running


def runner(agent: DeviceAgent, token: str = TOKEN, timeout: float = 60.0, protocol: ProtocolConfig = QUICK) -> RemoteRunner:
    host, port = agent.address
    return RemoteRunner(host, port, token, timeout, protocol)


@contextmanager
def greeted(agent: DeviceAgent) -> Iterator[tuple[socket.socket, dict[str, Any]]]:
    """A connection and the agent's greeting. The agent serves 4 connections from one address at
    once and refuses more as busy; a connection this module closed counts until the agent's thread
    has finished with it, which on a loaded machine can be after the next test connects, so a busy
    greeting is retried (up to 20 s). Capacity itself is tested in test_agent_limits.py."""
    deadline = time.monotonic() + 20
    while True:
        sock = socket.create_connection(agent.address, timeout=10)
        greeting = read_frame(sock, time.monotonic() + 10)
        if greeting.get("error") != "busy" or time.monotonic() > deadline:
            break
        sock.close()
        time.sleep(0.05)
    with sock:
        yield sock, greeting


def raw_exchange(agent: DeviceAgent, data: bytes) -> dict[str, Any]:
    """Take the greeting, send raw bytes, half-close, read the agent's reply frame."""
    with greeted(agent) as (sock, greeting):
        assert greeting["op"] == "hello"
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return read_frame(sock, time.monotonic() + 10, 1 << 20)


def signed_exchange(agent: DeviceAgent, fields: dict[str, Any], token: str = TOKEN) -> dict[str, Any]:
    """Answer the challenge with ``fields`` signed under ``token``; the first reply frame."""
    with greeted(agent) as (sock, greeting):
        challenge = greeting["challenge"]
        write_frame(sock, {**fields, "auth": sign(token, "request", challenge, fields)})
        return read_frame(sock, time.monotonic() + 10)


def frame(body: bytes) -> bytes:
    return MAGIC + struct.pack(">I", len(body)) + body


def assert_still_serving(agent: DeviceAgent) -> None:
    assert runner(agent).device_info()["agent"]["max_bytes"] == 600_000


def test_remote_measurement_matches_the_protocol(agent: DeviceAgent) -> None:
    r = runner(agent)
    info = r.device_info()
    assert info["cpu"] and info["onnxruntime"] and info["threads"] == 1
    assert info["agent"]["wire"] == 2 and info["agent"]["memory_mb"] == 1024
    a, b = r.measure_many([sentinel_model(16), sentinel_model(64)])
    for m in (a, b):
        assert len(m.samples_ms) == 2 and m.n_samples == 8 and m.latency_ms > 0
        assert m.kernels == ("MatMul", "Relu")
    assert r.measure(sentinel_model(16)).n_samples == 8


def test_wrong_or_missing_token_is_refused(agent: DeviceAgent) -> None:
    with pytest.raises(DeviceError, match="unauthorized"):
        runner(agent, token="not-the-token-at-all").measure(sentinel_model(16))
    with pytest.raises(DeviceError, match="unauthorized"):
        runner(agent, token="not-the-token-at-all").device_info()
    reply = raw_exchange(agent, frame(json.dumps({"op": "ping"}).encode()))
    assert reply["error"] == "unauthorized" and "device" not in reply
    reply = raw_exchange(agent, frame(json.dumps({"op": "ping", "token": TOKEN}).encode()))  # the old, clear-text way
    assert reply["error"] == "unauthorized"
    assert_still_serving(agent)


def test_garbage_model_bytes_are_refused(agent: DeviceAgent) -> None:
    with pytest.raises(DeviceError, match="bad_model.*cannot load"):
        runner(agent).measure(b"\x08\x01garbage that is not a model")
    assert_still_serving(agent)


def _external(name: str, location: str, dtype: int = TensorProto.UINT8, length: int = 8) -> TensorProto:
    tensor = TensorProto(name=name, data_type=dtype, dims=[length], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def _model(graph: Any, domains: tuple[str, ...] = (), **extra: Any) -> bytes:
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10, **extra).SerializeToString()


def external_data_models(location: str) -> dict[str, bytes]:
    """One model per place a tensor with external data can hide, all reading ``location``."""
    out = helper.make_tensor_value_info("y", TensorProto.UINT8, [8])
    identity = [helper.make_node("Identity", ["w"], ["y"])]
    constant = helper.make_node("Constant", [], ["y"], value=_external("c", location))
    models = {
        "initializer": _model(helper.make_graph(identity, "g", [], [out], [_external("w", location)])),
        "constant": _model(helper.make_graph([constant], "g", [], [out])),
    }
    indices = numpy_helper.from_array(np.array([0, 1], dtype=np.int64), "i")
    sparse = helper.make_sparse_tensor(_external("v", location, TensorProto.UINT8, 2), indices, [8])
    models["sparse_initializer"] = _model(helper.make_graph(identity, "g", [], [out], sparse_initializer=[sparse]))
    branch = helper.make_graph([helper.make_node("Constant", [], ["b"], value=_external("c", location))], "branch", [], [out])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    if_node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
    models["subgraph"] = _model(helper.make_graph([if_node], "g", [cond], [out]))
    inner = helper.make_node("Constant", [], ["fy"], value=_external("c", location))
    function = helper.make_function("haq.test", "Leak", [], ["fy"], [inner], [helper.make_opsetid("", 17)])
    call = helper.make_node("Leak", [], ["y"], domain="haq.test")
    models["function"] = _model(helper.make_graph([call], "g", [], [out]), ("haq.test",), functions=[function])
    return models


def test_models_reading_files_of_the_device_are_refused_in_our_words(agent: DeviceAgent, tmp_path: Path) -> None:
    """High 1: a tensor whose data lives in a file is refused wherever it hides, before
    onnxruntime sees the model, and the reply is haq's own text (no path, no runtime echo)."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"TOPSECRET")
    relative = "../" * 16 + str(secret).lstrip("/")
    for location in (str(secret), relative, "*/_ORT_MEM_ADDR_/*"):
        for where, model in external_data_models(location).items():
            with pytest.raises(DeviceError) as info:
                runner(agent).measure(model)
            message = str(info.value)
            assert "bad_model" in message and "external data" in message, (where, message)
            assert str(tmp_path) not in message and "TOPSECRET" not in message and "ONNXRuntimeError" not in message
            with pytest.raises(Refusal, match="external data"):
                check_model(model)
    assert_still_serving(agent)


def test_external_data_is_refused_locally_too(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"TOPSECRET")
    model = external_data_models(str(secret))["initializer"]
    with pytest.raises(Refusal, match="external data") as info:
        measure_models([model], QUICK)
    assert info.value.code == "bad_model"
    check_model(sentinel_model(8))  # an ordinary model passes


def test_runtime_text_never_reaches_the_client(agent: DeviceAgent) -> None:
    """High 1: onnxruntime's error text (which echoes indices and values) stays on the device;
    the client gets the agent's code and words."""
    data = numpy_helper.from_array(np.zeros(0, dtype=np.float32), "d")  # every index is out of bounds
    index = helper.make_tensor_value_info("i", TensorProto.INT64, [1])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    gather = _model(helper.make_graph([helper.make_node("Gather", ["d", "i"], ["y"])], "g", [index], [out], [data]))
    with pytest.raises(DeviceError) as info:
        runner(agent).measure(gather)
    assert str(info.value).endswith("refused: bad_model: onnxruntime failed to run the model"), str(info.value)
    with pytest.raises(Refusal, match="idx") as local:  # a local run keeps the runtime's detail
        measure_models([gather], QUICK)
    assert local.value.public == "onnxruntime failed to run the model"
    assert_still_serving(agent)


def huge_input_model(elements: int = 2**31) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [elements])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return _model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "huge", [x], [y]))


def test_huge_declared_input_is_too_large(agent: DeviceAgent) -> None:
    """Medium 3: a ~100-byte model declaring a [2^31] input is refused before allocation."""
    model = huge_input_model()
    assert len(model) < 200
    with pytest.raises(DeviceError, match="too_large.*declares more than"):
        runner(agent).measure(model)
    with pytest.raises(Refusal, match="declares more than") as info:
        measure_models([model], QUICK)
    assert info.value.code == "too_large"
    assert_still_serving(agent)


def test_memory_hungry_model_hits_the_address_space_cap(agent: DeviceAgent) -> None:
    """Medium 3: an intermediate of 2^30 floats (4 GiB) fails inside the 1 GiB cap: too_large."""
    shape = numpy_helper.from_array(np.array([2**30], dtype=np.int64), "s")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model(helper.make_graph([helper.make_node("Expand", ["x", "s"], ["y"])], "expand", [x], [y], [shape]))
    with pytest.raises(DeviceError, match="too_large"):
        runner(agent).measure(model)
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
        (frame(b"{{{{"), "bad_request"),
        (frame(b"[]"), "bad_request"),
        (MAGIC + struct.pack(">I", 100) + b"{}", "bad_request"),
        (MAGIC, "bad_request"),
        (frame(b"[" * 30_000 + b"]" * 30_000), "bad_request"),
        (frame(b'{"op": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}"), "bad_request"),
        (frame(b'{"op": "\\ud800", "auth": "\\udfff"}'), "bad_request"),
        (frame(b'{"op": ' + b"9" * 5000 + b"}"), "bad_request"),
        (frame(b"\xff\xfe{}"), "bad_request"),
    ],
)
def test_malformed_requests_get_an_error_reply(agent: DeviceAgent, data: bytes, code: str) -> None:
    """Low 11: deep nesting, lone surrogates and 5000-digit numbers are bad requests, not internal."""
    assert raw_exchange(agent, data)["error"] == code
    assert_still_serving(agent)


def test_malformed_measure_headers(agent: DeviceAgent) -> None:
    base = {"op": "measure", "sizes": [10], "sha256": payload_digest(b"\0" * 10)}
    bad_headers = [
        {"op": "launch"},
        {"op": "measure", "sizes": [10]},
        {**base, "sha256": "ab"},
        {**base, "sizes": []},
        {**base, "sizes": [10, -1]},
        {**base, "sentinel_size": "x"},
        {**base, "protocol": {"sessions": 10_000}},
        {**base, "protocol": {"pickle": 1}},
        {**base, "protocol": {"sessions": "5"}},
        {**base, "protocol": [1, 2]},
        {**base, "protocol": {"sessions": 10**4000}},
        {**base, "timeout_s": -5},
        {**base, "timeout_s": float("nan")},
    ]
    for header in bad_headers:
        reply = signed_exchange(agent, header)
        assert reply["ok"] is False and reply["error"] == "bad_request", header
    assert_still_serving(agent)


def test_models_altered_in_transit_are_refused(agent: DeviceAgent) -> None:
    """The signed digest covers the models: other bytes than the signed ones are refused."""
    model = sentinel_model(16)
    fields = {"op": "measure", "sizes": [len(model)], "sha256": payload_digest(model), "protocol": to_dict(QUICK)}
    with greeted(agent) as (sock, greeting):
        challenge = greeting["challenge"]
        write_frame(sock, {**fields, "auth": sign(TOKEN, "request", challenge, fields)})
        assert read_frame(sock, time.monotonic() + 10)["continue"] is True
        sock.sendall(model[:-1] + b"\0")
        reply = read_frame(sock, time.monotonic() + 10)
    assert reply["error"] == "bad_request" and "SHA-256" in reply["message"]


def test_silent_or_truncated_clients_time_out(agent: DeviceAgent) -> None:
    with greeted(agent) as (sock, greeting):
        assert greeting["op"] == "hello"
        reply = read_frame(sock, time.monotonic() + 10)  # send nothing: the 2 s header limit answers
    assert reply["error"] == "timeout"
    fields = {"op": "measure", "sizes": [1000], "sha256": payload_digest(b"\0" * 1000), "protocol": to_dict(QUICK)}
    with greeted(agent) as (sock, greeting):
        challenge = greeting["challenge"]
        write_frame(sock, {**fields, "auth": sign(TOKEN, "request", challenge, fields)})
        assert read_frame(sock, time.monotonic() + 10)["continue"] is True
        sock.sendall(b"\0" * 10)
        reply = read_frame(sock, time.monotonic() + 10)
    assert reply["error"] == "timeout"
    assert_still_serving(agent)


def test_runaway_measurement_is_killed(agent: DeviceAgent) -> None:
    slow = ProtocolConfig(sessions=1, warmup_runs=1, warmup_s=30.0, repeats=1)
    with pytest.raises(DeviceError, match="timeout"):
        runner(agent, timeout=2.0, protocol=slow).measure(sentinel_model(16))
    assert_still_serving(agent)


@pytest.mark.parametrize("token", ["short", " " * 8, "a" * 15, " " * 20 + "b" * 15, "x\t" * 15])
def test_weak_tokens_are_refused(token: str) -> None:
    """Low 11: at least 16 non-blank characters."""
    with pytest.raises(ConfigError, match="at least 16 non-blank"):
        AgentConfig(token=token)


def test_config_and_client_validation() -> None:
    AgentConfig(token="  sixteen-chars-ok  ")
    with pytest.raises(ConfigError, match="--port"):
        AgentConfig(token=TOKEN, port=70_000)
    with pytest.raises(ConfigError, match="--max-bytes"):
        AgentConfig(token=TOKEN, max_bytes=0)
    with pytest.raises(ConfigError, match="--timeout"):
        AgentConfig(token=TOKEN, timeout_s=float("inf"))
    with pytest.raises(ConfigError, match="--memory-mb"):
        AgentConfig(token=TOKEN, memory_mb=1)
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        AgentConfig(token=TOKEN, tls_cert="cert.pem")
    with pytest.raises(ConfigError, match="token"):
        AgentConfig(token="\ud800" * 20)
    with pytest.raises(ConfigError, match="device timeout"):
        DeviceClient("127.0.0.1", 1, TOKEN, timeout=0)
    with pytest.raises(ConfigError, match="--tls-ca"):
        DeviceClient("127.0.0.1", 1, TOKEN, tls_ca="/nonexistent/ca.pem")
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
        assert line[:4].isdigit() and "T" in line.split()[0], line  # Low 11: log lines are timestamped
        port = int(line.split("127.0.0.1:")[1].split()[0])
        assert haq_main(["device", "ping", f"remote://127.0.0.1:{port}", "--token", TOKEN]) == 0
        assert json.loads(capsys.readouterr().out)["agent"]["timeout_s"] == 30.0
        assert haq_main(["device", "ping", f"remote://127.0.0.1:{port}", "--token", "wrong-token-value"]) == 2
        assert "unauthorized" in capsys.readouterr().err
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.stderr is not None
    rest = proc.stderr.read()
    assert "refused unauthorized" in rest and rest.splitlines()[0][:4].isdigit()


def test_log_lines_are_stamped_single_lines() -> None:
    """Low 11: every agent log line starts with a timestamp, and text from a client (here an
    unknown protocol field with a newline) cannot start a forged line."""
    lines: list[str] = []
    with DeviceAgent(AgentConfig(port=0, token=TOKEN), log=lines.append).start() as logged:
        forged = {"x\n2000-01-01T00:00:00 forged": 1}
        fields = {"op": "measure", "sizes": [10], "sha256": payload_digest(b"\0" * 10), "protocol": forged}
        assert signed_exchange(logged, fields)["error"] == "bad_request"
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S* ", line) and "\n" not in line for line in lines), lines
