"""Writing a damaged cost table and reading the one error line loading it gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from haq.core.errors import TableError
from haq.tables.table import load_table


def load_error(doc: dict[str, Any], path: Path) -> str:
    """Write ``doc`` to ``path``, load it as a table, and return the single-line error it must give."""
    path.write_text(json.dumps(doc))
    with pytest.raises(TableError) as info:
        load_table(path)
    message = str(info.value)
    assert "\n" not in message
    return message
