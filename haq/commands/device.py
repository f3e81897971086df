"""``haq device``: run the device agent (``serve``), check one (``ping``), time ONNX files (``measure``).

This module imports no torch, and ``haq`` imports a command's module only when that command
runs, so ``haq device serve`` works on a target that has only onnxruntime and numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
from pathlib import Path
from types import FrameType

from haq.core.errors import ConfigError
from haq.core.fileio import atomic_write_text
from haq.core.types import stderr_log as log
from haq.hardware.device.agent import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MEMORY_MB,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT_S,
    AgentConfig,
    DeviceAgent,
    is_loopback,
    timestamped,
)
from haq.hardware.device.client import DEFAULT_TIMEOUT_S
from haq.hardware.device.runner import TLS_CA_ENV, TOKEN_ENV, RemoteAccess, RemoteRunner, make_runner, parse_remote
from haq.hardware.device.settings import ProtocolConfig

MAX_MODEL_FILE_BYTES = 2**31 - 1  # protobuf's limit: a larger ONNX file needs external data, which haq never reads


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    """``haq device serve | ping | measure``."""
    p = sub.add_parser("device", help="hardware in the loop: serve a device agent, ping one, time an ONNX model")
    dsub = p.add_subparsers(dest="device_command", metavar="ACTION")
    dsub.required = True

    s = dsub.add_parser("serve", help="time ONNX models sent by a host (run this on the target device)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    add_token_arg(s)
    s.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest total model size one request may carry")
    s.add_argument("--timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S, help="seconds one measurement request may take")
    s.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB, help="address-space cap of the measuring process (MiB)")
    s.add_argument("--tls-cert", default=None, help="serve TLS with this certificate (PEM); hosts pass it as --tls-ca")
    s.add_argument("--tls-key", default=None, help="private key (PEM) of --tls-cert")
    s.set_defaults(func=run_serve)

    g = dsub.add_parser("ping", help="print a device agent's CPU, runtime and limits")
    g.add_argument("device", help="remote://HOST:PORT")
    add_token_arg(g)
    add_tls_ca_arg(g)
    g.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    g.set_defaults(func=run_ping)

    m = dsub.add_parser("measure", help="time ONNX files with the protocol, here or on a device agent")
    m.add_argument("models", nargs="+", help="ONNX files (measured interleaved)")
    m.add_argument("--device", default="local", help="local or remote://HOST:PORT")
    add_token_arg(m)
    add_tls_ca_arg(m)
    m.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds a remote measurement may take")
    m.add_argument("--json", default=None, help="also write the raw measurements to this JSON file")
    add_protocol_args(m)
    m.set_defaults(func=run_measure)


def add_token_arg(p: argparse.ArgumentParser) -> None:
    """--token, defaulting to $HAQ_DEVICE_TOKEN so the secret need not appear in ``ps``."""
    p.add_argument("--token", default=None, help=f"shared secret of the agent (default: ${TOKEN_ENV})")


def add_tls_ca_arg(p: argparse.ArgumentParser) -> None:
    """--tls-ca, for agents that serve TLS (defaulting to $HAQ_DEVICE_TLS_CA)."""
    p.add_argument("--tls-ca", default=None, help=f"certificate or CA (PEM) of an agent that serves TLS (default: ${TLS_CA_ENV})")


def add_protocol_args(p: argparse.ArgumentParser) -> None:
    """Measurement protocol knobs (defaults: :class:`ProtocolConfig`'s)."""
    d = ProtocolConfig()
    g = p.add_argument_group("measurement protocol")
    g.add_argument("--sessions", type=int, default=d.sessions, help="fresh sessions per model, interleaved")
    g.add_argument("--repeats", type=int, default=d.repeats, help="timed samples per session")
    g.add_argument("--warmup-runs", type=int, default=d.warmup_runs, help="warm-up runs per session (at least)")
    g.add_argument("--warmup-s", type=float, default=d.warmup_s, help="warm-up seconds per session (at least)")
    g.add_argument("--batch-warmup-s", type=float, default=d.batch_warmup_s, help="untimed seconds before a batch's first round")
    g.add_argument("--min-repeat-ms", type=float, default=d.min_repeat_ms, help="each sample batches runs to last this long")
    g.add_argument("--max-noise", type=float, default=d.max_noise, help="IQR/median above which a model is re-measured")
    g.add_argument("--max-retries", type=int, default=d.max_retries, help="bound on re-measurements of noisy models")
    g.add_argument("--sentinel-every", type=int, default=d.sentinel_every, help="re-time a drift sentinel every N models; 0: off")
    g.add_argument("--threads", type=int, default=d.threads, help="onnxruntime intra-op threads")
    g.add_argument("--input-seed", type=int, default=d.seed, help="seed of the random model inputs")
    g.add_argument(
        "--ci-rel",
        type=float,
        default=d.ci_rel,
        help="stop timing a model once its two lowest session floors agree within this fraction (0: always --sessions)",
    )
    g.add_argument("--min-sessions", type=int, default=d.min_sessions, help="sessions a model gets before --ci-rel may stop it")


def protocol_config(ns: argparse.Namespace) -> ProtocolConfig:
    """The validated protocol from :func:`add_protocol_args` arguments."""
    return ProtocolConfig(
        sessions=ns.sessions,
        warmup_runs=ns.warmup_runs,
        warmup_s=ns.warmup_s,
        batch_warmup_s=ns.batch_warmup_s,
        repeats=ns.repeats,
        min_repeat_ms=ns.min_repeat_ms,
        max_noise=ns.max_noise,
        max_retries=ns.max_retries,
        sentinel_every=ns.sentinel_every,
        seed=ns.input_seed,
        threads=ns.threads,
        ci_rel=ns.ci_rel,
        min_sessions=ns.min_sessions,
    )


def device_token(ns: argparse.Namespace) -> str | None:
    """--token or $HAQ_DEVICE_TOKEN."""
    return ns.token or os.environ.get(TOKEN_ENV) or None


def device_tls_ca(ns: argparse.Namespace) -> str | None:
    """--tls-ca or $HAQ_DEVICE_TLS_CA."""
    return getattr(ns, "tls_ca", None) or os.environ.get(TLS_CA_ENV) or None


def remote_access(ns: argparse.Namespace) -> RemoteAccess:
    """The token and TLS certificate a command's flags (or their environment variables) give."""
    return RemoteAccess(device_token(ns), device_tls_ca(ns))


def run_serve(ns: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM (both kill a running measurement); the token is required
    so an open port never times strangers' models."""
    token = device_token(ns)
    if token is None:
        raise ConfigError(f"haq device serve needs --token or ${TOKEN_ENV} (a secret of 16+ characters the host will pass)")
    cfg = AgentConfig(
        host=ns.host,
        port=ns.port,
        token=token,
        max_bytes=ns.max_bytes,
        timeout_s=ns.timeout,
        memory_mb=ns.memory_mb,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
    )
    say = timestamped(log)
    agent = DeviceAgent(cfg, log=log)
    host, port = agent.address
    limits = f"{'TLS' if cfg.tls_cert else 'no TLS'}; max {cfg.max_bytes} bytes, {cfg.timeout_s:g} s per request"
    say(f"haq device agent serving on {host}:{port} ({limits}); Ctrl-C stops")
    if not is_loopback(host):
        plain = "" if cfg.tls_cert else "; models and timings travel signed but unencrypted: add --tls-cert/--tls-key"
        say(f"reachable from the network: holders of the token can make this machine run models (the token never travels{plain})")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        agent.serve_forever()
    except KeyboardInterrupt:
        say("stopped")
    finally:
        agent.close()
        signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the agent the way Ctrl-C does (its measuring process is killed on the way)."""
    raise KeyboardInterrupt


def run_ping(ns: argparse.Namespace) -> int:
    """Print the agent's device info as JSON (checks address, token and versions at once)."""
    host, port = parse_remote(ns.device)
    token = device_token(ns)
    if token is None:
        raise ConfigError(f"haq device ping needs --token or ${TOKEN_ENV}")
    info = RemoteRunner(host, port, token, ns.timeout, tls_ca=device_tls_ca(ns)).device_info()
    emit(json.dumps(info, indent=2))
    return 0


def run_measure(ns: argparse.Namespace) -> int:
    """Time the files interleaved, print a markdown table, optionally keep the raw samples."""
    runner = make_runner(ns.device, device_token(ns), protocol_config(ns), ns.timeout, progress=log, tls_ca=device_tls_ca(ns))
    paths = [Path(p) for p in ns.models]
    models = [read_model_file(p) for p in paths]
    results = runner.measure_many(models)
    emit("| model | latency (ms) | IQR/median | session spread | samples | attempts | kernels |\n|---|---|---|---|---|---|---|")
    for path, m in zip(paths, results):
        kernels = ", ".join(sorted(set(m.kernels)))
        stats = f"{m.latency_ms:.4f} | {m.noise:.3f} | {m.session_spread:.3f} | {m.n_samples} | {m.attempts}"
        emit(f"| {path.name} | {stats} | {kernels} |")
    if ns.json:
        record = {
            "device": runner.device_info(),
            "protocol": runner.protocol.record(),
            "models": {str(p): m.to_dict() for p, m in zip(paths, results)},
        }
        atomic_write_text(Path(ns.json), json.dumps(record, indent=1))
    return 0


def read_model_file(path: Path, limit: int = MAX_MODEL_FILE_BYTES) -> bytes:
    """A model file's bytes: regular files only (not /dev/zero, a FIFO or a directory), at most
    ``limit`` bytes, checked before reading (opening never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"model file '{path}' does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot open model file '{path}': {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"model file '{path}' is not a regular file (give an .onnx file, not a device, pipe or directory)")
        raise ConfigError(f"model file '{path}' is {info.st_size} bytes, over the {limit}-byte limit of one ONNX file")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"model file '{path}' grew past {limit} bytes while it was read")
    return data


def emit(text: str) -> None:
    """Print a line of results; when the reader has gone (``| head``), stop printing quietly:
    stdout is pointed at /dev/null so the interpreter's last flush finds nothing to complain about."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
