"""`haq tables build --device remote://HOST:PORT`: a table measured through a device agent
over loopback (hardware in the loop), plain or over TLS, and its one-line errors (the service's
registered agents: ``test_service.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from tls_helpers import NEEDS_OPENSSL, self_signed

import latency_tables
from haq.cli import main as haq_main
from haq.hardware.device.agent import AgentConfig, DeviceAgent

TOKEN = "remote-build-secret"
QUICK = "--sessions 1 --repeats 3 --warmup-runs 1 --warmup-s 0 --min-repeat-ms 0.2 --max-retries 0".split()


@pytest.fixture(scope="module")
def agent() -> Iterator[DeviceAgent]:
    cfg = AgentConfig(host="127.0.0.1", port=0, token=TOKEN, max_bytes=2_000_000, timeout_s=60.0, io_timeout_s=5.0)
    with DeviceAgent(cfg).start() as running:
        yield running


def _device(agent: DeviceAgent) -> str:
    host, port = agent.address
    return f"remote://{host}:{port}"


def test_build_through_the_agent(agent: DeviceAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "remote.json"
    argv = ["tables", "build", "--model", "digits_cnn", "--device", _device(agent), "--token", TOKEN, "--out", str(out), *QUICK]
    assert haq_main(argv) == 0
    table = latency_tables.load(str(out))
    entries = list(table.entries())
    assert entries and all(e.source == "measured" and e.latency_ms > 0 for e in entries)
    assert {(e.w_bits, e.a_bits) for e in entries} >= {(32, 32), (8, 8)}
    assert "device agent" in table.meta["device"]["description"]
    assert table.meta["runtime"]["name"] == "onnxruntime"
    assert "priced 4 new signature(s)" in capsys.readouterr().out
    assert haq_main(argv) == 0  # a second build finds every signature and measures nothing
    assert "priced 0 new signature(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--token", "wrong-token-value"], "token"),
        ([], "token"),
    ],
)
def test_bad_token_is_one_line(
    agent: DeviceAgent,
    tmp_path: Path,
    extra: list[str],
    match: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HAQ_DEVICE_TOKEN", raising=False)
    argv = [
        "tables",
        "build",
        "--model",
        "digits_cnn",
        "--device",
        _device(agent),
        "--out",
        str(tmp_path / "t.json"),
        *extra,
        *QUICK,
    ]
    assert haq_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("haq: error:") and match in err[-1]
    assert not (tmp_path / "t.json").exists()


def test_token_is_refused_for_the_local_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tables", "build", "--model", "digits_cnn", "--device", "cpu", "--token", TOKEN, "--out", str(tmp_path / "t.json")]
    assert haq_main(argv) == 2
    assert "--token is for remote" in capsys.readouterr().err


@NEEDS_OPENSSL
def test_build_through_an_agent_serving_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = self_signed(tmp_path, "agent")
    cfg = AgentConfig(host="127.0.0.1", port=0, token=TOKEN, timeout_s=60.0, io_timeout_s=5.0, tls_cert=cert, tls_key=key)
    with DeviceAgent(cfg).start() as tls_agent:
        out = tmp_path / "tls.json"
        argv = ["tables", "build", "--model", "digits_mlp", "--device", _device(tls_agent), "--token", TOKEN, "--out", str(out)]
        assert haq_main([*argv, *QUICK]) == 2  # plain TCP to an agent that speaks TLS
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("haq: error:") and not out.exists()
        assert haq_main([*argv, "--tls-ca", cert, *QUICK]) == 0
        assert all(e.source == "measured" for e in latency_tables.load(str(out)).entries())
