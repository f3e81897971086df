"""ImageNet-shape zoo entries: torchvision's state-dict keys, a torchvision-shaped network loaded
through ``module:callable``, and the one input-shape rule every command shares.

torchvision is not installed (and must not be): the expected key lists are written out here from
torchvision's published layouts, and a stand-in ``torchvision.models`` package with a ResNet-18
written the way torchvision writes it is generated in a temporary directory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

from haq.core.errors import ConfigError, DataError, ModelError
from haq.models import ZOO, build_model
from haq.workload import InputSpec, WorkloadConfig, resolve_input, workload_layers

Shapes = list[tuple[str, tuple[int, ...]]]


def _bn(prefix: str, c: int) -> Shapes:
    return [
        (f"{prefix}.weight", (c,)),
        (f"{prefix}.bias", (c,)),
        (f"{prefix}.running_mean", (c,)),
        (f"{prefix}.running_var", (c,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def torchvision_resnet18_keys(classes: int = 1000) -> Shapes:
    """torchvision.models.resnet18().state_dict(): names and shapes, in order."""
    out: Shapes = [("conv1.weight", (64, 3, 7, 7)), *_bn("bn1", 64)]
    cin = 64
    for stage, c in enumerate((64, 128, 256, 512), 1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            first_in = cin if block == 0 else c
            out += [
                (f"{p}.conv1.weight", (c, first_in, 3, 3)),
                *_bn(f"{p}.bn1", c),
                (f"{p}.conv2.weight", (c, c, 3, 3)),
                *_bn(f"{p}.bn2", c),
            ]
            if block == 0 and stage > 1:
                out += [(f"{p}.downsample.0.weight", (c, cin, 1, 1)), *_bn(f"{p}.downsample.1", c)]
        cin = c
    return out + [("fc.weight", (classes, 512)), ("fc.bias", (classes,))]


def torchvision_mobilenet_v2_keys(classes: int = 1000) -> Shapes:
    """torchvision.models.mobilenet_v2().state_dict(): names and shapes, in order."""
    out: Shapes = [("features.0.0.weight", (32, 3, 3, 3)), *_bn("features.0.1", 32)]
    cin, index = 32, 1
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for _ in range(n):
            p, hidden = f"features.{index}.conv", cin * t
            if t == 1:
                out += [
                    (f"{p}.0.0.weight", (hidden, 1, 3, 3)),
                    *_bn(f"{p}.0.1", hidden),
                    (f"{p}.1.weight", (c, hidden, 1, 1)),
                    *_bn(f"{p}.2", c),
                ]
            else:
                out += [
                    (f"{p}.0.0.weight", (hidden, cin, 1, 1)),
                    *_bn(f"{p}.0.1", hidden),
                    (f"{p}.1.0.weight", (hidden, 1, 3, 3)),
                    *_bn(f"{p}.1.1", hidden),
                    (f"{p}.2.weight", (c, hidden, 1, 1)),
                    *_bn(f"{p}.3", c),
                ]
            cin, index = c, index + 1
    out += [(f"features.{index}.0.weight", (1280, 320, 1, 1)), *_bn(f"features.{index}.1", 1280)]
    return out + [("classifier.1.weight", (classes, 1280)), ("classifier.1.bias", (classes,))]


@pytest.mark.parametrize(
    ("name", "expected", "params", "layers"),
    [
        ("resnet18", torchvision_resnet18_keys(), 11_689_512, 21),
        ("mobilenet_v2", torchvision_mobilenet_v2_keys(), 3_504_872, 53),
    ],
)
def test_zoo_state_dicts_are_torchvision_s(name: str, expected: Shapes, params: int, layers: int) -> None:
    model = build_model(name, (3, 224, 224), 2)  # the head stays ImageNet's: a torchvision checkpoint loads as is
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == expected
    assert sum(p.numel() for p in model.parameters()) == params  # torchvision's published counts
    found = workload_layers(WorkloadConfig(model=name))
    assert len(found) == layers and found[0].signature.in_h == 224 and found[-1].kind == "linear"
    assert ZOO[name].input_size == 224 and ZOO[name].classes == 1000


def test_mobilenet_v2_has_hags_53_layers_with_17_depthwise() -> None:
    layers = workload_layers(WorkloadConfig(model="mobilenet_v2"))
    assert sum(1 for layer in layers if layer.kind == "dwconv") == 17
    assert layers[-2].signature.out_channels == 1280 and layers[-2].signature.in_h == 7


FAKE_TORCHVISION = '''
"""A stand-in for torchvision.models with ResNet-18 written the way torchvision writes it."""
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(weights=None, num_classes=1000):
    return ResNet(num_classes=num_classes)
'''


@pytest.fixture
def fake_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    pkg = tmp_path / "tv" / "torchvision"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text(FAKE_TORCHVISION)
    monkeypatch.syspath_prepend(str(tmp_path / "tv"))
    yield pkg
    for name in ("torchvision.models", "torchvision"):
        sys.modules.pop(name, None)


def test_a_torchvision_checkpoint_loads_into_the_zoo_model_and_computes_the_same(fake_torchvision: Path, tmp_path: Path) -> None:
    from torchvision.models import resnet18  # type: ignore[import-not-found]  # the stand-in above

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        theirs = resnet18().eval()
        for m in theirs.modules():  # non-trivial BN statistics so the comparison means something
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ckpt = tmp_path / "resnet18.pt"
    torch.save(theirs.state_dict(), ckpt)
    ours = build_model("resnet18", (3, 224, 224), 1000)
    ours.load_state_dict(torch.load(ckpt, weights_only=True))  # strict: every key and shape matches
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), theirs(x), atol=1e-5)


def test_model_torchvision_callable_prices_like_the_zoo_entry(fake_torchvision: Path) -> None:
    zoo = workload_layers(WorkloadConfig(model="resnet18"))
    for cfg in (
        WorkloadConfig(model="torchvision.models:resnet18", input_shape=(3, 224, 224)),
        WorkloadConfig(model="torchvision.models:resnet18", dataset="imagefolder"),
    ):
        tv = workload_layers(cfg)
        assert [(a.name, a.signature) for a in tv] == [(b.name, b.signature) for b in zoo]


def test_missing_torchvision_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if it were not installed, even where it is
    with pytest.raises(ModelError) as err:
        workload_layers(WorkloadConfig(model="torchvision.models:resnet18", input_shape=(3, 224, 224)))
    assert "cannot import module 'torchvision.models'" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- the input-shape rule


@pytest.mark.parametrize(
    ("cfg", "shape"),
    [
        (WorkloadConfig(), (1, 8, 8)),  # digits CNN: its own 8×8
        (WorkloadConfig(model="resnet20"), (1, 32, 32)),  # digits32
        (WorkloadConfig(model="resnet18"), (3, 224, 224)),  # native 224 on image folders
        (WorkloadConfig(model="resnet18", input_size=160), (3, 160, 160)),
        (WorkloadConfig(model="mobilenet_v2", dataset="cifar10", input_size=96), (3, 96, 96)),
        (WorkloadConfig(model="resnet20", dataset="imagefolder"), (3, 32, 32)),  # the model's native side
        (WorkloadConfig(model="pkg:fn"), (1, 8, 8)),  # a user model without data: digits
        (WorkloadConfig(model="pkg:fn", dataset="imagefolder"), (3, 224, 224)),  # else the dataset's side
        (WorkloadConfig(model="pkg:fn", input_shape=(3, 64, 48)), (3, 64, 48)),
        (WorkloadConfig(model="pkg:fn", dataset="imagefolder", input_shape=(1, 64, 64)), (1, 64, 64)),  # grey images
    ],
)
def test_one_input_shape_rule(cfg: WorkloadConfig, shape: tuple[int, int, int]) -> None:
    spec = resolve_input(cfg)
    assert isinstance(spec, InputSpec) and spec.shape == shape and spec.origin


def test_input_shape_errors_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="contradicts"):
        WorkloadConfig(input_size=32, input_shape=(3, 64, 64))
    with pytest.raises(ConfigError, match="three integers"):
        WorkloadConfig(input_shape=(3, 64))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="has 1 channel"):
        resolve_input(WorkloadConfig(dataset="digits", input_shape=(3, 8, 8)))
    with pytest.raises(DataError, match="--data-root DIR to count them"):
        workload_layers(WorkloadConfig(model="resnet20", dataset="imagefolder"))  # its head follows the folder's classes
    with pytest.raises(ModelError, match=r"input 1x16x16 from --input-size 16 on dataset digits.*--input-shape C,H,W"):
        workload_layers(WorkloadConfig(model="digits_cnn", input_size=16))  # its classifier expects the 8×8 map
