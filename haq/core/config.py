"""One generic, versioned (de)serializer for haq's frozen config dataclasses.

Configs validate themselves in ``__post_init__``; this module only turns them into JSON-ready
dicts and back. Nested configs are rebuilt from their field annotations, lists become tuples
where a field is a tuple, unknown keys are refused with the valid ones named, missing keys take
the field's default. A document written by :func:`dump` carries the class's ``VERSION`` and
name; :func:`load` refuses another class or a newer version, so only known types are loaded.

A stored document (a run's ``config.json``) that lacks a field was written by a haq that did not
have it. Where today's default would change what such a run did, the field says what its absence
meant (:func:`absent_means`), and stored documents are read with that (``from_dict(...,
stored=True)``, :func:`fill_absent`), so an older run resumes as it ran. A document a person
writes (a job's TOML) still gets the default.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

from haq.core.errors import ConfigError

T = TypeVar("T")
ABSENT = "haq.absent"
"""The field-metadata key :func:`absent_means` sets."""


def absent_means(value: Any) -> dict[str, Any]:
    """Field metadata (``field(default=..., metadata=absent_means(v))``) for a field whose absence
    from a stored document means ``v``: what the haq that wrote it did before the field existed."""
    return {ABSENT: value}


def fill_absent(current: Any, stored: Any) -> Any:
    """``stored`` (a stored document of ``current``'s kind, as :func:`to_dict` wrote it then) with
    each field it lacks that says what its absence meant (:func:`absent_means`) filled in, nested
    configs too; ``current`` (a config, or a mapping of them) names the fields."""
    if not isinstance(stored, Mapping):
        return stored
    if dataclasses.is_dataclass(current) and not isinstance(current, type):
        filled = dict(stored)
        for f in dataclasses.fields(current):
            if f.name in filled:
                filled[f.name] = fill_absent(getattr(current, f.name), filled[f.name])
            elif ABSENT in f.metadata:
                filled[f.name] = jsonable(f.metadata[ABSENT])
        return filled
    if isinstance(current, Mapping):
        return {k: fill_absent(current[k], v) if k in current else v for k, v in stored.items()}
    return stored


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config's fields as a JSON-ready dict (nested configs become dicts, tuples lists)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_dict needs a dataclass instance, got {type(cfg).__name__}")
    return {f.name: jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def from_dict(cls: type[T], data: Any, where: str | None = None, *, stored: bool = False) -> T:
    """Rebuild ``cls`` from :func:`to_dict` output; every problem is one :class:`ConfigError`.
    ``stored``: ``data`` was stored by a haq (perhaps an older one), so a field it lacks takes what
    its absence meant (:func:`absent_means`) where the field says, not the default."""
    label = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label} must be a JSON object, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(f"{label}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, f"{label}.{name}", stored) for name, value in data.items()}
    if stored:
        for name, f in known.items():
            if name not in data and ABSENT in f.metadata:
                kwargs[name] = f.metadata[ABSENT]
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


def _convert(hint: Any, value: Any, where: str, stored: bool) -> Any:
    target = _dataclass_in(hint)
    if target is not None and isinstance(value, Mapping):
        return from_dict(target, value, where, stored=stored)
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


def jsonable(value: Any) -> Any:
    """``value`` as JSON holds it: configs (nested in mappings and sequences too) as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
