"""Job documents: one versioned document per run, the same for ``haq <command> --config`` and the service.

A job document names its ``kind`` and holds exactly the settings the matching command takes,
as the sections of that command's config classes (the same classes the CLI builds from flags)::

    format = "haq.job"            # optional on input
    version = 1
    kind = "search"               # search | baseline | transfer | table_build | table_check

    [search]                      # SearchConfig; missing fields take their defaults
    episodes = 30
    [search.env.workload]
    model = "digits_cnn"

    [pick]                        # PickConfig: the final pick of search, baseline and transfer runs
    k = 5

    [tracking]                    # optional: where else the run is tracked
    mlflow = "file:/tmp/mlruns"

Sections per kind are :data:`SECTIONS`. Every value is type-checked against the config field it
fills, then the config classes validate themselves, so every problem is one
:class:`~haq.core.errors.ConfigError` that names the field by its dotted path
(``search.env.budget: budget ratio must be > 0, got -1``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from haq.baselines import BaselineConfig
from haq.core import config as serial
from haq.core.errors import ConfigError
from haq.hardware.build import BuildConfig
from haq.hardware.check import CheckConfig
from haq.hardware.device.settings import ProtocolConfig
from haq.problem.config import EnvConfig
from haq.runs.final_pick import PickConfig
from haq.runs.tracking import TrackingConfig
from haq.search.config import SearchConfig
from haq.transfer.config import TransferConfig

JOB_FORMAT = "haq.job"
JOB_VERSION = 1
KINDS = ("search", "baseline", "transfer", "table_build", "table_check")
HEADER = ("format", "version", "kind", "tracking")
"""Top-level keys every kind accepts besides its sections."""
RUN_KINDS = ("search", "baseline", "transfer")
"""Kinds whose job writes a run directory (episodes, checkpoints, best policy)."""


def sections(kind: str) -> dict[str, type]:
    """Section name -> config class of a job ``kind`` (in document order)."""
    table: dict[str, dict[str, type]] = {
        "search": {"search": SearchConfig, "pick": PickConfig},
        "baseline": {"baseline": BaselineConfig, "env": EnvConfig, "pick": PickConfig},
        "transfer": {"transfer": TransferConfig, "pick": PickConfig},
        "table_build": {"build": BuildConfig, "protocol": ProtocolConfig},
        "table_check": {"check": CheckConfig},
    }
    if kind not in table:
        raise ConfigError(f"kind: unknown job kind {kind!r}; choose one of {', '.join(KINDS)}")
    return table[kind]


@dataclass(frozen=True)
class Job:
    """A validated job document.

    kind: one of :data:`KINDS`.
    configs: section name -> the built config object (every section of the kind, defaults
        filled in).
    tracking: where the run is tracked besides TensorBoard (MLflow).
    """

    VERSION: ClassVar[int] = JOB_VERSION

    kind: str
    configs: Mapping[str, Any]
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)

    def section(self, name: str) -> Any:
        """One section's config object; a missing one is a bug of the caller."""
        if name not in self.configs:
            raise ConfigError(f"a {self.kind} job has no section {name!r}; it has {', '.join(self.configs)}")
        return self.configs[name]

    def to_dict(self) -> dict[str, Any]:
        """The resolved document (every field explicit), JSON-ready; :func:`parse_job` reads it back."""
        doc: dict[str, Any] = {"format": JOB_FORMAT, "version": JOB_VERSION, "kind": self.kind}
        for name, cfg in self.configs.items():
            doc[name] = _plain(serial.to_dict(cfg))
        tracking = serial.to_dict(self.tracking)
        if any(v is not None for v in tracking.values()):
            doc["tracking"] = tracking
        return doc


def parse_job(data: Any, where: str = "job") -> Job:
    """Validate a job document (a parsed TOML or JSON object) and build its configs."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be an object with kind, version and the kind's sections, got {type(data).__name__}")
    fmt = data.get("format", JOB_FORMAT)
    if fmt != JOB_FORMAT:
        raise ConfigError(f"format: expected {JOB_FORMAT!r}, got {fmt!r}")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= JOB_VERSION:
        raise ConfigError(f"version: job document version {version!r} is not supported; this haq reads versions 1..{JOB_VERSION}")
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(f"kind: a job names its kind, one of {', '.join(KINDS)}; got {kind!r}")
    classes = sections(kind)
    unknown = sorted(str(k) for k in data if k not in classes and k not in HEADER)
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: unknown section(s) of a {kind} job; valid: {', '.join([*HEADER, *classes])}")
    configs = {name: build(cls, data.get(name, {}), name) for name, cls in classes.items()}
    tracking = build(TrackingConfig, data.get("tracking", {}), "tracking")
    return Job(kind, configs, tracking)


def build(cls: type, data: Any, where: str) -> Any:
    """``cls`` from ``data`` with every value type-checked first; errors name the dotted field path."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table / object of {cls.__name__} fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(fields))}")
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    # TOML has no null: a required field that may be None is None when the document leaves it out.
    data = {**data, **{name: None for name in required if _allows_none(hints[name])}}
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"{', '.join(f'{where}.{m}' for m in missing)}: required field(s) of {cls.__name__} missing")
    checked = {name: _value(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return serial.from_dict(cls, checked, where)
    except ConfigError as exc:
        text = str(exc)
        if text.startswith(where):
            raise
        named = next((f for f in fields if text.startswith(f"{f} ")), None)
        raise ConfigError(f"{where}.{text}" if named else f"{where}: {text}") from None


def _value(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against the field's type hint (nested configs built); a mismatch names ``where``."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _value(options[0], value, where)
        return value
    if value is None:
        raise ConfigError(f"{where} must be {_describe(hint)}, got null")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__}")
        item = args[0] if args else Any
        return tuple(_value(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        _printable(value, where)
    elif hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a non-empty path string, got {value!r}")
        _printable(value, where)
        return Path(value)
    return value


def _allows_none(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _printable(text: str, where: str) -> None:
    """Names, paths and URIs are printable text (no control characters or lone surrogates)."""
    if not text.isprintable():
        raise ConfigError(f"{where} must be printable text, got {text!r}")


def _describe(hint: Any) -> str:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return f"a table of {hint.__name__} fields"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path string"}.get(hint, "set")


def _plain(value: Any) -> Any:
    """Paths as strings, so the resolved document is plain JSON / TOML."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def get_path(doc: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of a document (``search.env.table``); KeyError if absent."""
    node: Any = doc
    for part in path.split("."):
        node = node[part]
    return node


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set the value at a dotted ``path``, creating the tables on the way."""
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[last] = value


__all__ = [
    "HEADER",
    "JOB_FORMAT",
    "JOB_VERSION",
    "KINDS",
    "RUN_KINDS",
    "Job",
    "build",
    "get_path",
    "parse_job",
    "sections",
    "set_path",
]
