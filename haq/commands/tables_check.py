"""``haq tables check``: how well a measured table predicts whole-model latency on this machine."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import latency_tables
from haq.commands.common import log
from haq.errors import ConfigError
from haq.hardware.check import check_table, load_network
from haq.hardware.protocol import ProtocolConfig
from haq.hardware.runner import LocalRunner


@dataclass(frozen=True)
class CheckConfig:
    """Validated ``haq tables check`` arguments."""

    model: str
    table: str
    n: int
    sessions: int
    seed: int

    def __post_init__(self) -> None:
        if not 3 <= self.n <= 1000:
            raise ConfigError(f"--n must be in 3..1000 policies, got {self.n}")
        if not 1 <= self.sessions <= 100:
            raise ConfigError(f"--sessions must be in 1..100, got {self.sessions}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")


def register(actions: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    c = actions.add_parser("check", help="measure random mixed-precision policies end to end and compare with a table")
    c.add_argument("--model", required=True, help="zoo name or package.module:callable")
    c.add_argument("--device", required=True, help="the measured table to check (shipped name or .json file)")
    c.add_argument("--n", type=int, default=20, help="random policies to measure (default 20)")
    c.add_argument("--sessions", type=int, default=5, help="fresh sessions per measurement (default 5)")
    c.add_argument("--seed", type=int, default=1000, help="policy sampling seed (default 1000; fitting uses 0)")
    c.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    cfg = CheckConfig(ns.model, ns.device, ns.n, ns.sessions, ns.seed)
    table = latency_tables.load(cfg.table)
    runner = LocalRunner(ProtocolConfig(sessions=cfg.sessions), log)
    report = check_table(table, load_network(cfg.model), runner, cfg.n, cfg.seed, log)
    print(report.markdown())
    return 0
