"""Shipped device cost tables (``*.json`` next to this file) and loading by name or path.

See ``latency_tables/README.md`` and :mod:`haq.tables.schema` for the format, and
``haq tables list`` for what is shipped. ``example-cpu-xeon`` is an example of a measured CPU
table: its costs hold only on the machine that measured it, so the commands' ``--device cpu``
builds (and caches) a table for the machine they run on instead.
"""

from __future__ import annotations

from pathlib import Path

from haq.core.errors import TableError
from haq.tables.table import CostTable, load_table

TABLE_DIR = Path(__file__).resolve().parent
MACHINE_TABLE = "cpu"
"""The device name the haq commands read as "this machine's measured table" (they build it)."""
RENAMED = {"cpu-intel-r-xeon-r-processor": "example-cpu-xeon"}
"""Shipped names that changed, so a name typed from older docs gets a pointer instead of a miss."""


def available() -> list[str]:
    """Names of the shipped tables (file stems), sorted."""
    return sorted(p.stem for p in TABLE_DIR.glob("*.json"))


def path_of(name: str) -> Path:
    """File of a shipped table."""
    if name not in available():
        raise TableError(
            _unknown(name)
            if name in RENAMED or name == MACHINE_TABLE
            else f"no shipped cost table '{name}'; shipped: {', '.join(available()) or 'none'}"
        )
    return TABLE_DIR / f"{name}.json"


def load(name_or_path: str | Path) -> CostTable:
    """A shipped table by name (``bitfusion``) or any table file by path; validated on load."""
    text = str(name_or_path)
    if text in available():
        return load_table(TABLE_DIR / f"{text}.json")
    p = Path(text)
    if p.suffix == ".json" or p.exists():
        return load_table(p)
    raise TableError(_unknown(text))


def _unknown(name: str) -> str:
    if name in RENAMED:
        return (
            f"shipped table '{name}' is now '{RENAMED[name]}', an example measured on another machine; "
            f"use --device {MACHINE_TABLE} for this machine's table, or --device {RENAMED[name]} for the example"
        )
    if name == MACHINE_TABLE:
        return (
            f"'{MACHINE_TABLE}' (this machine's measured table) is built by the haq commands (`haq search --device cpu`); "
            "from Python build one with `haq tables build --device cpu --model M --out my-cpu.json` and load that file"
        )
    return f"'{name}' is neither a shipped cost table ({', '.join(available()) or 'none shipped'}) nor a table file"


def load_all() -> list[CostTable]:
    """Every shipped table, in :func:`available` order (e.g. to cost a policy on every device)."""
    return [load(name) for name in available()]


__all__ = ["MACHINE_TABLE", "RENAMED", "TABLE_DIR", "available", "load", "load_all", "path_of"]
