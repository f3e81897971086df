"""Job documents on disk: read TOML or JSON, write the resolved document beside a run.

Python reads TOML (``tomllib``) but does not write it, so :func:`to_toml` is a small writer for
what a job document holds: nested tables of strings, numbers, booleans and lists of those.
TOML has no null, so a field that is ``None`` is left out (reading it back gives the field's
default); :func:`write_job` checks that the TOML reads back as the same job and writes
``job.json`` instead when it would not.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Mapping

from haq.core.errors import ConfigError
from haq.core.fileio import atomic_write_text
from haq.jobs.document import Job, parse_job

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib; JSON documents still work there
    tomllib = None

JOB_TOML = "job.toml"
JOB_JSON = "job.json"
MAX_JOB_BYTES = 256 * 1024
"""A job document is a few hundred bytes; anything near this is not one."""
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def read_job_file(path: str | Path) -> Job:
    """A job document from a ``.toml`` or ``.json`` file, validated."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--config {p}: cannot read the job document ({exc.strerror or exc})") from None
    if len(raw) > MAX_JOB_BYTES:
        raise ConfigError(f"--config {p}: {len(raw)} bytes is too large for a job document (at most {MAX_JOB_BYTES})")
    return parse_job(parse_text(raw.decode("utf-8", errors="replace"), json_format=p.suffix.lower() == ".json", source=str(p)))


def parse_text(text: str, *, json_format: bool, source: str) -> Any:
    """The object in a TOML or JSON text; a syntax error is a :class:`ConfigError` naming ``source``."""
    if json_format:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if tomllib is None:
        raise ConfigError(f"{source}: reading TOML needs Python 3.11+; use a .json job document")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None


def write_job(run_dir: Path, job: Job) -> Path:
    """Store the resolved document in ``run_dir`` as ``job.toml`` (``job.json`` if TOML cannot hold it exactly)."""
    doc = job.to_dict()
    text = to_toml(doc)
    if tomllib is not None and parse_job(tomllib.loads(text)) == job:
        (run_dir / JOB_JSON).unlink(missing_ok=True)
        path = run_dir / JOB_TOML
        atomic_write_text(path, text)
        return path
    (run_dir / JOB_TOML).unlink(missing_ok=True)
    path = run_dir / JOB_JSON
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path


def stored_job(run_dir: Path) -> Job | None:
    """The document :func:`write_job` stored in ``run_dir``, or None."""
    for name in (JOB_TOML, JOB_JSON):
        if (run_dir / name).is_file():
            return read_job_file(run_dir / name)
    return None


def to_toml(doc: Mapping[str, Any]) -> str:
    """TOML text of a document of nested tables (``None`` values are left out)."""
    lines: list[str] = []
    _table(doc, [], lines)
    return "\n".join(lines).strip() + "\n"


def _table(table: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if v is not None and not isinstance(v, Mapping)}
    children = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if path and (scalars or not children):
        lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_toml_value(value)}")
    for key, value in children.items():
        _table(value, [*path, str(key)], lines)


def _key(key: Any) -> str:
    text = str(key)
    return text if _BARE_KEY.fullmatch(text) else _string(text)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} value {value!r} to TOML")


def _string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, plus DEL, which TOML wants escaped."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


__all__ = ["JOB_JSON", "JOB_TOML", "MAX_JOB_BYTES", "parse_text", "read_job_file", "stored_job", "to_toml", "write_job"]
