"""Typed access to decoded JSON that fails with one line naming the file and the field.

Used by the cost table validator (:mod:`haq.tables.schema`): every problem is reported as
``<file>: field '<path>': <problem>`` so a user can find and fix it without a traceback.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NoReturn, Sequence

from haq.core.errors import TableError
from haq.core.types import BitPair
from haq.quant.primitives import FLOAT_BITS, MAX_BITS, MIN_BITS

SOURCES = ("measured", "analytical", "emulated")


class FieldReader:
    """Typed field access for one file; every check fails with ``<file>: field '<path>': <problem>``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str) -> NoReturn:
        raise TableError(f"{self.source}: field '{path}': {problem}")

    def obj(self, v: Any, path: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            self.fail(path, f"must be a JSON object, got {_kind(v)}")
        return v

    def keys(self, v: Mapping[str, Any], path: str, required: Sequence[str], optional: Sequence[str] = ()) -> None:
        for k in required:
            if k not in v:
                self.fail(f"{path}.{k}" if path != "(top level)" else k, "is missing")
        unknown = sorted(set(v) - set(required) - set(optional))
        if unknown:
            where = f"{path}.{unknown[0]}" if path != "(top level)" else unknown[0]
            self.fail(where, f"is not part of the format (allowed: {', '.join((*required, *optional))})")

    def string(self, v: Any, path: str, empty_ok: bool = False) -> str:
        if not isinstance(v, str) or (not empty_ok and not v):
            self.fail(path, f"must be a {'' if empty_ok else 'non-empty '}string, got {_kind(v)}")
        return v

    def integer(self, v: Any, path: str, lo: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(path, f"must be an integer >= {lo}, got {_kind(v)}")
        if v < lo:
            self.fail(path, f"must be >= {lo}, got {v}")
        return v

    def number(self, v: Any, path: str, positive: bool) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(path, f"must be a number, got {_kind(v)}")
        x = float(v)
        if not math.isfinite(x):
            self.fail(path, f"must be finite, got {v}")
        if positive and x <= 0:
            self.fail(path, f"must be > 0, got {v}")
        if not positive and x < 0:
            self.fail(path, f"must be >= 0, got {v}")
        return x

    def finite(self, v: Any, path: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            self.fail(path, f"must be a finite number, got {v!r}")
        return float(v)

    def bits(self, v: Any, path: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not (v == FLOAT_BITS or MIN_BITS <= v <= MAX_BITS):
            self.fail(path, f"must be an integer in {MIN_BITS}..{MAX_BITS} or {FLOAT_BITS} (float), got {v!r}")
        return v

    def pair(self, v: Any, path: str) -> BitPair:
        if not isinstance(v, list) or len(v) != 2:
            self.fail(path, f"must be [w_bits, a_bits], got {v!r}")
        return (self.bits(v[0], f"{path}[0]"), self.bits(v[1], f"{path}[1]"))

    def boolean(self, v: Any, path: str) -> bool:
        if not isinstance(v, bool):
            self.fail(path, f"must be true or false, got {_kind(v)}")
        return v

    def source_kind(self, v: Any, path: str) -> str:
        if v not in SOURCES:
            self.fail(path, f"must be one of {', '.join(SOURCES)}, got {v!r}")
        return v

    def array(self, v: Any, path: str) -> list[Any]:
        if not isinstance(v, list):
            self.fail(path, f"must be a JSON array, got {_kind(v)}")
        return v


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean {str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"number {v}"
    if isinstance(v, str):
        return f"string {v!r}" if len(v) < 40 else "a string"
    return {"dict": "an object", "list": "an array"}.get(type(v).__name__, type(v).__name__)
