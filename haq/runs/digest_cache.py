"""Figures kept between runs as files named by a digest of what determines them (the sensitivity
estimates, the chosen DQ fine-tune rates): one file per key in one directory of the cache.

Best effort both ways, since such a cache only saves time: an unreadable file is named in the log
and the figure made again (then replaced), and a directory that cannot be written loses the
entry, not the run. Files appear by atomic rename, so two runs making the same figure at once
both read whole files and write the same figures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, TypeVar

from haq.core.errors import HaqError, InternalError
from haq.core.types import Log

KEY = re.compile(r"[0-9a-f]{32}")
"""What a cache key is (a digest's first 32 hex digits): a file's name, never a path."""
T = TypeVar("T")


@dataclass(frozen=True)
class Kept:
    """How a cache names what it keeps in its log lines: ``what`` (``sensitivity``), the thing kept
    (``the sensitivity estimate``) and what happens when a file cannot be read (``estimating it again``)."""

    what: str
    thing: str
    again: str


class DigestCache(Generic[T]):
    """Values of one kind as files in ``directory``, one per key, read and written by ``read`` / ``write``."""

    def __init__(
        self, directory: Path, kept: Kept, read: Callable[[Path], T], write: Callable[[Path, T], None], log: Log | None = None
    ) -> None:
        self.directory = directory
        self.kept = kept
        self._read, self._write = read, write
        self.log = log

    def path(self, key: str) -> Path:
        """The file of ``key`` (a digest, checked: a key never names a path)."""
        if not KEY.fullmatch(key):
            raise InternalError(f"{self.kept.what} cache key {key!r} is not a 32-digit hex digest")
        return self.directory / f"{key}.json"

    def get(self, key: str) -> T | None:
        """The value kept under ``key``, or ``None`` (absent or unreadable, which is logged)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return self._read(path)
        except HaqError as exc:
            if self.log:
                self.log(f"warning: ignoring the cached {self.kept.what} ({exc}); {self.kept.again}")
            return None

    def put(self, key: str, value: T) -> None:
        """Keep ``value`` under ``key``; a failure to write is logged, not raised."""
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write(path, value)
        except OSError as exc:
            if self.log:
                self.log(f"warning: could not keep {self.kept.thing} in {path.parent} ({exc.strerror or exc}); it is not reused")


__all__ = ["KEY", "DigestCache", "Kept"]
