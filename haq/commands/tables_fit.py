"""``haq tables fit``: fit a measured table's per-device terms (boundary rules, per-layer terms)
over every model given, and per model either terms of its own or a correction on top."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import latency_tables
from haq.commands.workload_args import add_data_args
from haq.core import validate
from haq.core.errors import ConfigError, TableError
from haq.core.types import stderr_log as log
from haq.hardware.device.runner import LocalRunner
from haq.hardware.device.settings import SESSIONS, ProtocolConfig
from haq.hardware.fit import FIT_CONFIGS, fit_table
from haq.hardware.fit_observations import observations_path, sessions_path
from haq.hardware.networks import load_network
from haq.jobs.machine import check_machine


@dataclass(frozen=True)
class FitConfig:
    """Validated ``haq tables fit`` arguments."""

    models: tuple[str, ...]
    table: str
    configs: int
    sessions: int
    remeasure: bool
    by_parts: tuple[str, ...] = ()
    blend: bool = False

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("--model needs at least one zoo name or package.module:callable")
        validate.count("--configs", self.configs, 3, 1000)
        validate.count("--sessions", self.sessions, 1, 100)
        unknown = sorted(set(self.by_parts) - set(self.models))
        if unknown:
            raise ConfigError(f"--by-parts names {', '.join(unknown)}, which --model does not; give each of them to --model too")
        if self.blend and not (self.by_parts and set(self.models) - set(self.by_parts)):
            raise ConfigError(
                "--blend-with-terms blends prices by parts with device terms fitted on models measured whole: "
                "name some models with --by-parts and at least one --model without it"
            )


def register(actions: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    f = actions.add_parser("fit", help="measure whole models and fit a measured table's graph-aware terms")
    f.add_argument(
        "--model",
        nargs="+",
        required=True,
        help="every model the table serves (device terms are fitted on all of them jointly; "
        "a model not given is priced by those terms alone)",
    )
    add_data_args(f, "input shape source for every --model (default: each model's own dataset)")
    f.add_argument("--device", required=True, help="the measured table (shipped name or .json file); rewritten in place")
    f.add_argument("--configs", type=int, default=FIT_CONFIGS, help=f"measured configurations per model (default {FIT_CONFIGS})")
    f.add_argument("--sessions", type=int, default=SESSIONS, help=f"most fresh sessions per measurement (default {SESSIONS})")
    f.add_argument(
        "--remeasure",
        action="store_true",
        help="ignore the whole-model measurements kept beside the table (<table>.fit.jsonl, and the sessions an interrupted "
        "fit journaled in <table>.fit-sessions.jsonl) and measure again",
    )
    f.add_argument(
        "--by-parts",
        nargs="*",
        metavar="MODEL",
        default=None,
        help="never time these models whole (every --model when none is named): price each configuration from every node "
        "onnxruntime compiles for it, its layer kernels as the network runs them and the nodes between them (quantize / "
        "dequantize, layout reorders, pools, adds), each node timed alone, less one call overhead fitted on the other "
        "--model networks measured whole (timed, and less accurate, when there are none); for a model too slow to time "
        "whole many times",
    )
    f.add_argument(
        "--blend-with-terms",
        action="store_true",
        help="move each --by-parts price to the geometric mean of it and what the device terms of the models measured whole "
        "predict (better before the call overhead was fitted per kind; latency_tables/README.md)",
    )
    f.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    by_parts = () if ns.by_parts is None else tuple(ns.by_parts or ns.model)
    cfg = FitConfig(tuple(ns.model), ns.device, ns.configs, ns.sessions, ns.remeasure, by_parts, ns.blend_with_terms)
    table = latency_tables.load(cfg.table)
    if table.path is None:
        raise TableError(f"table {table.name} has no file to rewrite; pass a shipped table name or a .json file")
    path = Path(table.path)
    check_machine(table, strict=False, log=log, model=cfg.models[0])  # a table from another machine is refused by the fit itself
    kept = observations_path(path)
    if cfg.remeasure:
        kept.unlink(missing_ok=True)
        sessions_path(path).unlink(missing_ok=True)
    runner = LocalRunner(ProtocolConfig(sessions=cfg.sessions), log, sessions_path(path))
    nets = [load_network(m, ns.dataset, ns.data_root, input_size=ns.input_size, input_shape=ns.input_shape) for m in cfg.models]
    fitted = fit_table(table, nets, runner, cfg.configs, path, log=log, observations=kept, by_parts=cfg.by_parts, blend=cfg.blend)
    g = fitted.data.graph
    print(
        f"{table.path}: {len(g.rules)} boundary rules, {len(g.layer_terms)} device layer terms, "
        + "".join(f"{f.family} networks' own {len(f.layer_terms)} layer terms, " for f in g.families)
        + f"{len(g.networks)} networks with device terms of their own, "
        + f"{len(g.corrections)} network corrections; "
        + (f"priced by parts, never timed whole: {', '.join(cfg.by_parts)}; " if cfg.by_parts else "")
        + (f"whole-model measurements kept in {kept}" if set(cfg.models) - set(cfg.by_parts) else "no model timed whole")
    )
    return 0
