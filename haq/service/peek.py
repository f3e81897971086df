"""Reading files that the service's workers may be writing at that moment: a missing, torn or
foreign file reads as empty, never as an error, because a handler that polls a running job must
answer with what is there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` if the file is missing, unreadable or not an object."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def read_message(path: Path) -> str | None:
    """The ``message`` a worker left in its result or error file, if there is one."""
    message = read_object(path).get("message")
    return str(message) if message else None


def file_stamp(path: Path) -> tuple[int, int]:
    """Modification time and size: what changes when a file is rewritten (``(0, -1)`` when absent)."""
    try:
        st = path.stat()
    except OSError:
        return (0, -1)
    return (st.st_mtime_ns, st.st_size)
