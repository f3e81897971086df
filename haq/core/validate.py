"""Validators for config fields: each raises :class:`ConfigError` with a message naming the field,
the value it got and what is valid."""

from __future__ import annotations

import math
from typing import Any, Collection

from haq.core.errors import ConfigError


def finite(name: str, value: Any, low: float | None = None, high: float | None = None) -> None:
    """A real number (not a bool), finite, within ``[low, high]`` when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high}, got {value}")


def positive(name: str, value: Any) -> None:
    """A finite number > 0."""
    finite(name, value)
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def unit_interval(name: str, value: Any, *, open_low: bool = True, open_high: bool = False) -> None:
    """A finite number in (0, 1] by default; the ends' openness is selectable."""
    finite(name, value)
    lo_ok = value > 0 if open_low else value >= 0
    hi_ok = value < 1 if open_high else value <= 1
    if not (lo_ok and hi_ok):
        interval = ("(" if open_low else "[") + "0, 1" + (")" if open_high else "]")
        raise ConfigError(f"{name} must be in {interval}, got {value}")


def count(name: str, value: Any, low: int = 1, high: int | None = None) -> None:
    """An integer (not a bool) >= ``low`` (and <= ``high`` when given)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be an integer <= {high}, got {value}")


def choice(name: str, value: Any, valid: Collection[str]) -> None:
    """One of a fixed set of names."""
    if value not in valid:
        raise ConfigError(f"unknown {name} '{value}'; choose one of {', '.join(valid)}")
