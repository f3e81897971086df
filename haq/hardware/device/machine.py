"""What a measurement ran on: stored beside every figure, since a latency means nothing
without the CPU, runtime versions and thread count that produced it."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np
import onnxruntime as ort

from haq.hardware.device.settings import ProtocolConfig


def device_info(cfg: ProtocolConfig | None = None) -> dict[str, Any]:
    """CPU model, core count, OS, runtime versions and threads of this machine."""
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count() or 0,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "threads": (cfg or ProtocolConfig()).threads,
    }


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, else what platform reports)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
