"""Cost tables: list the tables the service knows, hand one out, and take an upload (validated by
the table loader before it is moved into place)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse

import latency_tables
from haq.core.errors import HaqError
from haq.core.fileio import atomic_write_bytes
from haq.service.names import known_tables
from haq.service.routes.shared import Name, Service
from haq.service.store import Store
from haq.service.views import RunCache, table_source
from haq.tables.table import load_table


def table_routes(service: Service) -> APIRouter:
    """The routes under ``/tables``."""
    api = APIRouter()
    store, runs = service.store, service.runs

    @api.get("/tables", tags=["tables"], summary="the tables the service knows: shipped, uploaded and built")
    def list_tables() -> dict[str, Any]:
        tables = known_tables(store).items()
        return {"tables": [runs.table_summary(name, path, table_source(store, path)) for name, path in tables]}

    @api.get("/tables/{name}", tags=["tables"], summary="one table file")
    def get_table(name: Name) -> FileResponse:
        path = known_tables(store).get(name)
        if path is None:
            raise HTTPException(404, f"name: no table {name!r}")
        return FileResponse(path, media_type="application/json")

    @api.put(
        "/tables/{name}",
        status_code=201,
        tags=["tables"],
        summary="upload a table (validated by the table loader)",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    async def put_table(
        request: Request, name: Name, replace: bool = Query(False, description="replace an uploaded table of that name")
    ) -> dict[str, Any]:
        body = await request.body()
        return _store_table(store, runs, name, body, replace)

    return api


def _store_table(store: Store, runs: RunCache, name: str, body: bytes, replace: bool) -> dict[str, Any]:
    """Validate an uploaded table with the table loader, then move it into place."""
    if name in latency_tables.available():
        raise HTTPException(409, f"name: {name!r} is a shipped table; upload under another name")
    final = store.tables_dir / f"{name}.json"
    if final.exists() and not replace:
        raise HTTPException(409, f"name: a table {name!r} exists; pass replace=true to replace it")
    tmp = store.tables_dir / ".incoming" / f"{name}.json"
    atomic_write_bytes(tmp, body)
    try:
        table = load_table(tmp, name)
    except HaqError as exc:
        tmp.unlink(missing_ok=True)
        raise HTTPException(422, f"body: not a valid cost table: {exc}") from None
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        tmp.unlink(missing_ok=True)
        raise HTTPException(422, f"body: not a valid cost table ({type(exc).__name__})") from None
    tmp.replace(final)
    return runs.table_summary(name, final, "store") | {"device": table.device}
