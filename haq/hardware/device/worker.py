"""The measuring child process: the agent times every request in a fresh interpreter, started
in an empty directory and killed when its time limit passes, so a hostile or runaway model can
neither hang nor crash the agent."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tempfile
from typing import Any, Sequence

from haq.core.config import from_dict, to_dict
from haq.core.errors import DeviceError
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.timing import measure_models
from haq.hardware.device.wire import RequestError, error_reply

_WORKER_CODE = "from haq.hardware.device.worker import worker_main; worker_main()"


def run_worker(
    protocol: ProtocolConfig, sizes: Sequence[int], sentinel_size: int, payload: bytes, timeout: float
) -> list[dict[str, Any]]:
    """Measure in a child process in an empty directory; kill it when ``timeout`` passes."""
    job = json.dumps({"protocol": to_dict(protocol), "sizes": list(sizes), "sentinel_size": sentinel_size}).encode()
    stdin = struct.pack(">I", len(job)) + job + payload
    with tempfile.TemporaryDirectory(prefix="haq-agent-") as cwd:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
        )
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RequestError("timeout", f"measurement exceeded its {timeout:.0f} s limit and was killed") from None
    try:
        result = json.loads(out.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        tail = err.decode("utf-8", "replace").strip().splitlines()
        last = tail[-1] if tail else "no output"
        raise RequestError("internal", f"measurement process died (exit {proc.returncode}): {last}") from None
    if not result.get("ok"):
        raise RequestError(str(result.get("error", "internal")), str(result.get("message", "measurement failed")))
    return list(result["measurements"])


def worker_main() -> None:
    """Child process: read a job from stdin, measure, print one JSON result to stdout."""
    data = sys.stdin.buffer.read()
    try:
        (n,) = struct.unpack(">I", data[:4])
        job = json.loads(data[4 : 4 + n].decode("utf-8"))
        protocol = from_dict(ProtocolConfig, job["protocol"], "protocol settings")
        blob = data[4 + n :]
        models, offset = [], 0
        for size in job["sizes"]:
            models.append(blob[offset : offset + size])
            offset += size
        sentinel = blob[offset : offset + job["sentinel_size"]] or None
        results = measure_models(models, protocol, sentinel)
        reply: dict[str, Any] = {"ok": True, "measurements": [m.to_dict() for m in results]}
    except DeviceError as exc:
        reply = error_reply("bad_model", str(exc))
    except Exception as exc:  # report, never a traceback on the agent's console
        reply = error_reply("internal", f"{type(exc).__name__}: {exc}")
    sys.stdout.write(json.dumps(reply))
    sys.stdout.flush()
