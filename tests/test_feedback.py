"""Hardware feedback: whole-model measured latency per policy, cached in memory and on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
from cli_helpers import weight_dtypes

from haq.core import config as serial
from haq.core.errors import ConfigError, HaqError
from haq.evaluation.config import EvalConfig
from haq.hardware.device.agent import AgentConfig, DeviceAgent
from haq.hardware.device.measurement import Measurement
from haq.hardware.device.runner import LocalRunner, RemoteRunner
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.feedback import CACHE_FORMAT, CACHE_VERSION, MeasuredCost, QDQExporter, policy_key
from haq.jobs.problems import local_measurer, make_problem
from haq.problem.config import BudgetConfig, EnvConfig
from haq.quant import FLOAT_BITS, QuantPolicy
from haq.workload import Workload
from latency_tables import load as load_table

CPU_TABLE = "example-cpu-xeon"
FEEDBACK = EnvConfig(
    max_bits=FLOAT_BITS, budget=BudgetConfig(ratio=2.0), evaluation=EvalConfig(kind="cheap", hardware_feedback=True)
)

QUICK = ProtocolConfig(sessions=2, warmup_runs=2, warmup_s=0.0, batch_warmup_s=0.0, repeats=4, min_repeat_ms=1.0, max_retries=0)


class CountingRunner:
    """A local runner that counts how many models it was asked to time."""

    def __init__(self, protocol: ProtocolConfig = QUICK) -> None:
        self.inner = LocalRunner(protocol)
        self.protocol = protocol
        self.models = 0

    def measure(self, onnx_bytes: bytes) -> Measurement:
        return self.measure_many([onnx_bytes])[0]

    def measure_many(self, models: Sequence[bytes]) -> list[Measurement]:
        self.models += len(models)
        return self.inner.measure_many(models)

    def device_info(self) -> dict[str, Any]:
        return self.inner.device_info()


def uniform(wl: Workload, bits: int) -> QuantPolicy:
    return QuantPolicy.uniform(wl.layer_names, bits, bits)


def test_measures_the_policy_that_was_asked(digits_workload: Workload) -> None:
    cost = MeasuredCost(digits_workload, CountingRunner())
    fp32, int8 = cost.measure_many([uniform(digits_workload, FLOAT_BITS), uniform(digits_workload, 8)])
    assert "QLinearConv" not in fp32.kernels and "Conv" in fp32.kernels
    assert "QLinearConv" in int8.kernels
    latency = cost.policy_cost(digits_workload.layers, uniform(digits_workload, 8))
    assert latency == int8.latency_ms > 0
    assert cost.metrics == ("latency",) and len(cost) == 2


def test_cache_avoids_remeasuring_and_survives_a_restart(digits_workload: Workload, tmp_path: Path) -> None:
    path = tmp_path / "measured.json"
    runner = CountingRunner()
    first = MeasuredCost(digits_workload, runner, cache_path=path)
    pol = uniform(digits_workload, 8)
    a = first.policy_cost(digits_workload.layers, pol)
    b = first.policy_cost(digits_workload.layers, QuantPolicy.from_dict(pol.to_dict()))
    assert a == b and runner.models == 1
    stored = json.loads(path.read_text())
    assert list(stored["entries"]) == [policy_key(digits_workload.layers, pol)]
    assert stored["identity"]["protocol"] == serial.to_dict(QUICK)

    fresh = CountingRunner()
    resumed = MeasuredCost(digits_workload, fresh, cache_path=path)
    assert len(resumed) == 1 and resumed.policy_cost(digits_workload.layers, pol) == a
    assert fresh.models == 0


def test_cache_from_another_setup_is_refused(digits_workload: Workload, tmp_path: Path) -> None:
    path = tmp_path / "measured.json"
    MeasuredCost(digits_workload, CountingRunner(), cache_path=path).measurement(uniform(digits_workload, 8))
    other = ProtocolConfig(sessions=3, warmup_runs=2, warmup_s=0.0, batch_warmup_s=0.0, repeats=4, min_repeat_ms=1.0)
    with pytest.raises(ConfigError, match="different protocol"):
        MeasuredCost(digits_workload, CountingRunner(other), cache_path=path)
    with pytest.raises(ConfigError, match="different exporter"):
        MeasuredCost(digits_workload, CountingRunner(), QDQExporter(calibration_size=8), cache_path=path)
    path.write_text("{ truncated")
    with pytest.raises(ConfigError, match="unreadable"):
        MeasuredCost(digits_workload, CountingRunner(), cache_path=path)
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ConfigError, match="not a version-1"):
        MeasuredCost(digits_workload, CountingRunner(), cache_path=path)


def test_bad_queries_are_clear_errors(digits_workload: Workload) -> None:
    runner = CountingRunner()
    cost = MeasuredCost(digits_workload, runner)
    with pytest.raises(ConfigError, match="only latency"):
        cost.policy_cost(digits_workload.layers, uniform(digits_workload, 8), metric="energy")
    with pytest.raises(ConfigError, match="bound to digits_cnn"):
        cost.policy_cost(digits_workload.layers[:2], uniform(digits_workload, 8))
    with pytest.raises(HaqError):
        cost.policy_cost(digits_workload.layers, QuantPolicy.uniform(digits_workload.layer_names[:1], 8, 8))
    with pytest.raises(HaqError):  # 4-bit convs do not run on the CPU: the exporter refuses
        cost.policy_cost(digits_workload.layers, uniform(digits_workload, 4))
    with pytest.raises(ConfigError, match="calibration_size"):
        QDQExporter(calibration_size=0)
    assert runner.models == 0


def test_the_exporter_stores_weights_in_the_table_container(digits_workload: Workload) -> None:
    """uint8 (the default) goes unrecorded in the cache identity, as caches written before the
    choice timed it; int8 is recorded, so a cache of one is never read for the other."""
    pol = uniform(digits_workload, 8)
    unsigned, signed = QDQExporter(calibration_size=8), QDQExporter(calibration_size=8, weights="int8")
    assert weight_dtypes(unsigned(digits_workload, pol)) == {np.dtype(np.uint8)}
    assert weight_dtypes(signed(digits_workload, pol)) == {np.dtype(np.int8)}
    assert "weights" not in unsigned.to_dict() and signed.to_dict()["weights"] == "int8"
    with pytest.raises(ConfigError, match="choose one of uint8, int8"):
        QDQExporter(weights="fp16")


def test_feedback_through_the_device_agent(digits_workload: Workload) -> None:
    cfg = AgentConfig(host="127.0.0.1", port=0, token="feedback-secret-token", timeout_s=60.0)
    with DeviceAgent(cfg).start() as agent:
        host, port = agent.address
        cost = MeasuredCost(digits_workload, RemoteRunner(host, port, "feedback-secret-token", 60.0, QUICK))
        m = cost.measurement(uniform(digits_workload, 8))
    assert "QLinearConv" in m.kernels and m.n_samples == 8
    assert cost.name.startswith("measured:")


def test_hardware_feedback_is_built_by_the_commands_layer(digits_workload: Workload, cache_dir: Path, tmp_path: Path) -> None:
    """make_problem measures episode-end latency here (through the feedback cache); other devices are refused."""
    with pytest.raises(ConfigError, match="prices another device"):
        make_problem(FEEDBACK, cache_dir=cache_dir, table=load_table("bitfusion"))
    path = tmp_path / "measured.json"
    measurer = local_measurer(digits_workload, load_table(CPU_TABLE), emulated=True, cache_path=path)
    assert measurer.cache_path == path and measurer.exporter.to_dict()["emulated"] is True
    assert measurer.exporter.to_dict()["weights"] == "int8", "exported as the table timed (example-cpu-xeon: int8)"
    pol = uniform(digits_workload, 8)
    record = MeasuredCost(digits_workload, CountingRunner()).measurement(pol)
    entries = {policy_key(digits_workload.layers, pol): record.to_dict()}
    doc = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "identity": measurer.identity, "entries": entries}
    path.write_text(json.dumps(doc))
    problem = make_problem(FEEDBACK, cache_dir=cache_dir, feedback_cache=path, table=load_table(CPU_TABLE))
    assert problem.evaluator.evaluate(pol).latency_ms == record.latency_ms
