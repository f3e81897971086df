"""The service: a real ``haq serve`` killed with SIGKILL mid-job resumes it with a complete,
gap-free episode log; every malformed request is a 4xx naming the field; the token guards
every route but /health and the page; tables and device agents; cancelling."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service needs the 'service' extra (fastapi, uvicorn, sqlalchemy)")
pytest.importorskip("uvicorn", reason="the service needs the 'service' extra")
pytest.importorskip("sqlalchemy", reason="the service needs the 'service' extra")

from cli_helpers import weight_dtypes  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from test_service_support import HEADERS, TOKEN, ServiceProcess, alive, tiny_search, wait_for  # noqa: E402
from tls_helpers import NEEDS_OPENSSL, self_signed  # noqa: E402

import latency_tables  # noqa: E402
from haq.core.errors import ConfigError, HaqError  # noqa: E402
from haq.core.types import quiet  # noqa: E402
from haq.hardware.build import BuildConfig, build_table  # noqa: E402
from haq.hardware.device.agent import AgentConfig, DeviceAgent  # noqa: E402
from haq.hardware.device.runner import RemoteAccess  # noqa: E402
from haq.hardware.device.settings import ProtocolConfig  # noqa: E402
from haq.jobs.execute import table_backend  # noqa: E402
from haq.service.app import create_app  # noqa: E402
from haq.service.config import ServiceConfig  # noqa: E402
from haq.service.names import resolver  # noqa: E402
from haq.service.store import Store  # noqa: E402
from haq.workload import Workload  # noqa: E402

AGENT_TOKEN = "service-agent-secret-42"

EPISODES = 24


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    """The app in-process without its lifespan: no worker starts, so submitted jobs stay queued."""
    app = create_app(ServiceConfig(store=tmp_path / "store", token=TOKEN), log=lambda _m: None)
    yield TestClient(app)
    app.state.store.close()


def test_sigkill_the_service_mid_job_then_restart_resumes_without_gap(tmp_path: Path, digits_workload: Workload) -> None:
    store_dir = tmp_path / "store"
    service = ServiceProcess(store_dir).start()
    try:
        status, job = service.call("POST", "/jobs", tiny_search(EPISODES))
        assert status == 201, job
        job_id = job["id"]

        def progress() -> dict[str, Any]:
            return service.call("GET", f"/jobs/{job_id}")[1]

        wait_for("3 episodes", lambda: progress()["progress"]["episodes_done"] >= 3)
        # A worker killed while the service runs is restarted and resumes.
        worker = Store(store_dir).job(job_id)
        assert worker is not None and worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        wait_for("a second worker", lambda: progress()["attempts"] >= 2 and progress()["state"] == "running")
        before = progress()["progress"]["episodes_done"]
        wait_for("the restarted worker's episodes", lambda: progress()["progress"]["episodes_done"] >= before + 2)
        snapshot = progress()
        assert snapshot["state"] == "running" and snapshot["progress"]["evaluations_per_minute"] > 0
        assert snapshot["progress"]["eta_seconds"] is not None and snapshot["progress"]["best_reward"] is not None
        running = Store(store_dir).job(job_id)
        assert running is not None and running.pid is not None
        service.kill()
        wait_for("the worker to die with the service", lambda: not alive(running.pid), timeout=15)
        killed_at = len((store_dir / "jobs" / job_id / "run" / "episodes.jsonl").read_text().splitlines())
        assert killed_at < EPISODES, "the job finished before the service was killed; make it longer"

        service.start()
        done = wait_for(
            "the resumed job to finish", lambda: (p := progress())["state"] in ("finished", "failed") and p, timeout=180
        )
        assert done["state"] == "finished", done["message"]
        lines = (store_dir / "jobs" / job_id / "run" / "episodes.jsonl").read_text().splitlines()
        assert [json.loads(line)["episode"] for line in lines] == list(range(EPISODES))
        status, page = service.call("GET", f"/jobs/{job_id}/episodes?offset=20&limit=10")
        assert status == 200 and page["total"] == EPISODES and [e["episode"] for e in page["episodes"]] == [20, 21, 22, 23]
        status, best = service.call("GET", f"/jobs/{job_id}/best")
        assert status == 200 and set(best["layers"]) == set(done["layers"])
        status, final = service.call("GET", f"/jobs/{job_id}/final")
        assert status == 200 and set(final["layers"]) == set(done["layers"])
        status, pick = service.call("GET", f"/jobs/{job_id}/final/pick")
        assert status == 200 and pick["format"] == "haq.final_pick" and 0 <= pick["episode"] < EPISODES
        assert (store_dir / "jobs" / job_id / "run" / "job.toml").is_file()
        status, onnx = service.call("GET", f"/jobs/{job_id}/onnx")  # exported by a worker process on request
        assert status == 200 and weight_dtypes(onnx) == {np.dtype(np.uint8)}  # Bit Fusion prices no container
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([1, 2], "body"),
        ({"kind": "search"}, "version"),
        ({"version": 1, "kind": "training"}, "kind"),
        ({"version": 1, "kind": "search", "serch": {}}, "serch"),
        ({"version": 1, "kind": "search", "search": {"episodes": 0}}, "episodes"),
        ({"version": 1, "kind": "search", "search": {"episodes": "ten"}}, "search.episodes"),
        ({"version": 1, "kind": "search", "search": {"env": {"budget": {"ratio": -0.5}}}}, "ratio"),
        ({"version": 1, "kind": "search", "search": {"env": {"table": "no-such-table"}}}, "search.env.table"),
        ({"version": 1, "kind": "search", "search": {"env": {"workload": {"model": "os:system"}}}}, "search.env.workload.model"),
        ({"version": 1, "kind": "search", "search": {"agent": {"algo": "dqn"}}}, "agent"),
        ({"version": 1, "kind": "search", "search": {"agent": {"hidden": [64, "x"]}}}, "search.agent.hidden[1]"),
        ({"version": 1, "kind": "baseline", "baseline": {"method": "magic"}}, "baseline method"),
        ({"version": 1, "kind": "transfer", "transfer": {"table": "bitfusion"}}, "transfer.source"),
        ({"version": 1, "kind": "transfer", "transfer": {"source": "/etc", "table": "bitfusion"}}, "transfer.source"),
        ({"version": 1, "kind": "table_build", "build": {"models": ["digits_cnn"], "device": "bitfusion"}}, "build.out"),
        (
            {"version": 1, "kind": "table_build", "build": {"models": ["digits_cnn"], "device": "bitfusion", "out": "../x.json"}},
            "build.out",
        ),
        (
            {
                "version": 1,
                "kind": "table_build",
                "build": {"models": ["digits_cnn"], "device": "remote://10.0.0.1:1", "out": "t.json"},
            },
            "build.device",
        ),
        (
            {
                "version": 1,
                "kind": "table_check",
                "check": {
                    "model": "digits_cnn",
                    "table": "bitfusion",
                    "save": "/tmp/x.json",
                    "n": 5,
                    "sessions": 1,
                    "seed": 0,
                    "rescore": None,
                },
            },
            "check.save",
        ),
        ({"version": 1, "kind": "search", "tracking": {"mlflow": ""}}, "mlflow"),
    ],
)
def test_malformed_documents_are_refused_with_the_field_named(client: TestClient, doc: Any, field: str) -> None:
    r = client.post("/jobs", json=doc, headers=HEADERS)
    assert 400 <= r.status_code < 500, r.text
    assert field in r.json()["detail"], r.json()
    assert client.get("/jobs", headers=HEADERS).json()["jobs"] == []


def test_body_that_is_not_json_or_too_large_is_a_4xx(client: TestClient) -> None:
    bad = client.post("/jobs", content=b"{not json", headers={**HEADERS, "content-type": "application/json"})
    assert bad.status_code == 422 and "body" in bad.json()["detail"]
    huge = client.post("/jobs", content=b"{" + b" " * 70_000 + b"}", headers={**HEADERS, "content-type": "application/json"})
    assert huge.status_code == 413 and "body" in huge.json()["detail"]
    page = client.get("/jobs/0123456789abcdef/episodes?limit=0", headers=HEADERS)
    assert page.status_code == 422 and "limit" in page.json()["detail"]
    assert client.get("/jobs/not-a-job", headers=HEADERS).status_code == 422
    assert client.get("/jobs/0123456789abcdef", headers=HEADERS).status_code == 404


def test_token_guards_every_route_but_health_and_the_page(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "haq service" in page.text and "Content-Security-Policy" in page.headers
    for method, path in [
        ("GET", "/jobs"),
        ("POST", "/jobs"),
        ("GET", "/tables"),
        ("GET", "/agents"),
        ("GET", "/jobs/0123456789abcdef/onnx"),
        ("PUT", "/tables/x"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}, {"Authorization": f"Basic {TOKEN}"}):
            r = client.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.headers.get("www-authenticate") == "Bearer"
    schema = client.get("/openapi.json").json()
    assert "/jobs" in schema["paths"] and "HTTPBearer" in schema["components"]["securitySchemes"]


def test_queued_job_is_listed_with_its_document_and_can_be_cancelled(client: TestClient) -> None:
    r = client.post("/jobs", json=tiny_search(5), headers=HEADERS)
    assert r.status_code == 201
    job = r.json()
    assert job["state"] == "queued" and job["progress"]["episodes_total"] == 5 and job["progress"]["episodes_done"] == 0
    doc = client.get(f"/jobs/{job['id']}/document", headers=HEADERS).json()
    assert doc["kind"] == "search" and doc["search"]["episodes"] == 5 and doc["search"]["env"]["table"] == "bitfusion"
    toml = client.get(f"/jobs/{job['id']}/document?format=toml", headers=HEADERS).text
    assert 'kind = "search"' in toml
    assert client.get(f"/jobs/{job['id']}/best", headers=HEADERS).status_code == 404
    missing = client.get(f"/jobs/{job['id']}/final", headers=HEADERS)
    assert missing.status_code == 404 and "no final pick" in missing.text
    assert client.get(f"/jobs/{job['id']}/plots/bits", headers=HEADERS).status_code == 404
    cancelled = client.post(f"/jobs/{job['id']}/cancel", headers=HEADERS).json()
    assert cancelled["state"] == "cancelled"
    assert client.post(f"/jobs/{job['id']}/cancel", headers=HEADERS).status_code == 409


def test_tables_upload_is_validated_and_usable_by_jobs(client: TestClient) -> None:
    names = [t["name"] for t in client.get("/tables", headers=HEADERS).json()["tables"]]
    assert set(latency_tables.available()) <= set(names)
    bad = client.put("/tables/mine", content=b'{"format": "nope"}', headers={**HEADERS, "content-type": "application/json"})
    assert bad.status_code == 422 and "body" in bad.json()["detail"]
    good = latency_tables.path_of("bitfusion").read_bytes()
    r = client.put("/tables/mine", content=good, headers={**HEADERS, "content-type": "application/json"})
    assert r.status_code == 201, r.text
    assert client.put("/tables/mine", content=good, headers={**HEADERS, "content-type": "application/json"}).status_code == 409
    assert (
        client.put("/tables/bitfusion", content=good, headers={**HEADERS, "content-type": "application/json"}).status_code == 409
    )
    listed = {t["name"]: t for t in client.get("/tables", headers=HEADERS).json()["tables"]}
    assert listed["mine"]["source"] == "store"
    assert client.get("/tables/mine", headers=HEADERS).content == good
    doc = tiny_search(3)
    doc["search"]["env"]["table"] = "mine"
    assert client.post("/jobs", json=doc, headers=HEADERS).status_code == 201


def test_agents_keep_their_token_server_side(client: TestClient) -> None:
    r = client.put("/agents/board1", json={"host": "127.0.0.1", "port": 8765, "token": "agent-secret-123"}, headers=HEADERS)
    assert r.status_code == 201 and "token" not in r.json()
    listed = client.get("/agents", headers=HEADERS)
    assert listed.json()["agents"][0]["name"] == "board1" and "agent-secret-123" not in listed.text
    short = client.put("/agents/board2", json={"host": "127.0.0.1", "port": 8765, "token": "x"}, headers=HEADERS)
    assert short.status_code == 422 and "token" in short.json()["detail"]
    bad_port = client.put("/agents/board2", json={"host": "127.0.0.1", "port": 0, "token": "long-enough"}, headers=HEADERS)
    assert bad_port.status_code == 422 and "port" in bad_port.json()["detail"]
    build = {
        "version": 1,
        "kind": "table_build",
        "build": {"models": ["digits_cnn"], "device": "agent:board1", "out": "board1.json"},
    }
    assert client.post("/jobs", json=build, headers=HEADERS).status_code == 201
    build["build"]["device"] = "agent:nobody"
    refused = client.post("/jobs", json=build, headers=HEADERS)
    assert refused.status_code == 422 and "build.device" in refused.json()["detail"]
    assert client.delete("/agents/board1", headers=HEADERS).status_code == 200
    assert client.delete("/agents/board1", headers=HEADERS).status_code == 404


def test_serve_refuses_to_start_without_a_long_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HAQ_SERVICE_TOKEN"):
        ServiceConfig(store=tmp_path, token="short")
    with pytest.raises(ConfigError, match="HAQ_SERVICE_TOKEN"):
        ServiceConfig(store=tmp_path, token="sixteen chars but blank")
    env = {k: v for k, v in os.environ.items() if k != "HAQ_SERVICE_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "haq.cli", "serve", "--store", str(tmp_path / "s"), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "HAQ_SERVICE_TOKEN" in done.stderr


@NEEDS_OPENSSL
def test_the_service_builds_through_a_registered_agent_serving_tls(tmp_path: Path) -> None:
    """A table build's ``agent:NAME`` device reaches the agent with the certificate it was registered with."""
    cert, key = self_signed(tmp_path, "agent")
    cfg = AgentConfig(host="127.0.0.1", port=0, token=AGENT_TOKEN, timeout_s=60.0, io_timeout_s=5.0, tls_cert=cert, tls_key=key)
    store = Store(tmp_path / "store")
    try:
        with DeviceAgent(cfg).start() as tls_agent:
            host, port = tls_agent.address
            store.add_agent("board", host, port, AGENT_TOKEN, Path(cert).read_text())
            protocol = ProtocolConfig(sessions=1, repeats=3, warmup_runs=1, warmup_s=0.0, min_repeat_ms=0.2, max_retries=0)
            backend = table_backend("agent:board", protocol, resolver(store), None)
            build = BuildConfig(("digits_mlp",), "agent:board", tmp_path / "board.json")
            report = build_table(build, lambda: backend, quiet)
            assert report.added > 0 and report.path.is_file()
            store.add_agent("board", host, port, AGENT_TOKEN)  # re-registered without TLS: plain TCP fails
            with pytest.raises(HaqError):
                build_table(
                    dataclasses.replace(build, out=tmp_path / "plain.json"),
                    lambda: table_backend("agent:board", protocol, resolver(store), None),
                    quiet,
                )
    finally:
        store.close()


@NEEDS_OPENSSL
def test_an_agent_registered_with_a_certificate_keeps_it_privately(client: TestClient, tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "board")
    pem = Path(cert).read_text()
    board = {"host": "127.0.0.1", "port": 8765, "token": AGENT_TOKEN}
    bad = client.put("/agents/board1", json={**board, "tls_ca": "not a pem"}, headers=HEADERS)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("tls_ca:")
    r = client.put("/agents/board1", json={**board, "tls_ca": pem}, headers=HEADERS)
    assert r.status_code == 201 and r.json()["tls"] is True and pem not in r.text
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    kept = Path(str(store.agent("board1").tls_ca))  # type: ignore[union-attr]
    assert kept.read_text() == pem and kept.stat().st_mode & 0o777 == 0o600
    assert resolver(store).device("agent:board1")[1] == RemoteAccess(AGENT_TOKEN, str(kept))
    plain = client.put("/agents/board1", json=board, headers=HEADERS)
    assert plain.json()["tls"] is False and not kept.exists()
    client.put("/agents/board1", json={**board, "tls_ca": pem}, headers=HEADERS)
    assert client.delete("/agents/board1", headers=HEADERS).status_code == 200 and not kept.exists()
