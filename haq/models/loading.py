"""Building a model by name (zoo or a user's ``package.module:callable``) and loading float
weights safely (``weights_only``: a checkpoint is never unpickled as arbitrary objects)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from haq.core.errors import ModelError
from haq.models.zoo import ZOO, model_names


def import_callable(path: str) -> Callable[..., nn.Module]:
    """The object named by ``package.module:attr.path``; :class:`ModelError` naming what is missing."""
    mod_name, _, attr = path.partition(":")
    if not mod_name or not attr:
        raise ModelError(f"model '{path}' is neither a zoo name ({', '.join(model_names())}) nor 'package.module:callable'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"cannot import module '{mod_name}' for model '{path}': {exc}") from exc
    except (Exception, SystemExit) as exc:  # importing the user's module runs their code
        raise ModelError(f"importing module '{mod_name}' for model '{path}' failed: {_describe(exc)}") from exc
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"module '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"'{path}' is not callable")
    return obj  # type: ignore[return-value]


def build_model(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A fresh (untrained) model: a zoo name or a user's ``package.module:callable``.

    User callables are called with no arguments and must return an ``nn.Module``. Whatever
    their code raises, ``SystemExit`` included (``sys:exit`` would otherwise end haq with
    status 0 and no word), is one :class:`ModelError`; only Ctrl-C passes through.
    """
    if name in ZOO:
        return ZOO[name].factory(int(input_shape[0]), num_classes)
    fn = import_callable(name)
    try:
        model = fn()
    except (Exception, SystemExit) as exc:  # the user's code may raise anything
        raise ModelError(f"calling '{name}()' failed: {_describe(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"'{name}()' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_checkpoint_(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a float state dict into ``model`` in place (``weights_only=True``: no arbitrary unpickling)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint {p} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise ModelError(f"checkpoint {p} cannot be loaded safely (weights only): {str(exc).splitlines()[0]}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {p} holds {type(state).__name__}, expected a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        raise ModelError(f"checkpoint {p} does not match the model: {lines[1].strip() if len(lines) > 1 else exc}") from exc
    return model


def _describe(exc: BaseException) -> str:
    """``Type: first line of the message`` (one line, whatever the user's code raised)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
