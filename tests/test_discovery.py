"""Layer discovery on every zoo model and on torchvision-style ResNet / MobileNetV2 definitions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from haq.core.errors import ModelError
from haq.models import ZOO, build_model
from haq.quant import (
    LayerSignature,
    QuantPolicy,
    apply_policy_,
    calibrate_,
    discover_layers,
)

SHAPES = {
    "digits_cnn": (1, 8, 8),
    "digits_mlp": (1, 8, 8),
    "resnet20": (1, 32, 32),
    "mobilenetv2": (1, 32, 32),
    "resnet18": (3, 224, 224),
    "mobilenet_v2": (3, 224, 224),
}
EXPECTED_COUNTS = {"digits_cnn": 4, "digits_mlp": 7, "resnet20": 22, "mobilenetv2": 23, "resnet18": 21, "mobilenet_v2": 53}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model(name: str) -> None:
    model = build_model(name, SHAPES[name], 10)
    layers = discover_layers(model, SHAPES[name])
    assert len(layers) == EXPECTED_COUNTS[name]
    assert [info.index for info in layers] == list(range(len(layers)))
    assert len({info.name for info in layers}) == len(layers)
    assert layers[-1].kind == "linear"
    for info in layers:
        assert isinstance(model.get_submodule(info.name), (nn.Conv2d, nn.Linear))
        assert info.macs > 0 and info.params > 0
        assert LayerSignature.from_dict(info.signature.to_dict()) == info.signature
    # a policy keyed by the discovered names applies and runs
    apply_policy_(model, QuantPolicy.uniform([info.name for info in layers], 4))
    calibrate_(model, [torch.rand(4, *SHAPES[name])], torch.device("cpu"))
    assert model(torch.rand(2, *SHAPES[name])).shape == (2, ZOO[name].classes or 10)  # ImageNet entries keep 1000


def test_mobilenet_has_depthwise_layers() -> None:
    layers = discover_layers(build_model("mobilenetv2", (1, 32, 32), 10), (1, 32, 32))
    dw = [info for info in layers if info.kind == "dwconv"]
    assert len(dw) == 7 and all(info.signature.groups == info.signature.in_channels for info in dw)


def test_signature_arithmetic() -> None:
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    (info,) = discover_layers(nn.Sequential(conv), (3, 9, 9))
    sig = info.signature
    assert sig.out_hw == (5, 5)
    assert sig.params == 8 * 3 * 9
    assert sig.macs == 8 * 3 * 9 * 25
    assert sig.key() == "conv-in3-out8-k3x3-s2x2-p1x1-g1-hw9x9-b1-n1"
    assert sig.with_batch(4).macs == 4 * sig.macs


def test_execution_order_not_registration_order() -> None:
    class Reversed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 2)
            self.body = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    assert [info.name for info in discover_layers(Reversed(), (3,))] == ["body", "head"]


def test_no_quantizable_layers() -> None:
    with pytest.raises(ModelError, match="no Conv2d or Linear"):
        discover_layers(nn.Sequential(nn.ReLU()), (3,))


def test_forward_failure_is_one_line() -> None:
    with pytest.raises(ModelError, match="forward pass .* failed") as exc:
        discover_layers(nn.Sequential(nn.Linear(3, 2)), (5,))
    assert "\n" not in str(exc.value)


# --- torchvision-style definitions (same module structure and names as torchvision's) ---------


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class TVResNet(nn.Module):
    def __init__(self, layers: tuple[int, ...] = (1, 1, 1, 1), num_classes: int = 10) -> None:
        super().__init__()
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make(16, layers[0], 1)
        self.layer2 = self._make(32, layers[1], 2)
        self.layer3 = self._make(64, layers[2], 2)
        self.layer4 = self._make(128, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128 * 4, num_classes)

    def _make(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, down)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ConvNormActivation(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class TVInvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvNormActivation(inp, hidden, k=1))
        layers += [
            ConvNormActivation(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TVMobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        feats: list[nn.Module] = [ConvNormActivation(3, 16, stride=2)]
        cin = 16
        for t, c, n, s in ((1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2)):
            for i in range(n):
                feats.append(TVInvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(ConvNormActivation(cin, 64, k=1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def test_torchvision_style_resnet() -> None:
    layers = discover_layers(TVResNet(), (3, 64, 64))
    names = [info.name for info in layers]
    assert names[0] == "conv1" and names[-1] == "fc"
    assert "layer1.0.downsample.0" in names and "layer4.0.conv3" in names
    assert len(layers) == 1 + 4 * 4 + 1
    assert layers[0].signature.in_h == 64 and discover_layers(TVResNet(), (3, 64, 64))[1].signature.in_h == 16


def test_torchvision_style_mobilenetv2() -> None:
    layers = discover_layers(TVMobileNetV2(), (3, 32, 32))
    names = [info.name for info in layers]
    assert names[0] == "features.0.0" and names[-1] == "classifier.1"
    assert "features.2.conv.1.0" in names
    assert sum(info.kind == "dwconv" for info in layers) == 5
