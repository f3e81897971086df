"""Zoo accuracy, cached training, user models and safe checkpoints."""

from __future__ import annotations

import json
import pickle
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from haq.core import config as serial
from haq.core.errors import ConfigError, ModelError
from haq.data import load_dataset
from haq.evaluation.ptq import evaluate_policy_ptq
from haq.models import ZOO, build_model
from haq.models.cache import cache_key
from haq.quant import QuantPolicy
from haq.training import TrainConfig, accuracy, parse_torch_device, train_model
from haq.workload import Workload, WorkloadConfig, load_workload


def test_digits_cnn_accuracy_float_and_8bit(digits_workload: Workload, cpu: torch.device) -> None:
    wl = digits_workload
    x, y = wl.data.subset("test", None)
    float_acc = accuracy(wl.model, x, y, cpu)
    assert float_acc >= 0.97
    q8 = evaluate_policy_ptq(wl.model, wl.layers, QuantPolicy.uniform(wl.layer_names, 8), wl.data, cpu)
    assert abs(q8.accuracy - float_acc) <= 0.01
    assert q8.accuracy > evaluate_policy_ptq(wl.model, wl.layers, QuantPolicy.uniform(wl.layer_names, 2), wl.data, cpu).accuracy


def test_training_is_cached(digits_workload: Workload, cache_dir: Path, cpu: torch.device) -> None:
    again = load_workload(WorkloadConfig(), cpu, cache_dir=cache_dir)
    for a, b in zip(digits_workload.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    assert list(cache_dir.glob("digits_cnn-digits-*.pt"))


USER_MODULE = """
from torch import nn
def tiny():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
def not_a_module():
    return 3
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_models"
    sys.modules.pop("my_models", None)


def test_user_model_with_checkpoint(user_module: str, tmp_path: Path, cpu: torch.device) -> None:
    from my_models import tiny  # type: ignore[import-not-found]

    ckpt = tmp_path / "w.pt"
    torch.save(tiny().state_dict(), ckpt)
    wl = load_workload(WorkloadConfig(model=f"{user_module}:tiny", checkpoint=str(ckpt)), cpu)
    assert wl.layer_names == ["1"] and wl.data.name == "digits"


def test_user_model_errors(user_module: str, tmp_path: Path, cpu: torch.device) -> None:
    with pytest.raises(ModelError, match="no weights: pass --checkpoint FILE .* or --train-epochs N"):
        load_workload(WorkloadConfig(model=f"{user_module}:tiny"), cpu)
    with pytest.raises(ConfigError, match="--finetune-epochs fine-tunes a --checkpoint"):
        WorkloadConfig(model=f"{user_module}:tiny", finetune_epochs=1)
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        load_workload(WorkloadConfig(model=f"{user_module}:not_a_module", checkpoint="x.pt"), cpu)
    with pytest.raises(ModelError, match="no attribute"):
        load_workload(WorkloadConfig(model=f"{user_module}:nope", checkpoint="x.pt"), cpu)
    with pytest.raises(ModelError, match="cannot import module"):
        load_workload(WorkloadConfig(model="no_such_pkg.mod:f", checkpoint="x.pt"), cpu)
    with pytest.raises(ModelError, match="unknown model 'resnet99'"):
        load_workload(WorkloadConfig(model="resnet99"), cpu)


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("executed!",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_never_unpickles_objects(user_module: str, tmp_path: Path, cpu: torch.device) -> None:
    bad = tmp_path / "evil.pt"
    with bad.open("wb") as f:
        pickle.dump({"weight": Evil()}, f)
    with pytest.raises(ModelError, match="cannot be loaded safely"):
        load_workload(WorkloadConfig(model=f"{user_module}:tiny", checkpoint=str(bad)), cpu)
    wrong = tmp_path / "wrong.pt"
    torch.save({"other.weight": torch.zeros(2)}, wrong)
    with pytest.raises(ModelError, match="does not match the model"):
        load_workload(WorkloadConfig(model=f"{user_module}:tiny", checkpoint=str(wrong)), cpu)


def test_training_leaves_no_gradients(cpu: torch.device) -> None:
    model = build_model("digits_cnn", (1, 8, 8), 10)
    train_model(model, load_dataset("digits"), TrainConfig(epochs=1), cpu)
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_train_and_workload_configs_use_the_generic_serializer() -> None:
    for cfg in (
        TrainConfig(epochs=2, optimizer="sgd", threads=None, max_batches=4),
        WorkloadConfig(model="digits_mlp", dataset="digits32", train_epochs=0),
    ):
        assert serial.load(type(cfg), json.loads(json.dumps(serial.dump(cfg)))) == cfg
    for bad, match in (
        ({"optimizer": "rmsprop"}, "unknown optimizer"),
        ({"epochs": -1}, "epochs"),
        ({"lr": float("nan")}, "lr"),
        ({"max_batches": 0}, "max_batches"),
    ):
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'"):
        WorkloadConfig(dataset="mnist")


def test_cache_key_is_deterministic_and_stable() -> None:
    data = load_dataset("digits")
    recipe = ZOO["digits_cnn"].train
    assert cache_key("digits_cnn", data, recipe) == cache_key("digits_cnn", data, TrainConfig(**serial.to_dict(recipe)))
    pinned = {"torch": "2.13.0", "haq": "0.1.0"}  # the key also names the software that trained (tests/test_cache_lock.py)
    assert cache_key("digits_cnn", data, recipe, versions=pinned) == "2fd95a1589be105d"
    assert cache_key("digits_cnn", data, replace(recipe, seed=1)) != cache_key("digits_cnn", data, recipe)


def test_parse_torch_device() -> None:
    assert parse_torch_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not valid"):
        parse_torch_device("abacus")


def test_user_model_trained_here_and_cached(user_module: str, tmp_path: Path, cpu: torch.device) -> None:
    cfg = WorkloadConfig(model=f"{user_module}:tiny", train_epochs=2)
    wl = load_workload(cfg, cpu, cache_dir=tmp_path / "cache")
    x, y = wl.data.subset("test", None)
    assert accuracy(wl.model, x, y, cpu) > 0.5  # trained with the zoo's recipe, not left at random
    again = load_workload(cfg, cpu, cache_dir=tmp_path / "cache")
    assert all(torch.equal(a, b) for a, b in zip(wl.model.state_dict().values(), again.model.state_dict().values()))
    (files,) = [list((tmp_path / "cache").glob("my_models_tiny-digits-*.pt"))]
    assert len(files) == 1
    # editing the user's source is a new model: its weights are trained again, not reused
    (tmp_path / "my_models.py").write_text(USER_MODULE + "\n# edited\n")
    load_workload(cfg, cpu, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("my_models_tiny-digits-*.pt"))) == 2


def test_checkpoint_fine_tuned_on_the_data_first(user_module: str, tmp_path: Path, cpu: torch.device) -> None:
    from my_models import tiny  # type: ignore[import-not-found]

    ckpt = tmp_path / "w.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(tiny().state_dict(), ckpt)
    plain = load_workload(WorkloadConfig(model=f"{user_module}:tiny", checkpoint=str(ckpt)), cpu)
    tuned = load_workload(
        WorkloadConfig(model=f"{user_module}:tiny", checkpoint=str(ckpt), finetune_epochs=3), cpu, cache_dir=tmp_path / "cache"
    )
    start = torch.load(ckpt, weights_only=True)
    assert all(torch.equal(start[k], v) for k, v in plain.model.state_dict().items())
    assert not torch.equal(start["1.weight"], tuned.model.state_dict()["1.weight"])
    x, y = tuned.data.subset("test", None)
    with torch.no_grad():
        losses = [float(torch.nn.functional.cross_entropy(m(x), y)) for m in (plain.model, tuned.model)]
    assert losses[1] < losses[0] - 0.03  # it learned from the data (at a tenth of the recipe's rate), from the checkpoint
