"""A run's results: its best and final policies, the final pick's evidence, its plots (drawn on
request, redrawn when a log changes) and its best policy as QDQ ONNX (exported on request in a
worker process, again when the best policy changes)."""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response

from haq.core.errors import HaqError
from haq.core.fileio import atomic_write_text
from haq.jobs.document import RUN_KINDS
from haq.plots import plot_run
from haq.runs.final_pick import PICK_FILE, POLICY_FILE
from haq.runs.rundir import BEST_FILE, RunDir, best_of
from haq.service.config import ServiceConfig
from haq.service.peek import file_stamp, read_message, read_object
from haq.service.routes.shared import JobId, Service
from haq.service.store import Store
from haq.service.views import related_baselines
from haq.service.worker import EXPORT_ERROR_FILE, ONNX_FILE, ONNX_STAMP
from haq.service.workers import WORKER_MODULE

PLOTS_DIR = "plots"
NO_PICK = "no final pick (made when the run finishes, unless its [pick] k is 0)"


class Figure(str, enum.Enum):
    """The PNG figures of a run (``haq plot``)."""

    reward = "reward"
    accuracy_vs_cost = "accuracy_vs_cost"
    bits = "bits"


def result_routes(service: Service) -> APIRouter:
    """The routes under ``/jobs/{job_id}`` that hand out a run's results."""
    api = APIRouter()
    store, runs = service.store, service.runs
    plot_lock = threading.Lock()
    export_lock = threading.Lock()

    def run_file(job_id: str, name: str, missing: str) -> Response:
        """A JSON file of the job's run directory, or a 404 that says why it is not there."""
        info = service.job_or_404(job_id)
        path = store.run_dir(info.id) / name
        if info.kind not in RUN_KINDS or not path.is_file():
            raise HTTPException(404, f"job_id: job {info.id} has {missing}")
        return FileResponse(path, media_type="application/json")

    @api.get("/jobs/{job_id}/best", tags=["results"], summary="the best policy so far (haq.policy JSON)")
    def get_best(job_id: JobId) -> Response:
        return run_file(job_id, BEST_FILE, "no best policy yet")

    @api.get(
        "/jobs/{job_id}/final",
        tags=["results"],
        summary="the policy to deploy: the final pick's choice, re-scored on held-out images (haq.policy JSON)",
    )
    def get_final(job_id: JobId) -> Response:
        return run_file(job_id, POLICY_FILE, NO_PICK)

    @api.get("/jobs/{job_id}/final/pick", tags=["results"], summary="the final pick's evidence (haq.final_pick JSON)")
    def get_final_pick(job_id: JobId) -> Response:
        return run_file(job_id, PICK_FILE, NO_PICK)

    @api.get(
        "/jobs/{job_id}/plots/{figure}",
        tags=["results"],
        summary="a PNG of the run (haq plot), baselines overlaid",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def get_plot(figure: Figure, job_id: JobId) -> Response:
        info = service.job_or_404(job_id)
        run_dir = store.run_dir(info.id)
        if info.kind not in RUN_KINDS or not runs.records(run_dir):
            raise HTTPException(404, f"job_id: job {info.id} has no finished episode to plot yet")
        baselines = [store.run_dir(b) for b in related_baselines(store, info) if runs.records(store.run_dir(b))]
        out = store.job_dir(info.id) / PLOTS_DIR
        stamp = json.dumps([file_stamp(RunDir(d).episodes_path) for d in (run_dir, *baselines)])
        with plot_lock:
            stamp_file = out / "stamp.json"
            if not (stamp_file.is_file() and stamp_file.read_text() == stamp and (out / f"{figure.value}.png").is_file()):
                try:
                    plot_run(run_dir, baselines, out)
                except HaqError as exc:
                    raise HTTPException(404, f"figure: {exc}") from None
                atomic_write_text(stamp_file, stamp)
            data = (out / f"{figure.value}.png").read_bytes()
        return Response(data, media_type="image/png")

    @api.get(
        "/jobs/{job_id}/onnx",
        tags=["results"],
        summary="the best policy exported as QDQ ONNX (made on first request)",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def get_onnx(job_id: JobId) -> Response:
        info = service.job_or_404(job_id)
        run_dir = store.run_dir(info.id)
        best = best_of(runs.records(run_dir)) if info.kind in RUN_KINDS else None
        if best is None:
            raise HTTPException(404, f"job_id: job {info.id} has no best policy to export yet")
        job_dir = store.job_dir(info.id)
        with export_lock:
            if _stamped_episode(job_dir / ONNX_STAMP) != best.episode:
                _export(service.cfg, store, info.id)
            data = (job_dir / ONNX_FILE).read_bytes()
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{info.id}-best.onnx"'},
        )

    return api


def _export(cfg: ServiceConfig, store: Store, job_id: str) -> None:
    """Export in a worker process (it loads the model), bounded by ``export_timeout_s``."""
    cmd = [sys.executable, "-m", WORKER_MODULE, "--store", str(store.root), "--parent", str(os.getpid()), "--export", job_id]
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=cfg.export_timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HTTPException(504, f"exporting job {job_id} took longer than {cfg.export_timeout_s:g} s") from None
    if done.returncode != 0:
        message = read_message(store.job_dir(job_id) / EXPORT_ERROR_FILE) or f"exit code {done.returncode}"
        raise HTTPException(409, f"job_id: the best policy of job {job_id} cannot be exported: {message}")


def _stamped_episode(path: Path) -> int | None:
    value = read_object(path).get("episode")
    return value if isinstance(value, int) else None
