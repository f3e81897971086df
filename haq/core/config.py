"""One generic, versioned (de)serializer for haq's frozen config dataclasses.

Configs validate themselves in ``__post_init__``; this module only turns them into JSON-ready
dicts and back. Nested configs are rebuilt from their field annotations, lists become tuples
where a field is a tuple, unknown keys are refused with the valid ones named, missing keys take
the field's default. A document written by :func:`dump` carries the class's ``VERSION`` and
name; :func:`load` refuses another class or a newer version, so only known types are loaded.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

from haq.core.errors import ConfigError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config's fields as a JSON-ready dict (nested configs become dicts, tuples lists)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_dict needs a dataclass instance, got {type(cfg).__name__}")
    return {f.name: _jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def from_dict(cls: type[T], data: Any, where: str | None = None) -> T:
    """Rebuild ``cls`` from :func:`to_dict` output; every problem is one :class:`ConfigError`."""
    label = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label} must be a JSON object, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(f"{label}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, f"{label}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{label} is malformed: {exc}") from exc


def dump(cfg: Any) -> dict[str, Any]:
    """A self-describing document: ``{"kind", "version", "config"}``."""
    return {"kind": type(cfg).__name__, "version": version_of(type(cfg)), "config": to_dict(cfg)}


def load(cls: type[T], doc: Any) -> T:
    """Inverse of :func:`dump`: refuses another kind of config or a version newer than this haq knows."""
    if not isinstance(doc, Mapping) or set(doc) != {"kind", "version", "config"}:
        raise ConfigError(f"a {cls.__name__} document is an object with kind, version and config")
    if doc["kind"] != cls.__name__:
        raise ConfigError(f"expected a {cls.__name__} document, got kind {doc['kind']!r}")
    ver = doc["version"]
    if isinstance(ver, bool) or not isinstance(ver, int) or not 1 <= ver <= version_of(cls):
        raise ConfigError(f"{cls.__name__} version {ver!r} is not supported; this haq reads versions 1..{version_of(cls)}")
    return from_dict(cls, doc["config"])


def version_of(cls: type) -> int:
    """A config class's format version (``VERSION`` class attribute, default 1)."""
    return int(getattr(cls, "VERSION", 1))


def _convert(hint: Any, value: Any, where: str) -> Any:
    target = _dataclass_in(hint)
    if target is not None and isinstance(value, Mapping):
        return from_dict(target, value, where)
    if _is_tuple(hint) and isinstance(value, list):
        return tuple(value)
    return value


def _dataclass_in(hint: Any) -> type | None:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if isinstance(arg, type) and dataclasses.is_dataclass(arg):
            return arg
    return None


def _is_tuple(hint: Any) -> bool:
    if typing.get_origin(hint) is tuple:
        return True
    return any(typing.get_origin(a) is tuple for a in typing.get_args(hint))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
