"""Per-layer precision policies keyed by fully-qualified module name, and applying them.

A policy file is versioned JSON::

    {"format": "haq.policy", "version": 1,
     "layers": {"features.0": {"w_bits": 8, "a_bits": 8}, ...},
     "meta": {...free-form provenance...}}

Layer order in the file follows the model's execution order but carries no meaning: layers are
matched by name only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from torch import nn

from haq.core.errors import PolicyError
from haq.core.fileio import atomic_write_text
from haq.core.jsonio import read_json
from haq.quant.discovery import LayerInfo
from haq.quant.layers import QUANTIZABLE_TYPES, QuantConv2d, QuantLayer, QuantLinear
from haq.quant.primitives import FLOAT_BITS, check_bits

POLICY_FORMAT = "haq.policy"
POLICY_VERSION = 1
POLICY_MAX_BYTES = 16 * 2**20
"""Largest policy file read: a policy of thousands of layers stays under a megabyte."""


@dataclass(frozen=True)
class LayerBits:
    """Weight and input-activation bit widths of one layer (32 = float)."""

    w_bits: int
    a_bits: int


@dataclass(frozen=True)
class QuantPolicy:
    """Mapping fqn → :class:`LayerBits`, validated on construction."""

    layers: Mapping[str, LayerBits]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.layers:
            raise PolicyError("policy has no layers")
        clean: dict[str, LayerBits] = {}
        for name, bits in self.layers.items():
            if not isinstance(name, str) or not name:
                raise PolicyError(f"policy layer names must be non-empty strings, got {name!r}")
            if not isinstance(bits, LayerBits):
                raise PolicyError(f"layer '{name}': expected LayerBits, got {type(bits).__name__}")
            clean[name] = _checked(name, bits.w_bits, bits.a_bits)
        object.__setattr__(self, "layers", clean)
        object.__setattr__(self, "meta", dict(self.meta))

    @classmethod
    def uniform(cls, layer_names: Iterable[str], w_bits: int, a_bits: int | None = None) -> "QuantPolicy":
        """Every layer at the same precision (``a_bits`` defaults to ``w_bits``)."""
        a = w_bits if a_bits is None else a_bits
        return cls({n: LayerBits(w_bits, a) for n in layer_names})

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, tuple[int, int]]], meta: Mapping[str, Any] | None = None) -> "QuantPolicy":
        """A policy from (layer name, (w_bits, a_bits)) pairs, validated as any other."""
        return cls({n: LayerBits(w, a) for n, (w, a) in pairs}, meta or {})

    @classmethod
    def from_dict(cls, data: Any, source: str = "policy") -> "QuantPolicy":
        """Parse the JSON structure; every malformed field is a one-line :class:`PolicyError`."""
        if not isinstance(data, dict):
            raise PolicyError(f"{source}: top level must be a JSON object")
        if data.get("format") != POLICY_FORMAT:
            raise PolicyError(f"{source}: 'format' must be '{POLICY_FORMAT}', got {data.get('format')!r}")
        if data.get("version") != POLICY_VERSION:
            raise PolicyError(
                f"{source}: unsupported policy version {data.get('version')!r}; this haq reads version {POLICY_VERSION}"
            )
        raw = data.get("layers")
        if not isinstance(raw, dict) or not raw:
            raise PolicyError(f"{source}: 'layers' must be a non-empty object of name -> {{w_bits, a_bits}}")
        layers: dict[str, LayerBits] = {}
        for name, entry in raw.items():
            if not isinstance(entry, dict) or set(entry) != {"w_bits", "a_bits"}:
                raise PolicyError(f'{source}: layer \'{name}\' must be {{"w_bits": int, "a_bits": int}}, got {entry!r}')
            layers[name] = _checked(name, entry["w_bits"], entry["a_bits"])
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise PolicyError(f"{source}: 'meta' must be an object")
        return cls(layers, meta)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (see module docstring)."""
        return {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "layers": {n: {"w_bits": b.w_bits, "a_bits": b.a_bits} for n, b in self.layers.items()},
            "meta": dict(self.meta),
        }

    def save(self, path: str | Path) -> None:
        """Write atomically (a temp file renamed into place) so a crash never leaves half a file."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "QuantPolicy":
        """Read and validate a policy file: a regular UTF-8 JSON file of at most
        :data:`POLICY_MAX_BYTES` with no key given twice (a layer listed twice is refused, never
        silently last-wins)."""
        p = Path(path)
        return cls.from_dict(read_json(p, "policy file", max_bytes=POLICY_MAX_BYTES, error=PolicyError), source=str(p))

    def check_layers(self, layers: Iterable[LayerInfo | str]) -> None:
        """Raise if the policy names a layer the model lacks or misses one it has."""
        names = [layer.name if isinstance(layer, LayerInfo) else layer for layer in layers]
        unknown = [n for n in self.layers if n not in set(names)]
        if unknown:
            shown = f"{names[:8]}{'...' if len(names) > 8 else ''}"
            raise PolicyError(f"policy names unknown layer(s) {unknown[:5]}; the model's layers are {shown}")
        missing = [n for n in names if n not in self.layers]
        if missing:
            raise PolicyError(f"policy is missing layer(s) {missing[:5]} of the model ({len(missing)} in all)")

    def __getitem__(self, name: str) -> LayerBits:
        return self.layers[name]

    def __len__(self) -> int:
        return len(self.layers)


def _checked(layer: str, w_bits: object, a_bits: object) -> LayerBits:
    return LayerBits(check_bits(w_bits, f"layer '{layer}': w_bits"), check_bits(a_bits, f"layer '{layer}': a_bits"))


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def apply_policy_(model: nn.Module, policy: QuantPolicy, per_channel: bool = True) -> nn.Module:
    """Quantize ``model`` in place: swap each named layer for its quantized twin (shared weights).

    Already-quantized layers only change bits, so a policy can be re-applied cheaply between
    episodes; their calibration is kept. Returns ``model`` for chaining.
    """
    modules = dict(model.named_modules())
    quantizable = [n for n, m in modules.items() if isinstance(m, QUANTIZABLE_TYPES)]
    policy.check_layers(quantizable)
    for name in quantizable:
        m = modules[name]
        bits = policy[name]
        if isinstance(m, QuantLayer):
            m.set_bits(bits.w_bits, bits.a_bits)
            m.per_channel = per_channel
            continue
        twin = QuantConv2d if isinstance(m, nn.Conv2d) else QuantLinear
        _set_submodule(model, name, twin.from_float(m, bits.w_bits, bits.a_bits, per_channel, name=name))
    return model


def model_size_bits(layers: Iterable[LayerInfo], policy: QuantPolicy) -> int:
    """Weight storage of the conv / linear layers under ``policy``, in bits (biases as 32-bit)."""
    total = 0
    for info in layers:
        bits = policy[info.name].w_bits
        total += info.params * bits
        if info.signature.bias:
            total += info.signature.out_channels * FLOAT_BITS
    return total
