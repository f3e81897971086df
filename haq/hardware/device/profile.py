"""Realized kernels (step 9): which op types actually ran, read from an onnxruntime profile,
because the optimized graph is not always what was exported (``QLinearConv`` vs ``Conv``)."""

from __future__ import annotations

import json
import os
import tempfile

from haq.core.errors import DeviceError
from haq.hardware.device.guard import DEFAULT_MAX_INPUT_ELEMENTS
from haq.hardware.device.session import open_session, random_feeds, run_once, session_options
from haq.hardware.device.settings import ProtocolConfig


def realized_kernels(model: bytes, cfg: ProtocolConfig, max_input_elements: int = DEFAULT_MAX_INPUT_ELEMENTS) -> tuple[str, ...]:
    """Op types of the optimized graph as executed (one profiled, untimed run)."""
    with tempfile.TemporaryDirectory(prefix="haq-profile-") as tmp:
        opts = session_options(cfg)
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "run")
        sess = open_session(model, opts)
        run_once(sess, random_feeds(sess, cfg.seed, max_input_elements))
        path = sess.end_profiling()
        with open(path, encoding="utf-8") as fh:
            events = json.load(fh)
    return kernels_from_profile(events)


def kernels_from_profile(events: object) -> tuple[str, ...]:
    """Op types of the executed nodes from an onnxruntime profile (first run, in order)."""
    if not isinstance(events, list):
        raise DeviceError("onnxruntime profile is not a JSON list of events")
    seen: dict[str, tuple[float, str]] = {}
    for ev in events:
        if not isinstance(ev, dict) or ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(ev["name"])
        op = str((ev.get("args") or {}).get("op_name", "?"))
        seen.setdefault(name, (float(ev.get("ts", 0.0)), op))
    return tuple(op for _, op in sorted(seen.values()))
