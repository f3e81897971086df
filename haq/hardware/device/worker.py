"""The measuring child process: the agent times every request in a fresh interpreter, started
in an empty directory, so a hostile or runaway model can neither hang nor crash the agent.

The child is bounded from both sides. The agent kills it when the request's time passes and
when the agent itself stops (:meth:`WorkerPool.kill_all`). The child caps its own address space
(``RLIMIT_AS``) before it reads the job, stops itself at its own deadline, and dies with the
agent even when the agent is killed outright (``PR_SET_PDEATHSIG`` on Linux, plus a watchdog on
the parent's pid elsewhere). It never sees the token.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Sequence

from haq.core.config import from_dict, to_dict
from haq.core.errors import DeviceError
from haq.core.types import Log, quiet
from haq.hardware.device.guard import Refusal
from haq.hardware.device.session import first_line
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.timing import measure_models
from haq.hardware.device.wire import ERROR_CODES, RequestError, error_reply

if sys.platform != "win32":
    import resource

_WORKER_CODE = "from haq.hardware.device.worker import worker_main; worker_main()"
DEADLINE_GRACE_S = 2.0  # the child's own deadline trails the agent's kill by this much
DEADLINE_EXIT = 124  # exit status of a child that stopped itself at its deadline
ORPHAN_EXIT = 125  # exit status of a child whose agent has gone
_PR_SET_PDEATHSIG = 1


class WorkerPool:
    """Starts measuring children with limits and keeps track of them until they end."""

    def __init__(self, memory_bytes: int, max_input_elements: int, log: Log | None = None) -> None:
        self.memory_bytes = memory_bytes
        self.max_input_elements = max_input_elements
        self._log = log or quiet
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._closed = False

    def run(
        self, protocol: ProtocolConfig, sizes: Sequence[int], sentinel_size: int, payload: bytes, timeout: float
    ) -> list[dict[str, Any]]:
        """Measure in a child process in an empty directory; kill it when ``timeout`` passes.
        Failures are :class:`RequestError` with the agent's own code and words."""
        job = {
            "protocol": to_dict(protocol),
            "sizes": list(sizes),
            "sentinel_size": sentinel_size,
            "max_input_elements": self.max_input_elements,
        }
        body = json.dumps(job).encode()
        limits = json.dumps({"parent": os.getpid(), "timeout_s": timeout, "memory_bytes": self.memory_bytes})
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORT_")}  # e.g. ORT_LOAD_CONFIG_FROM_MODEL
        with tempfile.TemporaryDirectory(prefix="haq-agent-") as cwd:
            with self._lock:
                if self._closed:
                    raise RequestError("busy", "the agent is shutting down")
                proc = subprocess.Popen(
                    [sys.executable, "-c", _WORKER_CODE, limits],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=cwd,
                    env=env,
                )
                self._procs.add(proc)
            try:
                out, err = proc.communicate(struct.pack(">I", len(body)) + body + payload, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise RequestError("timeout", f"measurement exceeded its {timeout:.0f} s limit and was killed") from None
            finally:
                with self._lock:
                    self._procs.discard(proc)
        return self._result(proc.returncode, out, err)

    def kill_all(self) -> None:
        """Kill every running child and start no more (the agent is stopping)."""
        with self._lock:
            self._closed = True
            procs = list(self._procs)
        for proc in procs:
            proc.kill()
        for proc in procs:
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self._log(f"measuring process {proc.pid} did not exit after SIGKILL")

    def _result(self, returncode: int, out: bytes, err: bytes) -> list[dict[str, Any]]:
        try:
            result = json.loads(out.decode("utf-8"))
            if not isinstance(result, dict):
                raise ValueError("not an object")
        except (UnicodeDecodeError, ValueError):
            tail = err.decode("utf-8", "replace").strip().splitlines()
            how = f"signal {-returncode}" if returncode < 0 else f"exit {returncode}"
            self._log(f"measuring process died ({how}): {tail[-1][:300] if tail else 'no output'}")
            if returncode == DEADLINE_EXIT:
                raise RequestError("timeout", "measurement exceeded its time limit and stopped") from None
            need = f"the model may need more than {self.memory_bytes >> 20} MiB"
            raise RequestError("bad_model", f"the measuring process died ({how}); {need}") from None
        if not result.get("ok"):
            code = result.get("error")
            if result.get("detail"):
                self._log(f"measurement refused ({code}): {str(result['detail'])[:500]}")
            message = str(result.get("message", "measurement failed"))
            raise RequestError(code if code in ERROR_CODES else "internal", message)
        measurements = result.get("measurements")
        if not isinstance(measurements, list):
            raise RequestError("internal", "the measuring process answered without measurements")
        return measurements


def worker_main() -> None:
    """Child process: set limits, read a job from stdin, measure, print one JSON result.

    The reply's ``message`` is haq's own words (it goes to the client); ``detail`` may hold the
    runtime's text and only reaches the agent's log.
    """
    limits = json.loads(sys.argv[1])
    _die_with_parent(int(limits["parent"]))
    _cap_memory(int(limits["memory_bytes"]))
    deadline = time.monotonic() + float(limits["timeout_s"])
    stopper = threading.Timer(float(limits["timeout_s"]) + DEADLINE_GRACE_S, os._exit, (DEADLINE_EXIT,))
    stopper.daemon = True
    stopper.start()
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
        results = measure_models(models, protocol, sentinel, deadline=deadline, max_input_elements=int(job["max_input_elements"]))
        reply: dict[str, Any] = {"ok": True, "measurements": [m.to_dict() for m in results]}
    except Refusal as exc:
        reply = {**error_reply(exc.code, exc.public), "detail": str(exc)}
    except DeviceError as exc:
        reply = error_reply("bad_model", str(exc))
    except MemoryError:
        reply = error_reply("too_large", "the model needs more memory than this device allows")
    except Exception as exc:  # report, never a traceback on the agent's console nor runtime text to the client
        reply = {**error_reply("internal", f"measurement failed ({type(exc).__name__})"), "detail": first_line(exc)}
    sys.stdout.write(json.dumps(reply))
    sys.stdout.flush()


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when the agent dies (Linux), and watch the
    parent's pid as well (every platform, and the gap before prctl took effect)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(ORPHAN_EXIT)
    threading.Thread(target=_watch_parent, args=(parent,), name="haq-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(ORPHAN_EXIT)


def _cap_memory(limit: int) -> None:
    """Cap this process's address space: a model that asks for more fails to allocate (and is
    answered ``too_large``) instead of waking the kernel's OOM killer."""
    if sys.platform == "win32":
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
