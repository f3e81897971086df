"""QuantPolicy: JSON round trip, every bad-policy case, and applying it to a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from haq.core.errors import HaqError, PolicyError
from haq.models import build_model
from haq.quant import (
    LayerBits,
    QuantConv2d,
    QuantLinear,
    QuantPolicy,
    apply_policy_,
    calibrate_,
    discover_layers,
    model_size_bits,
    quant_layers,
)

NAMES = ["conv1", "conv2", "conv3", "fc"]


def _policy() -> QuantPolicy:
    return QuantPolicy({"conv1": LayerBits(8, 8), "conv2": LayerBits(4, 6), "conv3": LayerBits(2, 32), "fc": LayerBits(1, 3)},
                       meta={"source": "test"})


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
    with pytest.raises(HaqError, match="never calibrated"):
        model(torch.rand(2, 1, 8, 8))
    calibrate_(model, [torch.rand(16, 1, 8, 8)], torch.device("cpu"))
    assert torch.isfinite(model(torch.rand(2, 1, 8, 8))).all()
    assert not bool(model.conv1.act_signed)  # digits input is non-negative


def test_signed_inputs_detected() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    apply_policy_(model, QuantPolicy.uniform(["0"], 4))
    calibrate_(model, [torch.randn(32, 4)], torch.device("cpu"))
    assert bool(model[0].act_signed)


def test_model_size_bits() -> None:
    model = build_model("digits_cnn", (1, 8, 8), 10)
    layers = discover_layers(model, (1, 8, 8))
    p8 = QuantPolicy.uniform(NAMES, 8)
    p4 = QuantPolicy.uniform(NAMES, 4)
    weights = sum(l.params for l in layers)
    biases = sum(l.signature.out_channels for l in layers)
    assert model_size_bits(layers, p8) == weights * 8 + biases * 32
    assert model_size_bits(layers, p8) - model_size_bits(layers, p4) == weights * 4


def test_apply_policy_rejects_mismatched_model() -> None:
    model = build_model("digits_cnn", (1, 8, 8), 10)
    with pytest.raises(PolicyError, match="missing"):
        apply_policy_(model, QuantPolicy.uniform(NAMES[:2], 8))
