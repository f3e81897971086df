"""``haq tables check``: how well a measured table predicts whole-model latency on this machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import latency_tables
from haq.commands.workload_args import add_data_args
from haq.core.fileio import atomic_write_text
from haq.core.types import stderr_log as log
from haq.hardware.check import CheckConfig, check_table, load_check, score
from haq.hardware.device.machine import machine_fingerprint
from haq.hardware.device.runner import LocalRunner
from haq.hardware.device.settings import SESSIONS, ProtocolConfig
from haq.hardware.networks import load_network
from haq.jobs.machine import check_machine


def register(actions: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    c = actions.add_parser("check", help="measure random mixed-precision policies end to end and compare with a table")
    c.add_argument("--model", required=True, help="zoo name or package.module:callable")
    add_data_args(c, "input shape source for --model (default: its own dataset)")
    c.add_argument("--device", required=True, help="the measured table to check (shipped name or .json file)")
    c.add_argument("--n", type=int, default=20, help="random policies to measure (default 20)")
    c.add_argument("--sessions", type=int, default=SESSIONS, help=f"most fresh sessions per measurement (default {SESSIONS})")
    c.add_argument("--seed", type=int, default=1000, help="policy sampling seed (default 1000; fitting uses 0)")
    c.add_argument("--save", default=None, help="also write every policy's bits, measurements and predictions to this JSON file")
    c.add_argument("--rescore", default=None, help="measure nothing: judge the table on the measurements in this --save file")
    c.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    cfg = CheckConfig(
        ns.model,
        ns.device,
        ns.n,
        ns.sessions,
        ns.seed,
        Path(ns.save) if ns.save else None,
        Path(ns.rescore) if ns.rescore else None,
    )
    table = latency_tables.load(cfg.table)
    net = load_network(cfg.model, ns.dataset, ns.data_root, input_size=ns.input_size, input_shape=ns.input_shape)
    record: dict[str, Any] = {}
    if cfg.rescore is not None:
        report = score(table, net, *load_check(cfg.rescore, net.name))
    else:
        here = machine_fingerprint()
        check_machine(table, strict=False, log=log, model=cfg.model, here=here)  # checking a foreign table is allowed
        report = check_table(table, net, LocalRunner(ProtocolConfig(sessions=cfg.sessions), log), cfg.n, cfg.seed, log)
        record = {"machine": here.to_dict()}
    print(report.markdown())
    if cfg.save is not None:
        atomic_write_text(cfg.save, json.dumps({**report.to_dict(), **record}, indent=1) + "\n")
    return 0
