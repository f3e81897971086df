"""ImageNet-style data: preprocessing, lazy seeded loading, pixel-space attack radii on normalized
inputs, and evaluation that keeps every batch on the torch device it is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from torch import nn

import latency_tables
from haq.data import IMAGENET_MEAN, IMAGENET_STD, InputRange, load_dataset
from haq.data.transforms import Preprocess, random_resized_box
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import build_evaluator
from haq.quant import QuantPolicy
from haq.robust import AttackConfig, fgsm, pgd, robust_accuracy, spsa
from haq.training import TrainConfig, split_accuracy, train_model
from haq.workload import Workload, WorkloadConfig, load_workload

Image = pytest.importorskip("PIL.Image")
NORM = InputRange(mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes × 8 random 48×40 RGB images."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(8):
            _save(root / c / f"{i}.png", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    return root


# ---------------------------------------------------------------- preprocessing


def test_evaluation_transform_resizes_crops_and_normalizes(tmp_path: Path) -> None:
    img = np.zeros((200, 300, 3), dtype=np.uint8)
    img[:, 140:160] = 255  # a white vertical bar in the middle: inside every center crop
    img[:, :30] = 128  # grey left margin: cut away by the center crop
    _save(tmp_path / "x.png", img)
    x = Preprocess(3, 224, 224, NORM).evaluate(tmp_path / "x.png")
    assert x.shape == (3, 224, 224)
    pixels = NORM.to_pixels(x[None])[0]
    assert torch.allclose(pixels[:, :, 112], torch.ones(3, 224), atol=0.02)  # the bar, centred
    assert float(pixels[:, :, :5].max()) < 0.02  # the margin is cropped (256-side resize, 224 crop)
    black = (0.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[:, 0, 0], black, atol=1e-5)  # per-channel mean / std normalization


def test_training_transform_is_seeded_random_crop_and_flip(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    _save(tmp_path / "x.png", arr)
    pre = Preprocess(3, 32, 32, NORM)
    a = pre.train(tmp_path / "x.png", np.random.default_rng(5))
    assert a.shape == (3, 32, 32)
    assert torch.equal(a, pre.train(tmp_path / "x.png", np.random.default_rng(5)))
    outs = [pre.train(tmp_path / "x.png", np.random.default_rng(s)) for s in range(8)]
    assert len({o.sum().item() for o in outs}) == 8  # every seed crops differently
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, w, h = random_resized_box((80, 64), rng)
        assert 0 <= left and left + w <= 80 and 0 <= top and top + h <= 64
        assert 0.08 * 80 * 64 * 0.9 <= w * h


def test_lazy_loading_is_seeded_and_independent_of_workers(folder: Path) -> None:
    d0 = load_dataset("imagefolder", str(folder), seed=0, shape=(3, 24, 24))
    d2 = load_dataset("imagefolder", str(folder), seed=0, shape=(3, 24, 24), workers=2)
    b0 = [x for x, _ in d0.train_batches(4, seed=7)]
    b2 = [x for x, _ in d2.train_batches(4, seed=7)]
    assert len(b0) == 3 and all(torch.equal(a, b) for a, b in zip(b0, b2))  # augmentation seeded per sample
    again = [x for x, _ in d0.train_batches(4, seed=7)]
    assert all(torch.equal(a, b) for a, b in zip(b0, again))
    other = [x for x, _ in d0.train_batches(4, seed=8)]
    assert not all(torch.equal(a, b) for a, b in zip(b0, other))
    x, _ = d0.subset("train", 5)  # calibration subset: un-augmented, fixed by the seed
    assert torch.equal(x, d2.subset("train", 5)[0])
    other_split = load_dataset("imagefolder", str(folder), seed=1, shape=(3, 24, 24)).subset("train", 5)[0]
    assert not torch.equal(x, other_split)


def test_a_zoo_recipe_trains_on_an_image_folder(folder: Path, cpu: torch.device) -> None:
    d = load_dataset("imagefolder", str(folder), shape=(3, 16, 16))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    losses: list[float] = []
    train_model(model, d, TrainConfig(epochs=3, batch_size=4), cpu, progress=lambda _e, _n, loss: losses.append(loss))
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert 0.0 <= split_accuracy(model, d, "test", cpu) <= 1.0


# ---------------------------------------------------------------- ε in pixel space


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return NORM.from_pixels(x)


@pytest.mark.parametrize("attack", [fgsm, pgd, spsa])
def test_attacks_state_eps_in_pixels_on_normalized_inputs(attack: Callable[..., torch.Tensor]) -> None:
    """An attack on normalized inputs equals the same attack on pixels through a normalizing model."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 3)).double()
    x_pix = torch.rand(12, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    cfg = AttackConfig(eps=8 / 255, pgd_steps=5, spsa_steps=3, spsa_samples=4, seed=3)
    cpu = torch.device("cpu")
    adv_norm = attack(net, NORM.from_pixels(x_pix), y, cfg, cpu, NORM)
    adv_pix = attack(nn.Sequential(Normalize(), net), x_pix, y, cfg, cpu, (0.0, 1.0))
    back = NORM.to_pixels(adv_norm)
    assert torch.allclose(back, adv_pix, atol=1e-9)
    assert float((back - x_pix).abs().max()) <= cfg.eps + 1e-9  # ε is a pixel radius...
    assert float((back - x_pix).abs().max()) > 0.5 * cfg.eps
    assert float(back.min()) >= -1e-9 and float(back.max()) <= 1 + 1e-9  # ...and the result a valid image
    per_channel = (adv_norm - NORM.from_pixels(x_pix)).abs().amax(dim=(0, 2, 3))
    assert torch.all(per_channel <= cfg.eps / torch.tensor(IMAGENET_STD, dtype=torch.float64) + 1e-9)


def test_robust_accuracy_on_an_image_folder_uses_its_range(folder: Path, cpu: torch.device) -> None:
    d = load_dataset("imagefolder", str(folder), shape=(3, 16, 16))
    x, y = d.subset("test", None)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    r = robust_accuracy(model, x, y, ["fgsm", "pgd"], AttackConfig(eps=4 / 255, pgd_steps=3), cpu, d.value_range)
    assert r.eps == pytest.approx(4 / 255) and 0.0 <= r.worst_case <= r.clean


# ---------------------------------------------------------------- device placement


class OnDevice(torch.Tensor):
    """A CPU tensor standing for one moved to the fake accelerator: ops on it keep the type."""


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[torch.device]:
    """``tensor.to(cuda)`` returns an :class:`OnDevice` tensor on the CPU (no GPU needed)."""
    original = torch.Tensor.to

    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        target = kwargs.get("device", next((a for a in args if isinstance(a, (torch.device, str))), None))
        if target is None or torch.device(target).type != "cuda":
            return original(self, *args, **kwargs)
        args = tuple("cpu" if isinstance(a, (torch.device, str)) else a for a in args)
        kwargs = {k: ("cpu" if k == "device" else v) for k, v in kwargs.items() if k != "non_blocking"}
        out = original(self, *args, **kwargs)
        return out if isinstance(out, OnDevice) else out.as_subclass(OnDevice)

    monkeypatch.setattr(torch.Tensor, "to", to)
    yield torch.device("cuda")


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")
def test_evaluation_keeps_every_batch_on_the_torch_device(fake_cuda: torch.device, digits_workload: Workload) -> None:
    """Calibration, the DQ fine-tune, clean accuracy and the attacks all feed the model batches moved
    to the device; a CPU batch anywhere would be a silent fallback."""
    import copy

    wl = Workload(
        digits_workload.config,
        copy.deepcopy(digits_workload.model).to(fake_cuda),
        digits_workload.data,
        digits_workload.layers,
        fake_cuda,
    )
    seen: list[type] = []
    wl.model.register_forward_pre_hook(lambda _m, inputs: seen.append(type(inputs[0])))
    cfg = EvalConfig(kind="full", val_samples=40, robust_samples=10, finetune_batches=2, calib_batches=1, attack_steps=2)
    evaluator = build_evaluator(wl, latency_tables.load("bitfusion"), cfg)
    assert evaluator.reference.robust_acc is not None  # measured when first asked for
    metrics = evaluator.evaluate(QuantPolicy.uniform(wl.layer_names, 4))
    assert metrics.robust_acc is not None
    assert len(seen) > 20 and set(seen) == {OnDevice}  # reference, calibration, DQ training steps, attacks


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; the fake-device test covers placement here")
def test_evaluation_on_a_real_gpu(folder: Path, tmp_path: Path) -> None:
    from haq.hardware.build import extend_table
    from haq.hardware.build_analytical import AnalyticalBackend
    from haq.tables.table import load_table

    gpu = torch.device("cuda")
    cfg = WorkloadConfig(model="resnet18", dataset="imagefolder", data_root=str(folder), input_size=64, train_epochs=0)
    wl = load_workload(cfg, gpu)
    extend_table(AnalyticalBackend("bitfusion"), [layer.signature for layer in wl.layers], tmp_path / "t.json", 1)
    assert next(wl.model.parameters()).is_cuda
    wl.model.register_forward_pre_hook(lambda _m, inputs: None if inputs[0].is_cuda else pytest.fail("a CPU batch"))
    ev_cfg = EvalConfig(
        kind="full", val_samples=4, robust_samples=2, finetune_batches=1, calib_batches=1, batch_size=4, attack_steps=2
    )
    build_evaluator(wl, load_table(tmp_path / "t.json"), ev_cfg).evaluate(QuantPolicy.uniform(wl.layer_names, 8))
