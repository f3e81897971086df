"""``--config JOB_FILE`` and ``--mlflow URI`` on the run commands: a job document, with flags over it.

:func:`add_job_args` is called by a command's ``register`` after its other arguments. It marks
every flag's default, so that :func:`resolve_job` can tell a flag the user typed from one left
alone: with ``--config`` the document gives the settings and only typed flags replace them (at
the document paths in :data:`FLAG_PATHS`); without it the command's own configs, built from the
flags as before, make the job. Either way the command gets one validated
:class:`~haq.jobs.document.Job`, which its run directory stores.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Mapping

from haq.core.errors import ConfigError
from haq.jobs.document import Job, parse_job, set_path
from haq.jobs.files import read_job_file
from haq.runs.tracking import TrackingConfig

_ENV_PATHS: dict[str, tuple[str, ...]] = {
    "model": ("env.workload.model",),
    "dataset": ("env.workload.dataset",),
    "data_root": ("env.workload.data_root",),
    "checkpoint": ("env.workload.checkpoint",),
    "loader_workers": ("env.workload.workers",),
    "train_epochs": ("env.workload.train_epochs",),
    "finetune_epochs": ("env.workload.finetune_epochs",),
    "input_size": ("env.workload.input_size",),
    "input_shape": ("env.workload.input_shape",),
    "torch_device": ("env.torch_device",),
    "device": ("env.table",),
    "budget": ("env.budget.ratio",),
    "budget_absolute": ("env.budget.absolute",),
    "metric": ("env.budget.metric",),
    "min_bits": ("env.min_bits",),
    "max_bits": ("env.max_bits",),
    "pin_first_last": ("env.pin_first_last",),
    "evaluator": ("env.evaluation.kind",),
    "hardware_feedback": ("env.evaluation.hardware_feedback",),
    "finetune_lrs": ("env.evaluation.finetune_lrs",),
}

_PICK_PATHS = {
    "pick": ("pick.k",),
    "select_samples": ("pick.select_samples",),
    "promote": ("pick.promote",),
    "report_seeds": ("pick.report_seeds",),
    "pick_repeats": ("pick.repeats",),
    "pick_defer": ("pick.defer",),
    "select_seeds": ("pick.select_seeds",),
}
"""The final pick's flags (search, baseline and transfer jobs)."""

FLAG_PATHS: dict[str, dict[str, tuple[str, ...]]] = {
    "search": {
        **{dest: tuple(f"search.{p}" for p in paths) for dest, paths in _ENV_PATHS.items()},
        "seed": ("search.seed", "search.env.workload.seed"),
        "episodes": ("search.episodes",),
        "agent": ("search.agent.algo",),
        "warmup": ("search.agent.warmup_episodes",),
        "prior_rungs": ("search.agent.prior_rungs",),
        "decision": ("search.agent.decision",),
        "redraws": ("search.agent.redraws",),
        "redraw_from": ("search.agent.redraw_from",),
        "prior_decision": ("search.agent.prior_decision",),
        "action_prior": ("search.env.action_prior",),
        "observation": ("search.env.observation",),
        "projection": ("search.env.projection",),
        **_PICK_PATHS,
    },
    "baseline": {
        **_ENV_PATHS,
        "seed": ("baseline.seed", "env.workload.seed"),
        "method": ("baseline.method",),
        "evaluations": ("baseline.evaluations",),
        "ladder_floor": ("baseline.ladder_floor",),
        "sensitivity_samples": ("baseline.sensitivity.samples",),
        "sensitivity": ("baseline.sensitivity.estimator",),
        "projection": ("env.projection",),
        **_PICK_PATHS,
    },
    "transfer": {
        "source": ("transfer.source",),
        "device": ("transfer.table",),
        "model": ("transfer.model",),
        "dataset": ("transfer.dataset",),
        "episodes": ("transfer.episodes",),
        "seed": ("transfer.seed",),
        "budget": ("transfer.budget_ratio",),
        "budget_absolute": ("transfer.budget_absolute",),
        "evaluator": ("transfer.evaluator",),
        "noise": ("transfer.noise_sigma",),
        "input_size": ("transfer.input_size",),
        "reuse": ("transfer.reuse_source",),
        "clone_steps": ("transfer.clone_steps",),
        "zero_shot": ("transfer.zero_shot",),
        **_PICK_PATHS,
    },
    "table_build": {
        "model": ("build.models",),
        "dataset": ("build.dataset",),
        "data_root": ("build.data_root",),
        "device": ("build.device",),
        "out": ("build.out",),
        "batch": ("build.batch",),
        "input_size": ("build.input_size",),
        "input_shape": ("build.input_shape",),
        "weights": ("build.weights",),
        "sessions": ("protocol.sessions",),
        "repeats": ("protocol.repeats",),
        "warmup_runs": ("protocol.warmup_runs",),
        "warmup_s": ("protocol.warmup_s",),
        "batch_warmup_s": ("protocol.batch_warmup_s",),
        "min_repeat_ms": ("protocol.min_repeat_ms",),
        "max_noise": ("protocol.max_noise",),
        "max_retries": ("protocol.max_retries",),
        "sentinel_every": ("protocol.sentinel_every",),
        "threads": ("protocol.threads",),
        "input_seed": ("protocol.seed",),
        "ci_rel": ("protocol.ci_rel",),
        "min_sessions": ("protocol.min_sessions",),
    },
}
"""Per job kind: flag destination -> the document paths that flag sets."""

RUN_FLAGS: dict[str, frozenset[str]] = {
    "search": frozenset({"out", "resume", "threads", "strict", "workers", "ray_address", "config", "mlflow"}),
    "baseline": frozenset({"out", "resume", "strict", "workers", "ray_address", "config", "mlflow"}),
    "transfer": frozenset({"out", "resume", "strict", "workers", "ray_address", "config", "mlflow"}),
    "table_build": frozenset({"token", "tls_ca", "config"}),
}
"""Per job kind: flags that say how to run, not what (they are not part of the document)."""
_FLAGS = "_job_flags"
"""Namespace attribute listing the flags :func:`add_job_args` marked."""


class Unset:
    """A flag's default, wrapped so a typed flag can be told from an untouched one."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Unset({self.value!r})"


def add_job_args(p: argparse.ArgumentParser, *, mlflow: bool = True) -> None:
    """Add ``--config`` (and ``--mlflow``), and mark every argument's default (call last in ``register``)."""
    p.add_argument(
        "--config",
        metavar="JOB_FILE",
        default=None,
        help="a job document (.toml or .json) with the settings; flags given as well override it",
    )
    if mlflow:
        p.add_argument(
            "--mlflow",
            metavar="URI",
            default=None,
            help="also log params, metrics and the best policy / plots to this MLflow tracking URI",
        )
    dests = []
    for action in p._actions:  # noqa: SLF001 - argparse exposes no public list of a parser's arguments
        if action.dest not in ("help", argparse.SUPPRESS) and action.default is not argparse.SUPPRESS:
            action.default = Unset(action.default)
            dests.append(action.dest)
    p.set_defaults(**{_FLAGS: frozenset(dests)})


def resolve_job(
    ns: argparse.Namespace,
    kind: str,
    from_flags: Callable[[argparse.Namespace], Mapping[str, Any]],
    required: Mapping[str, str] | None = None,
) -> tuple[argparse.Namespace, Job]:
    """The namespace with plain values, and the job: ``--config``'s document with typed flags over
    it, or (without ``--config``) the sections ``from_flags`` builds.

    required: flag destination -> flag name of flags needed when no document is given.
    """
    flags = getattr(ns, _FLAGS, frozenset())
    explicit = {k for k in flags if not isinstance(getattr(ns, k, None), Unset)}
    plain = argparse.Namespace(**{k: v.value if isinstance(v, Unset) else v for k, v in vars(ns).items() if k != _FLAGS})
    config_file = getattr(plain, "config", None)
    mlflow = getattr(plain, "mlflow", None)
    if not config_file:
        missing = [flag for dest, flag in (required or {}).items() if getattr(plain, dest, None) is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} is required (or --config JOB_FILE with the settings)")
        return plain, Job(kind, dict(from_flags(plain)), TrackingConfig(mlflow=mlflow))
    job = read_job_file(config_file)
    if job.kind != kind:
        raise ConfigError(f"--config {config_file} is a {job.kind} job; this command runs {kind} jobs")
    paths = FLAG_PATHS.get(kind, {})
    unmapped = sorted(explicit - set(paths) - RUN_FLAGS.get(kind, frozenset()))
    if unmapped:
        names = ", ".join("--" + d.replace("_", "-") for d in unmapped)
        raise ConfigError(f"{names}: not settable over --config yet; put the setting in the job document {config_file}")
    doc = job.to_dict()
    for dest in sorted(explicit & set(paths)):
        value = getattr(plain, dest)
        for path in paths[dest]:
            set_path(doc, path, list(value) if isinstance(value, (list, tuple)) else value)
    if "mlflow" in explicit:
        set_path(doc, "tracking.mlflow", mlflow)
    return plain, parse_job(doc, f"--config {config_file}")


__all__ = ["FLAG_PATHS", "RUN_FLAGS", "Unset", "add_job_args", "resolve_job"]
