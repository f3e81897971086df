"""Fuzzing the device agent's request parser on loopback: whatever frames or JSON requests a
client sends, signed or not, the agent answers with one of its own refusals (never
``internal``) and keeps serving. The model guard is fuzzed the same way, in process and
through the measuring child. Derandomized and bounded, so it runs the same every time."""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haq.core.config import to_dict
from haq.hardware.device.agent import AgentConfig, DeviceAgent
from haq.hardware.device.client import DeviceClient
from haq.hardware.device.guard import Refusal, check_model
from haq.hardware.device.sentinel import sentinel_model
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.wire import ERROR_CODES, MAGIC, RequestError, payload_digest, read_frame, sign

TOKEN = "fuzz-secret-0123456789"
QUICK = ProtocolConfig(sessions=1, warmup_runs=1, warmup_s=0.0, batch_warmup_s=0.0, repeats=1, min_repeat_ms=0.0, max_retries=0)
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def agent() -> Iterator[DeviceAgent]:
    cfg = AgentConfig(
        port=0,
        token=TOKEN,
        max_bytes=100_000,
        timeout_s=20.0,
        header_timeout_s=2.0,
        io_timeout_s=2.0,
        max_per_address=8,
        memory_mb=1024,
    )
    with DeviceAgent(cfg).start() as running:
        yield running


def replies(agent: DeviceAgent, make: Any, payload: bytes = b"") -> list[dict[str, Any]]:
    """Connect, take the greeting, send ``make(challenge)`` (+ ``payload``), half-close, and
    collect every frame the agent answers until it closes."""
    with socket.create_connection(agent.address, timeout=30) as sock:
        deadline = time.monotonic() + 30
        hello = read_frame(sock, deadline)
        if not hello.get("ok"):
            return [hello]
        sock.sendall(make(hello["challenge"]) + payload)
        sock.shutdown(socket.SHUT_WR)
        got = []
        while True:
            try:
                got.append(read_frame(sock, deadline, 1 << 22))
            except (RequestError, OSError):
                return got


def check(answers: list[dict[str, Any]]) -> None:
    assert answers, "the agent closed without a reply"
    for reply in answers:
        assert reply.get("ok") or reply.get("error") in ERROR_CODES, reply
        assert reply.get("error") != "internal", reply


def frame(body: bytes) -> bytes:
    return MAGIC + struct.pack(">I", len(body)) + body


plain = st.text(alphabet=st.sampled_from(["a", "z", "0", " ", "\x00", "\n", "é", "\U0001f600", '"', "\\"]), max_size=12)
surrogates = st.sampled_from(["\ud800", "a\udfffb"])
text = st.one_of(*[plain] * 9, surrogates)  # now and then a lone surrogate
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**4000, 0.5, True, False]),
)
json_values = st.recursive(
    st.one_of(st.none(), numbers, text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=12,
)
sizes = st.lists(st.integers(min_value=-5, max_value=200_000), max_size=4)
counts = st.integers(min_value=-5, max_value=200_000)
protocol_keys = st.sampled_from(sorted(to_dict(QUICK)))
field_values = {
    "op": st.one_of(st.just("measure"), st.just("measure"), st.just("ping"), st.sampled_from(["hello", "MEASURE"]), json_values),
    "sizes": st.one_of(sizes, sizes, json_values),
    "sentinel_size": st.one_of(counts, json_values),
    "protocol": st.one_of(st.just(to_dict(QUICK)), st.dictionaries(protocol_keys, st.one_of(numbers, json_values)), json_values),
    "timeout_s": st.one_of(numbers, json_values),
    "sha256": st.one_of(st.just("0" * 64), st.just("0" * 64), st.text(alphabet="0123456789abcdefX", max_size=70), json_values),
    "nonce": st.one_of(st.just("00ff"), json_values),
    "auth": st.one_of(st.just("0" * 64), json_values),
}
VALID = {"op": "measure", "sizes": [100], "sentinel_size": 0, "sha256": "0" * 64, "protocol": to_dict(QUICK), "timeout_s": 5.0}
arbitrary = st.builds(
    lambda fields, extra: {**extra, **fields},
    st.fixed_dictionaries({"op": field_values["op"]}, optional={k: v for k, v in field_values.items() if k != "op"}),
    st.one_of(st.just({}), st.just({}), st.dictionaries(text, json_values, max_size=2)),
)
near_valid = st.builds(  # a valid measure request with one or two fields spoiled: reaches every check
    lambda spoiled: {**VALID, **spoiled},
    st.dictionaries(st.sampled_from(sorted(field_values)), json_values | numbers | sizes, min_size=1, max_size=2),
)
requests = st.one_of(arbitrary, near_valid)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


frames = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda n, body: MAGIC + struct.pack(">I", n) + body, st.integers(0, 2**32 - 1), st.binary(max_size=64)),
    st.builds(frame, st.binary(max_size=200)),
    st.builds(lambda v: frame(_dumps(v)), json_values),
    st.builds(lambda n: frame(b"[" * n + b"]" * n), st.integers(min_value=1, max_value=30_000)),
    st.builds(lambda n: frame(b'{"op": ' + b"[" * n + b"]" * n + b"}"), st.integers(min_value=20, max_value=2000)),
    st.builds(lambda n: frame(b'{"sizes": [' + b"7" * n + b"]}"), st.integers(min_value=1, max_value=6000)),
)


@given(data=frames)
@settings(FUZZ, max_examples=150)
def test_raw_frames_never_break_the_agent(agent: DeviceAgent, data: bytes) -> None:
    check(replies(agent, lambda _challenge: data))


@given(fields=requests, signed=st.booleans())
@settings(FUZZ, max_examples=200)
def test_json_requests_never_break_the_agent(agent: DeviceAgent, fields: dict[str, Any], signed: bool) -> None:
    """Signed requests get past authentication, so every field check is exercised too."""

    def make(challenge: str) -> bytes:
        body = {k: v for k, v in fields.items() if k != "auth"}
        if signed:
            body["auth"] = sign(TOKEN, "request", challenge, body)
        elif "auth" in fields:
            body["auth"] = fields["auth"]
        data = _dumps(body)
        return frame(data) if len(data) <= 60_000 else frame(b"{}")

    check(replies(agent, make))


@given(payload=st.binary(min_size=1, max_size=300))
@settings(FUZZ, max_examples=12)
def test_arbitrary_model_bytes_are_refused_by_the_worker(agent: DeviceAgent, payload: bytes) -> None:
    """Random bytes that pass every request check reach the measuring child: bad_model."""

    def make(challenge: str) -> bytes:
        body = {"op": "measure", "sizes": [len(payload)], "sha256": payload_digest(payload), "protocol": to_dict(QUICK)}
        return frame(_dumps({**body, "auth": sign(TOKEN, "request", challenge, body)}))

    answers = replies(agent, make, payload)
    check(answers)
    assert answers[-1].get("ok") or answers[-1]["error"] in ("bad_model", "too_large")


@given(payload=st.binary(max_size=400))
@settings(FUZZ, max_examples=400)
def test_the_guard_refuses_or_passes_any_bytes(payload: bytes) -> None:
    try:
        check_model(payload)
    except Refusal as exc:
        assert exc.code == "bad_model"


@given(edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), min_size=1, max_size=6))
@settings(FUZZ, max_examples=300)
def test_the_guard_survives_mutated_models(edits: list[tuple[int, int]]) -> None:
    model = bytearray(sentinel_model(4))
    for where, value in edits:
        model[where % len(model)] = value
    try:
        check_model(bytes(model))
    except Refusal as exc:
        assert exc.code == "bad_model"


def test_the_agent_is_alive_after_the_fuzz(agent: DeviceAgent) -> None:
    host, port = agent.address
    assert DeviceClient(host, port, TOKEN, timeout=30).ping()["agent"]["wire"] == 2
