"""Find every conv / linear layer of an arbitrary model, in execution order, with its features.

Discovery runs one forward pass with hooks on a zero input of the given shape, so it follows
the model's real data flow (not registration order) and records input sizes the search and the
cost tables need. Layers are identified by fully-qualified module name (``layer1.0.conv1``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import torch
from torch import nn

from haq.core.errors import InternalError, ModelError
from haq.quant.layers import QUANTIZABLE_TYPES


@dataclass(frozen=True)
class LayerSignature:
    """Everything that determines a layer's cost on a device, independent of its name.

    Two layers with equal signatures cost the same, so one table entry serves both, in any
    network. ``op`` is ``"conv"``, ``"dwconv"`` (groups == in == out channels) or ``"linear"``;
    for linear layers kernel/stride/padding are 1/1/0 and ``in_h``/``in_w`` hold the number of
    rows the matmul sees (1 for a plain classifier head).
    """

    op: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    in_h: int
    in_w: int
    bias: bool
    batch: int = 1

    def key(self) -> str:
        """Canonical, human-readable string key used in table files."""
        return (
            f"{self.op}-in{self.in_channels}-out{self.out_channels}"
            f"-k{self.kernel[0]}x{self.kernel[1]}-s{self.stride[0]}x{self.stride[1]}"
            f"-p{self.padding[0]}x{self.padding[1]}-g{self.groups}"
            f"-hw{self.in_h}x{self.in_w}-b{int(self.bias)}-n{self.batch}"
        )

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output spatial size (rows for linear layers)."""
        if self.op == "linear":
            return (self.in_h, self.in_w)
        oh = (self.in_h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        ow = (self.in_w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        return (oh, ow)

    @property
    def params(self) -> int:
        """Number of weights (bias excluded)."""
        return self.out_channels * (self.in_channels // self.groups) * self.kernel[0] * self.kernel[1]

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one forward pass at this signature's batch."""
        oh, ow = self.out_hw
        return self.batch * self.params * oh * ow

    @property
    def input_elems(self) -> int:
        """Input activations read by the layer (whole batch)."""
        return self.batch * self.in_channels * self.in_h * self.in_w

    @property
    def output_elems(self) -> int:
        """Output activations written by the layer (whole batch)."""
        oh, ow = self.out_hw
        return self.batch * self.out_channels * oh * ow

    def with_batch(self, batch: int) -> "LayerSignature":
        """The same layer at another batch size."""
        return replace(self, batch=batch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["kernel"], d["stride"], d["padding"] = list(self.kernel), list(self.stride), list(self.padding)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerSignature":
        """Inverse of :meth:`to_dict`."""
        return cls(
            op=str(d["op"]),
            in_channels=int(d["in_channels"]),
            out_channels=int(d["out_channels"]),
            kernel=(int(d["kernel"][0]), int(d["kernel"][1])),
            stride=(int(d["stride"][0]), int(d["stride"][1])),
            padding=(int(d["padding"][0]), int(d["padding"][1])),
            groups=int(d["groups"]),
            in_h=int(d["in_h"]),
            in_w=int(d["in_w"]),
            bias=bool(d["bias"]),
            batch=int(d.get("batch", 1)),
        )


@dataclass(frozen=True)
class LayerInfo:
    """One quantizable layer of a model: its name, position and cost signature."""

    name: str
    index: int
    signature: LayerSignature
    pool_input: int = 0
    """Elements entering the ``nn.MaxPool2d`` whose output this layer reads (0: none). Not part of
    the signature (the layer costs the same); a precision boundary into this layer prices it:
    onnxruntime moves the Quantize of a float -> int8 boundary up through a max-pool and runs
    the pool in int8, many times slower than its float kernel (:mod:`haq.hardware.graph_fit`)."""

    @property
    def kind(self) -> str:
        """``conv``, ``dwconv`` or ``linear``."""
        return self.signature.op

    @property
    def params(self) -> int:
        """Number of weights."""
        return self.signature.params

    @property
    def macs(self) -> int:
        """MACs per sample."""
        return self.signature.macs


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def _signature(module: nn.Module, x: torch.Tensor) -> LayerSignature:
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):
            raise ModelError(f"conv padding '{module.padding}' is not supported; use explicit integer padding")
        if _pair(module.dilation) != (1, 1):
            raise ModelError("dilated convolutions are not supported by the cost tables")
        depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
        return LayerSignature(
            op="dwconv" if depthwise else "conv",
            in_channels=module.in_channels,
            out_channels=module.out_channels,
            kernel=_pair(module.kernel_size),
            stride=_pair(module.stride),
            padding=_pair(module.padding),
            groups=module.groups,
            in_h=int(x.shape[-2]),
            in_w=int(x.shape[-1]),
            bias=module.bias is not None,
        )
    if not isinstance(module, nn.Linear):
        raise InternalError(f"discovery hooked a {type(module).__name__}; only Conv2d and Linear are quantizable")
    rows = int(x.numel() // x.shape[-1] // x.shape[0]) if x.dim() > 1 else 1
    return LayerSignature(
        op="linear",
        in_channels=module.in_features,
        out_channels=module.out_features,
        kernel=(1, 1),
        stride=(1, 1),
        padding=(0, 0),
        groups=1,
        in_h=rows,
        in_w=1,
        bias=module.bias is not None,
    )


def discover_layers(model: nn.Module, input_shape: Sequence[int]) -> list[LayerInfo]:
    """All conv / linear layers of ``model`` in execution order.

    ``input_shape`` is one sample's shape without the batch dimension, e.g. ``(1, 8, 8)``.
    Raises :class:`ModelError` when the model has no quantizable layer or a layer is reused
    with different input shapes (its cost would be ambiguous).
    """
    names = {m: n for n, m in model.named_modules() if isinstance(m, QUANTIZABLE_TYPES)}
    if not names:
        raise ModelError(f"model {type(model).__name__} has no Conv2d or Linear layer to quantize")
    seen: dict[str, LayerSignature] = {}
    order: list[str] = []
    pooled: list[tuple[torch.Tensor, int]] = []  # max-pool outputs (kept alive, so no storage is reused) and input sizes
    pool_input: dict[str, int] = {}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        name = names[module]
        sig = _signature(module, inputs[0])
        if name in seen:
            if seen[name] != sig:
                raise ModelError(f"layer '{name}' is called with different input shapes; it cannot be costed")
            return
        seen[name] = sig
        order.append(name)
        pool_input[name] = _pool_feeding(inputs[0], pooled)

    def pool_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        pooled.append((output, int(inputs[0].numel())))

    handles = [m.register_forward_pre_hook(hook) for m in names]
    handles += [m.register_forward_hook(pool_hook) for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    except ModelError:
        raise
    except Exception as exc:  # the user's model may raise anything on a wrong shape
        raise ModelError(
            f"forward pass of {type(model).__name__} on input shape {tuple(input_shape)} failed: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not order:
        raise ModelError(f"model {type(model).__name__} never called its Conv2d / Linear layers in forward()")
    return [LayerInfo(name=n, index=i, signature=seen[n], pool_input=pool_input[n]) for i, n in enumerate(order)]


def _pool_feeding(x: torch.Tensor, pooled: Sequence[tuple[torch.Tensor, int]]) -> int:
    """Input elements of the max-pool whose output ``x`` is (or a reshaped view of it, as
    ``flatten`` gives; onnxruntime moves a Quantize through those too), else 0."""
    for out, n_in in pooled:
        if out.numel() == x.numel() and out.data_ptr() == x.data_ptr():
            return n_in
    return 0
