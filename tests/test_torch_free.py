"""The device side runs on targets without torch: importing it, building the ``haq`` parser and
running ``haq device`` must not load torch. Each check runs in a fresh interpreter, since this
test process has torch loaded already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from haq.hardware.device.sentinel import sentinel_model

HEAVY = ("torch", "torchvision", "stable_baselines3")
DEVICE_MODULES = (
    "haq.hardware",
    "haq.hardware.device.agent",
    "haq.hardware.device.client",
    "haq.hardware.device.wire",
    "haq.hardware.device.guard",
    "haq.hardware.device.worker",
    "haq.hardware.device.runner",
    "haq.hardware.device.machine",
    "haq.hardware.device.measurement",
    "haq.hardware.device.profile",
    "haq.hardware.device.sentinel",
    "haq.hardware.device.session",
    "haq.hardware.device.settings",
    "haq.hardware.device.timing",
    "haq.core.types",
    "haq.commands.device",
    "haq.cli",
)


def heavy_modules_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; the torch-family modules it left imported."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_device_side_modules_import_no_torch() -> None:
    """Imported one by one, so the first module that pulls torch in is the one named."""
    code = (
        "import importlib, sys\n"
        f"for name in {DEVICE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"    assert not any(m in sys.modules for m in {HEAVY!r}), f'importing {{name}} loaded torch'\n"
    )
    assert heavy_modules_after(code) == []


def test_haq_device_help_and_top_level_help_load_no_torch() -> None:
    code = (
        "from haq.cli import main\n"
        "for argv in (['--help'], ['device', '--help'], ['device', 'serve', '--help'], ['device', 'measure', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (argv, exc.code)\n"
    )
    assert heavy_modules_after(code) == []


def test_haq_device_ping_and_measure_run_without_torch(tmp_path: Path) -> None:
    model = tmp_path / "sentinel.onnx"
    model.write_bytes(sentinel_model(16))
    quick = ["--sessions", "1", "--repeats", "2", "--warmup-runs", "1", "--warmup-s", "0", "--max-retries", "0"]
    code = (
        "from haq.cli import main\n"
        "assert main(['device', 'ping', 'remote://127.0.0.1:1', '--token', 'not-a-real-token', '--timeout', '2']) == 2\n"
        f"assert main(['device', 'measure', {str(model)!r}, *{quick!r}]) == 0\n"
    )
    assert heavy_modules_after(code) == []


def test_a_torch_command_still_loads_its_module() -> None:
    code = "from haq.cli import build_parser\nbuild_parser('quantize')"
    assert "torch" in heavy_modules_after(code)
