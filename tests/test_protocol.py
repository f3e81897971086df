"""The measurement protocol and the local runner: settings, statistics, interleaving, retries, kernels."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from haq.core.config import from_dict, to_dict
from haq.core.errors import ConfigError, DeviceError
from haq.hardware.device import timing
from haq.hardware.device.guard import Refusal, check_model
from haq.hardware.device.machine import device_info
from haq.hardware.device.measurement import Measurement, floors_agree, relative_iqr, relative_range, second_lowest, session_floor
from haq.hardware.device.profile import kernels_from_profile
from haq.hardware.device.runner import LocalRunner, RemoteRunner, make_runner, parse_remote
from haq.hardware.device.sentinel import sentinel_model
from haq.hardware.device.session import random_feeds, session_options
from haq.hardware.device.settings import SESSIONS, ProtocolConfig
from haq.hardware.device.timing import measure_models, runs_per_sample

QUICK = ProtocolConfig(sessions=3, warmup_runs=2, warmup_s=0.0, batch_warmup_s=0.0, repeats=5, min_repeat_ms=1.0, max_retries=0)


def conv_model(channels: int = 8, size: int = 16) -> bytes:
    """A Conv + Relu with a symbolic batch dimension."""
    w = np.random.default_rng(1).standard_normal((channels, channels, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["z"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model.SerializeToString()


def test_config_rejects_bad_values() -> None:
    bad_values = (
        {"sessions": 0},
        {"repeats": -1},
        {"warmup_s": float("nan")},
        {"threads": 0},
        {"min_repeat_ms": "5"},
        {"sessions": True},
    )
    for bad in bad_values:
        (name,) = bad
        with pytest.raises(ConfigError, match=name):
            ProtocolConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown field.*bogus"):
        from_dict(ProtocolConfig, {"bogus": 1})
    with pytest.raises(ConfigError, match="JSON object"):
        from_dict(ProtocolConfig, [1, 2])
    with pytest.raises(ConfigError, match="sessions"):
        from_dict(ProtocolConfig, {"sessions": 2.5})


def test_config_wire_format_is_a_json_object_of_fields() -> None:
    wire = to_dict(QUICK)
    assert wire == {
        "sessions": 3,
        "warmup_runs": 2,
        "warmup_s": 0.0,
        "batch_warmup_s": 0.0,
        "repeats": 5,
        "min_repeat_ms": 1.0,
        "max_noise": 0.1,
        "max_retries": 0,
        "sentinel_every": 0,
        "seed": 0,
        "threads": 1,
        "ci_rel": 0.02,
        "min_sessions": 3,
    }
    assert from_dict(ProtocolConfig, wire) == QUICK and from_dict(ProtocolConfig, {}) == ProtocolConfig()
    assert ProtocolConfig().record()["sessions"] == SESSIONS


def test_record_documents_the_runtime_settings() -> None:
    rec = ProtocolConfig().record()
    assert rec["intra_op_threads"] == 1 and rec["inter_op_threads"] == 1
    assert rec["allow_spinning"] is False and rec["execution_mode"] == "sequential"
    assert rec["runtime_version"] == ort.__version__ and rec["sessions"] == SESSIONS and rec["warmup_runs"] >= 10
    opts = session_options(ProtocolConfig())
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_local_runner_measures_a_conv() -> None:
    m = LocalRunner(QUICK).measure(conv_model())
    assert len(m.samples_ms) == 3 and all(len(s) == 5 for s in m.samples_ms)
    assert m.n_samples == 15 and len(m.session_medians) == 3
    assert min(m.session_medians) <= m.median_ms <= max(m.session_medians)
    assert min(m.session_floors) <= m.latency_ms <= max(m.session_floors) and m.latency_ms <= m.median_ms
    assert m.latency_ms > 0 and m.noise >= 0 and m.session_spread >= 0
    assert "Conv" in m.kernels
    assert all(k >= 1 for k in m.runs_per_sample) and m.attempts == 1 and m.wall_s > 0


def test_interleaved_batch_keeps_order_and_ranks_work() -> None:
    res = LocalRunner(QUICK).measure_many([conv_model(32, 32), sentinel_model(16)])
    assert len(res) == 2  # which is faster is a matter for bench/, not an assertion on a loaded machine
    assert "Conv" in res[0].kernels and res[1].kernels[0] == "MatMul"
    assert LocalRunner(QUICK).measure_many([]) == []


def test_noisy_entries_are_remeasured_with_a_bound() -> None:
    cfg = ProtocolConfig(
        sessions=2, warmup_runs=1, warmup_s=0.0, batch_warmup_s=0.0, repeats=5, min_repeat_ms=0.5, max_noise=0.0, max_retries=2
    )
    (m,) = measure_models([sentinel_model(32)], cfg)
    assert m.attempts == 3


def test_the_machine_warms_up_once_per_batch_untimed(monkeypatch: pytest.MonkeyPatch) -> None:
    warmed: list[tuple[bytes, float]] = []
    real = timing._warm_machine
    monkeypatch.setattr(timing, "_warm_machine", lambda model, cfg, limits: warmed.append((model, cfg.batch_warmup_s)))
    first, second = sentinel_model(16), sentinel_model(32)
    cfg = replace(QUICK, batch_warmup_s=0.3, max_noise=0.0, max_retries=1, ci_rel=0.0)  # every model is measured twice
    measure_models([first, second], cfg)
    assert warmed == [(first, 0.3), (first, 0.3)]  # once per pass, on the first model, not per session
    monkeypatch.setattr(timing, "_warm_machine", real)
    start = time.perf_counter()
    (m,) = measure_models([first], replace(QUICK, sessions=1, batch_warmup_s=0.3))
    assert time.perf_counter() - start >= 0.3 and m.wall_s < time.perf_counter() - start - 0.25  # the warm-up is not timed


def test_sentinel_tracks_drift() -> None:
    cfg = ProtocolConfig(
        sessions=2, warmup_runs=1, warmup_s=0.0, batch_warmup_s=0.0, repeats=3, min_repeat_ms=0.5, max_retries=0, sentinel_every=1
    )
    runner = LocalRunner(cfg)
    a, b = runner.measure_many([sentinel_model(16), sentinel_model(32)])
    assert len(a.sentinel_ms) == 4 and a.sentinel_ms == b.sentinel_ms
    assert math.isfinite(a.drift) and a.drift >= 0
    assert LocalRunner(QUICK).measure(sentinel_model(16)).drift == 0.0


def test_garbage_model_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match="cannot load the model: not ONNX protobuf"):
        measure_models([b"definitely not onnx"], QUICK)
    with pytest.raises(DeviceError, match="onnxruntime cannot load the model"):  # well-formed protobuf, no graph
        measure_models([b"\x08\x07"], QUICK)
    with pytest.raises(DeviceError, match="non-empty"):
        measure_models([b""], QUICK)


def test_unsupported_input_type_is_named() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["t"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, [1])],
        [helper.make_tensor_value_info("t", TensorProto.STRING, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    with pytest.raises(DeviceError, match="input 's' has type tensor\\(string\\)"):
        measure_models([model.SerializeToString()], QUICK)


def test_random_feeds_are_seeded_and_shaped() -> None:
    sess = ort.InferenceSession(conv_model(4, 8), providers=["CPUExecutionProvider"])
    a, b, c = random_feeds(sess, 0), random_feeds(sess, 0), random_feeds(sess, 1)
    assert a["x"].shape == (1, 4, 8, 8) and a["x"].dtype == np.float32
    assert np.array_equal(a["x"], b["x"]) and not np.array_equal(a["x"], c["x"])


def test_measurement_round_trip_and_validation() -> None:
    m = Measurement(((1.0, 2.0, 3.0), (2.0, 2.0, 4.0)), (3, 4), ("Conv",), 0.5, 2, (1.0, 1.1))
    back = Measurement.from_dict(m.to_dict())
    assert back == m and back.median_ms == pytest.approx(2.0)
    assert back.session_floors == pytest.approx((1.2, 2.0)) and back.latency_ms == pytest.approx(2.0)  # the second-lowest
    assert m.session_spread == pytest.approx(0.0) and m.drift == pytest.approx(0.1 / 1.05)
    with pytest.raises(DeviceError, match="malformed measurement"):
        Measurement.from_dict({"samples_ms": [[1.0]]})
    with pytest.raises(DeviceError, match="finite and positive"):
        Measurement(((1.0, float("nan")),), (1,), (), 0.0)
    with pytest.raises(DeviceError, match="runs_per_sample"):
        Measurement(((1.0,),), (1, 2), (), 0.0)


def test_pure_statistics() -> None:
    assert runs_per_sample(0.01, 20.0) == 2000
    assert runs_per_sample(50.0, 20.0) == 1
    assert runs_per_sample(float("nan"), 20.0) == 1
    assert relative_iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0 / 3.0)
    assert relative_iqr([1.0, 1.0, 1.0, 100.0]) == pytest.approx(24.75)
    assert relative_range([9.0, 10.0, 11.0]) == pytest.approx(0.2)


_TIMES = st.floats(0.001, 1000.0, allow_nan=False)
_SESSIONS = st.lists(st.lists(_TIMES, min_size=1, max_size=12), min_size=1, max_size=8)


@settings(max_examples=80, deadline=None)
@given(_SESSIONS, st.floats(0.01, 100.0))
def test_the_latency_is_a_floor_two_sessions_reach(sessions: list[list[float]], scale: float) -> None:
    m = Measurement(tuple(map(tuple, sessions)), (1,) * len(sessions), (), 0.0)
    floors = [session_floor(s) for s in sessions]
    assert all(min(s) <= f <= max(s) for s, f in zip(sessions, floors))
    assert min(floors) <= m.latency_ms <= max(floors)
    assert sum(f <= m.latency_ms for f in floors) >= min(2, len(floors))  # at least two sessions at or below it
    scaled = Measurement(tuple(tuple(v * scale for v in s) for s in sessions), m.runs_per_sample, (), 0.0)
    assert scaled.latency_ms == pytest.approx(m.latency_ms * scale, rel=1e-9)  # a statistic of the shape, not the unit


def test_one_lucky_session_or_a_few_lucky_samples_do_not_set_the_latency() -> None:
    fast, slow = [10.0] * 50, [15.0] * 50
    lucky_session = Measurement(((5.0,) * 50, tuple(slow), tuple(slow)), (1, 1, 1), (), 0.0)
    assert lucky_session.latency_ms == 15.0
    lucky_samples = Measurement(((1.0, 1.0, *slow[2:]), tuple(slow)), (1, 1), (), 0.0)  # 2 of 50 samples
    assert lucky_samples.latency_ms == 15.0
    mixed = Measurement((tuple(slow[:30] + fast[:20]), tuple(slow), tuple(fast)), (1, 1, 1), (), 0.0)
    assert mixed.latency_ms == 10.0 and mixed.median_ms == 15.0  # the fast state, seen in two sessions
    assert second_lowest([3.0]) == 3.0 and second_lowest([3.0, 1.0, 2.0]) == 2.0
    assert floors_agree([1.0, 1.02, 5.0], 0.02) and not floors_agree([1.0, 1.03], 0.02) and not floors_agree([1.0], 1.0)
    with pytest.raises(DeviceError, match="no values"):
        second_lowest([])


def test_kernels_from_profile_orders_unique_nodes() -> None:
    events = [
        {"cat": "Session", "name": "model_run"},
        {"cat": "Node", "name": "b_kernel_time", "ts": 20, "args": {"op_name": "Relu"}},
        {"cat": "Node", "name": "a_kernel_time", "ts": 10, "args": {"op_name": "QLinearConv"}},
        {"cat": "Node", "name": "a_fence_before", "ts": 9, "args": {"op_name": "QLinearConv"}},
        {"cat": "Node", "name": "b_kernel_time", "ts": 40, "args": {"op_name": "Relu"}},
    ]
    assert kernels_from_profile(events) == ("QLinearConv", "Relu")
    with pytest.raises(DeviceError):
        kernels_from_profile({"not": "a list"})


def test_device_info_names_the_machine() -> None:
    info = device_info(QUICK)
    assert info["cpu"] and info["onnxruntime"] == ort.__version__ and info["threads"] == 1


def test_make_runner_parses_device_strings() -> None:
    assert isinstance(make_runner("local", protocol=QUICK), LocalRunner)
    remote = make_runner("remote://127.0.0.1:9", token="secret-token", protocol=QUICK)
    assert isinstance(remote, RemoteRunner) and remote.address == "remote://127.0.0.1:9"
    assert parse_remote("remote://[::1]:8765") == ("::1", 8765)
    for bad in ("gpu", "remote://host", "remote://:80", "remote://h:0", "remote://h:70000", "remote://h:x"):
        with pytest.raises(ConfigError):
            make_runner(bad, token="secret-token")
    with pytest.raises(ConfigError, match="token"):
        make_runner("remote://127.0.0.1:9")


def test_sentinel_model_is_valid_onnx() -> None:
    onnx.checker.check_model(onnx.load_from_string(sentinel_model(8)))


def test_guard_walks_every_message_and_refuses_what_names_files() -> None:
    """The model guard: an explicit inline data location passes; external data, EPContext
    nodes, absurd nesting and broken encodings are refused as bad_model."""
    inline = numpy_helper.from_array(np.ones(2, dtype=np.float32), "w")
    inline.data_location = TensorProto.DEFAULT
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [], [out], [inline])
    check_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    context = helper.make_node("EPContext", [], ["y"], domain="com.microsoft", ep_cache_context="/etc/passwd", embed_mode=0)
    with pytest.raises(Refusal, match="EPContext"):
        check_model(helper.make_model(helper.make_graph([context], "g", [], [])).SerializeToString())
    nested = b""
    for _ in range(30):  # graph -> node -> attribute -> graph ..., 90 messages deep, encoded by hand
        nested = _field(1, _field(5, _field(6, nested)))  # GraphProto.node / NodeProto.attribute / AttributeProto.g
    with pytest.raises(Refusal, match="nest deeper"):
        check_model(_field(7, nested))  # ModelProto.graph
    for broken in (b"\x3a\xff\xff\xff\xff\x0f", b"\x08", b"\x0b", b"\x00\x01"):
        with pytest.raises(Refusal, match="not ONNX protobuf") as info:
            check_model(broken)
        assert info.value.code == "bad_model"


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (lengths below 2^14 here)."""

    def varint(n: int) -> bytes:
        return bytes([(n & 0x7F) | 0x80, n >> 7]) if n >= 0x80 else bytes([n])

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_the_session_reads_onnx_format_only() -> None:
    assert session_options(ProtocolConfig()).get_session_config_entry("session.load_model_format") == "ONNX"
