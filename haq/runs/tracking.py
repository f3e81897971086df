"""Tracking a run where people already look: TensorBoard scalars under the run directory, and MLflow.

* Per episode (every proposer): :class:`EpisodeTracker` wraps the run's progress callback and
  writes ``episode/reward``, ``episode/clean_acc``, ``episode/robust_acc``, ``episode/cost``,
  ``episode/budget_used`` and ``episode/best_reward`` at step = episode into
  ``RUN_DIR/tensorboard/episodes``.
* Per update (the RL agents): :func:`agent_logger` is stable-baselines3's own logger with its
  TensorBoard output in ``RUN_DIR/tensorboard/agent``, so the agent's losses land beside them.
* :class:`MlflowRun` (``--mlflow URI``) logs the settings as params, the episode metrics and, at
  the end, the best policy and plots as artifacts; a resumed run continues the same MLflow run.

TensorBoard (``pip install tensorboard``) and MLflow (``pip install mlflow``) are optional:
without TensorBoard a run logs one line and writes no scalars; asking for MLflow without it is
a :class:`ConfigError`.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping, Sequence

from stable_baselines3.common.logger import Logger, configure

from haq.core.errors import ConfigError, RunDirError
from haq.core.fileio import atomic_write_text
from haq.core.jsonio import read_json
from haq.core.types import Log
from haq.problem.budget import Budget
from haq.runs.progress import OnProgress, Progress

TENSORBOARD_DIR = "tensorboard"
MLFLOW_RUN_FILE = "mlflow_run.json"
MLFLOW_EXPERIMENT = "haq"


@dataclass(frozen=True)
class TrackingConfig:
    """Where a run is tracked besides its run directory and TensorBoard.

    mlflow: an MLflow tracking URI (``file:/path/mlruns``, ``sqlite:///mlflow.db``,
        ``http://host:5000``); ``None`` logs nothing to MLflow.
    """

    mlflow: str | None = None

    def __post_init__(self) -> None:
        if self.mlflow is not None and (not isinstance(self.mlflow, str) or not self.mlflow.strip()):
            raise ConfigError(f"mlflow must be a tracking URI such as file:/path/mlruns, got {self.mlflow!r}")


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed by torch's SummaryWriter) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class EpisodeTracker:
    """Per-episode TensorBoard scalars of one run; a context manager that closes its writer."""

    def __init__(self, run_dir: Path, budget: Budget, log: Log | None = None) -> None:
        self.budget = budget
        self._writer: Any = None
        if tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR / "episodes"))
        elif log is not None:
            log("tensorboard is not installed; this run writes no TensorBoard scalars (pip install tensorboard)")

    def __enter__(self) -> "EpisodeTracker":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def wrap(self, progress: OnProgress | None) -> OnProgress:
        """A progress callback that records the episode, then calls ``progress``."""

        def on_progress(p: Progress) -> None:
            self.record(p)
            if progress is not None:
                progress(p)

        return on_progress

    def record(self, p: Progress) -> None:
        """Write one finished episode's scalars (step = episode)."""
        if self._writer is None:
            return
        for name, value in episode_scalars(p, self.budget).items():
            self._writer.add_scalar(f"episode/{name}", value, p.episode)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def episode_scalars(p: Progress, budget: Budget) -> dict[str, float]:
    """The numbers tracked per episode: reward, accuracies, cost in the budget metric, share of the budget used, best so far."""
    cost = p.metrics.cost(budget.metric)
    scalars = {
        "reward": p.reward,
        "clean_acc": p.metrics.clean_acc,
        "cost": cost,
        "budget_used": cost / budget.target,
        "best_reward": p.best_reward,
    }
    if p.metrics.robust_acc is not None:
        scalars["robust_acc"] = p.metrics.robust_acc
    return {k: float(v) for k, v in scalars.items()}


def quiet_logger() -> Logger:
    """A stable-baselines3 logger with no outputs: SB3's default would create an empty
    ``/tmp/SB3-*`` folder per ``learn``."""
    return Logger(folder=None, output_formats=[])


def agent_logger(run_dir: Path) -> Logger:
    """stable-baselines3's logger writing the agent's training values to TensorBoard in the run
    directory; without TensorBoard, :func:`quiet_logger`."""
    if not tensorboard_available():
        return quiet_logger()
    return configure(str(run_dir / TENSORBOARD_DIR / "agent"), ["tensorboard"])


class MlflowRun:
    """One run's MLflow record: params at the start, metrics per episode, artifacts at the end.

    The MLflow run id is kept in ``RUN_DIR/mlflow_run.json``, so a resumed run logs into the same
    MLflow run. Uses an explicit :class:`mlflow.MlflowClient` (no process-wide active run).
    """

    def __init__(self, uri: str, run_dir: Path, name: str, params: Mapping[str, Any], budget: Budget) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError("--mlflow needs the mlflow package: pip install 'haq[mlflow]' (or mlflow-skinny)")
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.budget = budget
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.run_id = self._open(run_dir, name)
            if params:
                from mlflow.entities import Param

                self.client.log_batch(self.run_id, params=[Param(k, _param(v)) for k, v in flatten(params).items()])
        except MlflowException as exc:
            raise ConfigError(f"--mlflow {uri}: {_first_line(exc)}") from None

    def _open(self, run_dir: Path, name: str) -> str:
        record = run_dir / MLFLOW_RUN_FILE
        if record.is_file():
            doc = read_json(record, "MLflow run record", error=RunDirError)
            run_id = doc.get("run_id") if isinstance(doc, dict) else None
            if isinstance(run_id, str):
                self.client.update_run(run_id, status="RUNNING")
                return run_id
        exp = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(MLFLOW_EXPERIMENT)
        run_id = str(self.client.create_run(exp_id, run_name=name).info.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps({"run_id": run_id}) + "\n")
        return run_id

    def progress(self, p: Progress) -> None:
        """Log one episode's metrics (step = episode)."""
        from mlflow.entities import Metric

        now = _millis()
        metrics = [Metric(k, v, now, p.episode) for k, v in episode_scalars(p, self.budget).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, artifacts: Sequence[Path], status: str = "FINISHED") -> None:
        """Upload the artifacts that exist and close the run with ``status`` (FINISHED or FAILED)."""
        for path in artifacts:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status=status)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``a.b.c`` keys (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _param(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, bool)) or value is None else str(value)


def _millis() -> int:
    return int(time.time() * 1000)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "MLFLOW_RUN_FILE",
    "TENSORBOARD_DIR",
    "EpisodeTracker",
    "MlflowRun",
    "TrackingConfig",
    "agent_logger",
    "quiet_logger",
    "episode_scalars",
    "flatten",
    "tensorboard_available",
]
