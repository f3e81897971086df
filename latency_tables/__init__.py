"""Shipped device cost tables (``*.json`` next to this file) and loading by name or path.

See ``latency_tables/README.md`` and :mod:`haq.tables.schema` for the format, and
``haq tables list`` for what is shipped.
"""

from __future__ import annotations

from pathlib import Path

from haq.core.errors import TableError
from haq.tables.table import CostTable, load_table

TABLE_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped tables (file stems), sorted."""
    return sorted(p.stem for p in TABLE_DIR.glob("*.json"))


def path_of(name: str) -> Path:
    """File of a shipped table."""
    if name not in available():
        raise TableError(f"no shipped cost table '{name}'; shipped: {', '.join(available()) or 'none'}")
    return TABLE_DIR / f"{name}.json"


def load(name_or_path: str | Path) -> CostTable:
    """A shipped table by name (``bitfusion``) or any table file by path; validated on load."""
    text = str(name_or_path)
    if text in available():
        return load_table(TABLE_DIR / f"{text}.json")
    p = Path(text)
    if p.suffix == ".json" or p.exists():
        return load_table(p)
    raise TableError(f"'{text}' is neither a shipped cost table ({', '.join(available()) or 'none shipped'}) nor a table file")


def load_all() -> list[CostTable]:
    """Every shipped table, in :func:`available` order (e.g. to cost a policy on every device)."""
    return [load(name) for name in available()]


__all__ = ["TABLE_DIR", "available", "load", "load_all", "path_of"]
