"""The service's API fuzzed from its own OpenAPI schema (schemathesis): no request, however
malformed, makes it answer 5xx, and it still answers afterwards."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the API fuzz test needs schemathesis (the 'test' extra)")
pytest.importorskip("fastapi", reason="the service needs the 'service' extra (fastapi, uvicorn, sqlalchemy)")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from test_service_support import HEADERS, TOKEN  # noqa: E402

from haq.service.app import create_app  # noqa: E402
from haq.service.config import ServiceConfig  # noqa: E402

EXAMPLES = 25
"""Examples per operation: enough to reach every field's validation, small enough for a 2-core box."""


STORE = Path(tempfile.mkdtemp(prefix="haq-fuzz-")) / "store"
APP = create_app(ServiceConfig(store=STORE, token=TOKEN), log=lambda _m: None)
"""The app on a fresh store, without its lifespan (no worker starts; a valid job stays queued).
Built at import because schemathesis parametrizes from a schema object; removed by :func:`_cleanup`."""
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    APP.state.store.close()
    shutil.rmtree(STORE.parent, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_a_server_error(case: Any) -> None:
    response = case.call(headers=HEADERS)
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500


def test_service_still_answers_after_fuzzing() -> None:
    client = TestClient(APP)
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/jobs", headers=HEADERS).status_code == 200
    assert client.get("/tables", headers=HEADERS).status_code == 200
