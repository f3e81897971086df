"""QuantPolicy: JSON round trip, every bad-policy case, and applying it to a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from haq.core.errors import ModelError, PolicyError, UsageError
from haq.models import build_model
from haq.quant import (
    InputQuantizer,
    LayerBits,
    QuantConv2d,
    QuantLayer,
    QuantLinear,
    QuantPolicy,
    WeightQuantizer,
    apply_policy_,
    calibrate_,
    discover_layers,
    model_size_bits,
    quant_layers,
    quantize_activation,
    quantize_weight,
)

NAMES = ["conv1", "conv2", "conv3", "fc"]


def _policy() -> QuantPolicy:
    return QuantPolicy(
        {"conv1": LayerBits(8, 8), "conv2": LayerBits(4, 6), "conv3": LayerBits(2, 32), "fc": LayerBits(1, 3)},
        meta={"source": "test"},
    )


def test_json_round_trip(tmp_path: Path) -> None:
    p = _policy()
    p.save(tmp_path / "p.json")
    q = QuantPolicy.load(tmp_path / "p.json")
    assert q.layers == p.layers and q.meta == p.meta
    assert json.loads((tmp_path / "p.json").read_text())["format"] == "haq.policy"
    assert not list(tmp_path.glob("*.tmp"))


def _doc(**layers: object) -> dict[str, object]:
    return {"format": "haq.policy", "version": 1, "layers": layers}


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ([], "top level"),
        ({"format": "other", "version": 1, "layers": {}}, "format"),
        ({"format": "haq.policy", "version": 7, "layers": {"a": {"w_bits": 8, "a_bits": 8}}}, "version"),
        (_doc(), "non-empty"),
        (_doc(conv1={"w_bits": 8}), "conv1"),
        (_doc(conv1={"w_bits": 9, "a_bits": 8}), "out of range"),
        (_doc(conv1={"w_bits": 0, "a_bits": 8}), "out of range"),
        (_doc(conv1={"w_bits": 8, "a_bits": 16}), "out of range"),
        (_doc(conv1={"w_bits": 4.0, "a_bits": 8}), "integer"),
        (_doc(conv1={"w_bits": 4.5, "a_bits": 8}), "integer"),
        (_doc(conv1={"w_bits": "8", "a_bits": 8}), "integer"),
        (_doc(conv1={"w_bits": True, "a_bits": 8}), "integer"),
        (_doc(conv1={"w_bits": float("nan"), "a_bits": 8}), "integer"),
        (_doc(conv1={"w_bits": 8, "a_bits": 8, "extra": 1}), "conv1"),
    ],
)
def test_bad_policy_documents(doc: object, match: str) -> None:
    with pytest.raises(PolicyError, match=match) as exc:
        QuantPolicy.from_dict(doc)
    assert "\n" not in str(exc.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        QuantPolicy.load(tmp_path / "missing.json")
    (tmp_path / "trunc.json").write_text('{"format": "haq.policy", "layers": {')
    with pytest.raises(PolicyError, match="not valid JSON"):
        QuantPolicy.load(tmp_path / "trunc.json")


def test_a_layer_given_twice_is_refused_not_last_wins(tmp_path: Path) -> None:
    twice = (
        '{"format": "haq.policy", "version": 1, "layers": {"fc": {"w_bits": 8, "a_bits": 8}, "fc": {"w_bits": 2, "a_bits": 2}}}'
    )
    (tmp_path / "twice.json").write_text(twice)
    with pytest.raises(PolicyError, match="duplicate JSON key 'fc'") as exc:
        QuantPolicy.load(tmp_path / "twice.json")
    assert str(tmp_path / "twice.json") in str(exc.value)
    with pytest.raises(PolicyError, match="not a regular file"):
        QuantPolicy.load("/dev/zero")
    (tmp_path / "latin1.json").write_bytes(twice.replace('"fc"', '"f\xe9"').encode("latin-1"))
    with pytest.raises(PolicyError, match="not UTF-8"):
        QuantPolicy.load(tmp_path / "latin1.json")


def test_unknown_and_missing_layers() -> None:
    p = _policy()
    with pytest.raises(PolicyError, match="unknown layer.*'bogus'"):
        QuantPolicy({**p.layers, "bogus": LayerBits(8, 8)}).check_layers(NAMES)
    with pytest.raises(PolicyError, match="missing layer.*'fc'"):
        QuantPolicy({n: p[n] for n in NAMES[:3]}).check_layers(NAMES)


def test_apply_policy_swaps_layers_and_shares_weights() -> None:
    model = build_model("digits_cnn", (1, 8, 8), 10)
    w = model.conv1.weight
    apply_policy_(model, _policy())
    assert isinstance(model.conv1, QuantConv2d) and isinstance(model.fc, QuantLinear)
    assert model.conv1.weight is w
    assert (model.conv2.w_bits, model.conv2.a_bits) == (4, 6)
    apply_policy_(model, QuantPolicy.uniform(NAMES, 8))  # re-applying only changes bits
    assert model.conv2.w_bits == 8 and model.conv1.weight is w
    assert set(quant_layers(model)) == set(NAMES)


def test_uncalibrated_forward_is_a_clear_error() -> None:
    model = apply_policy_(build_model("digits_cnn", (1, 8, 8), 10), QuantPolicy.uniform(NAMES, 4))
    with pytest.raises(UsageError, match="never calibrated"):
        model(torch.rand(2, 1, 8, 8))
    calibrate_(model, [torch.rand(16, 1, 8, 8)], torch.device("cpu"))
    assert torch.isfinite(model(torch.rand(2, 1, 8, 8))).all()
    assert not bool(model.conv1.input_quant.signed)  # digits input is non-negative


def test_signed_inputs_detected() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    apply_policy_(model, QuantPolicy.uniform(["0"], 4))
    calibrate_(model, [torch.randn(32, 4)], torch.device("cpu"))
    assert bool(model[0].input_quant.signed)


def test_model_size_bits() -> None:
    model = build_model("digits_cnn", (1, 8, 8), 10)
    layers = discover_layers(model, (1, 8, 8))
    p8 = QuantPolicy.uniform(NAMES, 8)
    p4 = QuantPolicy.uniform(NAMES, 4)
    weights = sum(info.params for info in layers)
    biases = sum(info.signature.out_channels for info in layers)
    assert model_size_bits(layers, p8) == weights * 8 + biases * 32
    assert model_size_bits(layers, p8) - model_size_bits(layers, p4) == weights * 4


def test_apply_policy_rejects_mismatched_model() -> None:
    model = build_model("digits_cnn", (1, 8, 8), 10)
    with pytest.raises(PolicyError, match="missing"):
        apply_policy_(model, QuantPolicy.uniform(NAMES[:2], 8))


def test_quantizers_are_child_modules_and_bits_are_validated() -> None:
    model = apply_policy_(build_model("digits_cnn", (1, 8, 8), 10), _policy())
    conv2 = model.conv2
    assert isinstance(conv2, QuantLayer)
    assert isinstance(conv2.weight_quant, WeightQuantizer) and isinstance(conv2.input_quant, InputQuantizer)
    assert (conv2.weight_quant.bits, conv2.input_quant.bits) == (conv2.w_bits, conv2.a_bits) == (4, 6)
    conv2.w_bits = 3
    assert conv2.weight_quant.bits == 3
    with pytest.raises(PolicyError, match="a_bits=9"):
        conv2.a_bits = 9
    with pytest.raises(PolicyError, match="w_bits"):
        QuantLinear(4, 3, w_bits=0)
    with pytest.raises(ModelError, match="needs an nn.Linear"):
        QuantLinear.from_float(nn.Conv2d(1, 1, 1), 8, 8)


def test_quantized_layer_equals_its_primitives() -> None:
    lin = nn.Linear(6, 4)
    q = QuantLinear.from_float(lin, 3, 5, per_channel=False, name="head")
    x = torch.randn(8, 6)
    calibrate_(nn.Sequential(q), [x], torch.device("cpu"))
    alpha = float(x.abs().max())
    assert float(q.input_quant.alpha) == pytest.approx(alpha) and bool(q.input_quant.signed)
    expected = F.linear(quantize_activation(x, 5, q.input_quant.alpha, True), quantize_weight(lin.weight, 3, False), lin.bias)
    assert torch.equal(q(x), expected)


def test_quantizing_a_model_leaves_the_callers_random_stream_where_it_was() -> None:
    """The twins' throwaway initialization must not move torch's generator: a search's agent
    samples from it, and whether an evaluation ran (or was a cached lookup) must not change what
    the agent proposes next."""
    model = build_model("digits_cnn", (1, 8, 8), 10)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    apply_policy_(model, QuantPolicy.uniform(NAMES, 4))
    assert torch.equal(torch.rand(3), expected)


def test_state_dicts_round_trip_and_legacy_keys_load() -> None:
    model = apply_policy_(build_model("digits_cnn", (1, 8, 8), 10), QuantPolicy.uniform(NAMES, 4))
    x = torch.rand(16, 1, 8, 8)
    calibrate_(model, [x], torch.device("cpu"))
    state = model.state_dict()
    assert {"conv1.input_quant.alpha", "conv1.input_quant.signed", "conv1.input_quant.calibrated"} <= set(state)
    legacy = {
        k.replace("input_quant.alpha", "act_alpha")
        .replace("input_quant.signed", "act_signed")
        .replace("input_quant.calibrated", "calibrated"): v
        for k, v in state.items()
    }
    for loaded in (state, legacy):
        fresh = apply_policy_(build_model("digits_cnn", (1, 8, 8), 10), QuantPolicy.uniform(NAMES, 4))
        fresh.load_state_dict(loaded)
        assert torch.equal(fresh(x), model(x))


def test_from_pairs_builds_the_same_policy_and_validates_it() -> None:
    pairs = {"a": (8, 8), "b": (4, 32)}
    policy = QuantPolicy.from_pairs(pairs.items(), {"why": "test"})
    assert policy == QuantPolicy({"a": LayerBits(8, 8), "b": LayerBits(4, 32)}, {"why": "test"})
    with pytest.raises(PolicyError, match="layer 'c'"):
        QuantPolicy.from_pairs([("c", (0, 8))])
