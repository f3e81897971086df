"""Reading haq's documents from disk without trusting them: every file a user or a run directory
hands haq (policies, run configs, episode logs, checkpoint states, cost tables, fit logs) is
read through here, so a bad one is one :class:`HaqError` line instead of a hang or a traceback.

What is refused, each with a message naming the file and what is wrong:

* anything but a regular file (``/dev/zero``, a FIFO, a directory), and files over a size cap,
  so a path can never make haq read without bound or block;
* bytes that are not UTF-8;
* invalid JSON, a key given twice in one object (JSON leaves it undefined; Python would keep the
  last one silently), nesting deeper than :data:`MAX_DEPTH` (the decoder's ``RecursionError``,
  and later recursive walks), integers longer than Python converts (its ``ValueError``).

Torch-free, like the rest of :mod:`haq.core`.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from haq.core.errors import HaqError

MAX_DOCUMENT_BYTES = 64 * 2**20
"""Default size cap of one JSON document: far above any policy, config or shipped table."""

MAX_LOG_BYTES = 2**30
"""Cap of an append-only log (``episodes.jsonl``), which grows with every episode."""

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a haq document may have (real ones stay under 8)."""


def read_bytes(path: str | Path, what: str, *, max_bytes: int = MAX_DOCUMENT_BYTES, error: type[HaqError]) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; anything else is one ``error`` line.

    The file is opened without blocking (a FIFO does not hang) and checked after opening, so
    what is checked is what is read.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"cannot read {what} {p}: it is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > max_bytes:
            raise error(f"cannot read {what} {p}: {info.st_size} bytes, more than the {_size(max_bytes)} a {what} may have")
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 2**20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise error(f"cannot read {what} {p}: it grew past the {_size(max_bytes)} a {what} may have while being read")
    return data


def read_text(path: str | Path, what: str, *, max_bytes: int = MAX_DOCUMENT_BYTES, error: type[HaqError]) -> str:
    """:func:`read_bytes` decoded as UTF-8; other bytes are one ``error`` line naming the offset."""
    data = read_bytes(path, what, max_bytes=max_bytes, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"cannot read {what} {path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            f"a {what} is UTF-8 JSON"
        ) from None


def loads(text: str | bytes, source: str, *, error: type[HaqError]) -> Any:
    """Parse one JSON document; every way it can be bad is one ``error`` line starting with ``source``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{source}: not UTF-8 text (byte 0x{text[exc.start]:02x} at offset {exc.start})") from None
    try:
        doc = json.loads(text, object_pairs_hook=_refuse_duplicates)
    except _DuplicateKey as exc:
        raise error(f"{source}: duplicate JSON key {exc.args[0]!r}; each key may appear once per object") from None
    except json.JSONDecodeError as exc:
        raise error(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise error(f"{source}: JSON nested too deeply (a haq document nests at most {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # the only other ValueError: an integer longer than Python converts
        limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
        detail = f"an integer of more than {limit} digits" if limit else f"a number that cannot be read ({exc})"
        raise error(f"{source}: {detail}; no haq document holds such a number") from None
    if _depth_exceeds(doc, MAX_DEPTH):
        raise error(f"{source}: JSON nested too deeply (a haq document nests at most {MAX_DEPTH} levels)")
    return doc


def read_json(path: str | Path, what: str, *, max_bytes: int = MAX_DOCUMENT_BYTES, error: type[HaqError]) -> Any:
    """:func:`read_text` then :func:`loads`: a haq JSON document from disk, or one ``error`` line."""
    return loads(read_text(path, what, max_bytes=max_bytes, error=error), str(path), error=error)


class _DuplicateKey(Exception):
    """Raised inside the decoder's hook; turned into the caller's error class by :func:`loads`."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _depth_exceeds(doc: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` (iterative: a deep document cannot overflow it)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n} bytes"
