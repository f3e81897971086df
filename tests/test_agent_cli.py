"""``haq device`` as a careless user runs it: model paths that are not regular files or are
huge get one line (item 9), and output piped into ``head`` that closes early is no traceback
(item 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from haq.cli import main as haq_main
from haq.hardware.device.agent import AgentConfig, DeviceAgent
from haq.hardware.device.sentinel import sentinel_model

TOKEN = "cli-secret-0123456789"
QUICK = ["--sessions", "1", "--repeats", "2", "--warmup-runs", "1", "--warmup-s", "0", "--max-retries", "0"]


@pytest.fixture(scope="module")
def agent() -> Iterator[DeviceAgent]:
    with DeviceAgent(AgentConfig(port=0, token=TOKEN)).start() as running:
        yield running


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("haq: error:"), err
    return err[0]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_measure_refuses_devices(capsys: pytest.CaptureFixture[str]) -> None:
    assert haq_main(["device", "measure", "/dev/zero", *QUICK]) == 2
    assert "not a regular file" in one_error_line(capsys)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_measure_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    cmd = [sys.executable, "-m", "haq.cli", "device", "measure", str(fifo), *QUICK]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)  # opening a FIFO for reading must not hang
    assert done.returncode == 2 and "not a regular file" in done.stderr


def test_measure_refuses_huge_and_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = tmp_path / "huge.onnx"
    with open(huge, "wb") as fh:
        fh.truncate(2**31 + 16)  # sparse: nothing is written, and nothing may be read
    assert haq_main(["device", "measure", str(huge), *QUICK]) == 2
    assert "over the 2147483647-byte limit" in one_error_line(capsys)
    assert haq_main(["device", "measure", str(tmp_path / "missing.onnx"), *QUICK]) == 2
    assert "does not exist" in one_error_line(capsys)
    assert haq_main(["device", "measure", str(tmp_path), *QUICK]) == 2
    assert "not a regular file" in one_error_line(capsys)


def run_into_closed_pipe(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``haq`` with stdout a pipe whose reader has already gone (as ``| head`` leaves it)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        env = {**os.environ, "HAQ_DEVICE_TOKEN": TOKEN}
        cmd = [sys.executable, "-m", "haq.cli", *args]
        return subprocess.run(cmd, stdout=write_end, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        os.close(write_end)


def test_ping_into_a_closed_pipe_is_quiet(agent: DeviceAgent) -> None:
    host, port = agent.address
    done = run_into_closed_pipe(["device", "ping", f"remote://{host}:{port}"])
    assert done.returncode == 0 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_measure_into_a_closed_pipe_still_writes_its_json(tmp_path: Path) -> None:
    model = tmp_path / "sentinel.onnx"
    model.write_bytes(sentinel_model(16))
    out = tmp_path / "raw.json"
    done = run_into_closed_pipe(["device", "measure", str(model), "--json", str(out), *QUICK])
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert str(model) in json.loads(out.read_text())["models"]
