"""An agent as data: what a stable-baselines3 algorithm is made of, written and read back without
pickle, so a checkpoint or a shared agent can never run code.

stable-baselines3's own ``save`` pickles every attribute it cannot write as JSON (schedules, the
action noise, the replay buffer) and its ``load`` unpickles them. Here nothing is pickled:

* ``agent_state.json`` — the hyperparameters the algorithm is constructed with (constant
  learning rate and clip range: the schedules are rebuilt from them), its counters, its
  observation and action spaces, the exploration noise and the RNG states;
* ``agent_weights.pt`` — the state dicts of the networks and optimizers (and SAC's entropy
  coefficient), read with ``torch.load(weights_only=True)``, which loads tensors and plain
  containers only;
* ``buffer.npz`` — the replay buffer (off-policy; it holds the actions the environment
  applied, see :class:`~haq.search.agents.AppliedActionReplayBuffer`) or PPO's collected
  rollout, read with ``np.load(allow_pickle=False)``.

Loading constructs the algorithm from those hyperparameters and then loads the state into it,
so what comes back is exactly one of the classes haq trains, whatever the files say.
"""

from __future__ import annotations

import base64
import io
import json
import math
import pickle
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DDPG, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer, RolloutBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import get_device

from haq.core import jsonio
from haq.core.errors import InternalError, RunDirError
from haq.core.fileio import atomic_write_bytes
from haq.search.noise import BatchNoise, DecayingTruncatedNormalNoise, noise_from_dict

STATE_FILE = "agent_state.json"
WEIGHTS_FILE = "agent_weights.pt"
BUFFER_FILE = "buffer.npz"
STATE_FORMAT = "haq.agent_state"
STATE_VERSION = 1
MAX_WEIGHTS_BYTES = 2**30
MAX_BUFFER_BYTES = 4 * 2**30
MAX_TRANSITIONS = 10**7
"""Largest replay buffer (or PPO rollout) a saved agent may ask for: far above any search's."""
MAX_LAYERS, MAX_WIDTH = 16, 2**14
"""Deepest and widest hidden layers a saved agent may ask for (haq's have 1-2 layers of 16-256)."""

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ddpg": DDPG, "td3": TD3, "sac": SAC, "ppo": PPO}
"""The stable-baselines3 algorithms haq trains, by the name configs and saved agents use."""

_OFF_POLICY = (
    "learning_rate",
    "gamma",
    "net_arch",
    "buffer_size",
    "learning_starts",
    "batch_size",
    "tau",
    "train_freq",
    "gradient_steps",
    "n_steps",
)
HYPERPARAMETERS: dict[type[BaseAlgorithm], tuple[str, ...]] = {
    DDPG: _OFF_POLICY,
    TD3: (*_OFF_POLICY, "policy_delay", "target_policy_noise", "target_noise_clip"),
    SAC: (*_OFF_POLICY, "ent_coef", "target_update_interval", "target_entropy"),
    PPO: (
        "learning_rate",
        "gamma",
        "net_arch",
        "n_steps",
        "batch_size",
        "n_epochs",
        "gae_lambda",
        "clip_range",
        "clip_range_vf",
        "normalize_advantage",
        "ent_coef",
        "vf_coef",
        "max_grad_norm",
        "target_kl",
    ),
}
"""What each algorithm is constructed with (``n_steps`` of an off-policy agent is its replay
buffer's n-step horizon); everything else is the algorithm's default."""

_COUNT = {"buffer_size", "batch_size", "policy_delay", "target_update_interval", "n_steps", "n_epochs"}
_COUNT0 = {"learning_starts"}
_NUMBER = {
    "learning_rate",
    "gamma",
    "tau",
    "target_policy_noise",
    "target_noise_clip",
    "target_entropy",
    "gae_lambda",
    "clip_range",
    "vf_coef",
    "max_grad_norm",
}
_OPTIONAL_NUMBER = {"clip_range_vf", "target_kl"}
COUNTERS = ("num_timesteps", "_episode_num", "_n_updates")
_REPLAY_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
_ROLLOUT_FIELDS = ("observations", "actions", "rewards", "returns", "episode_starts", "values", "log_probs", "advantages")


@dataclass(frozen=True)
class TrainingState:
    """What continues an interrupted ``learn`` exactly as it would have gone on: the global RNG
    states (Python, NumPy, torch) and the action space's, and the exploration noise, as they were
    when the agent was saved. Validated when read, so :meth:`apply` cannot fail half-way."""

    python: tuple[Any, ...]
    numpy: tuple[Any, ...]
    torch: torch.Tensor
    action_space: Mapping[str, Any] | None
    noise: Mapping[str, Any] | None

    @classmethod
    def capture(cls, model: BaseAlgorithm) -> "TrainingState":
        """The states now (a checkpoint is written between two steps of ``learn``)."""
        saved = isinstance(model.action_noise, (DecayingTruncatedNormalNoise, BatchNoise))
        noise = model.action_noise.to_dict() if saved else None
        return cls(
            random.getstate(),
            np.random.get_state(legacy=True),
            torch.get_rng_state(),
            model.action_space.np_random.bit_generator.state,
            noise,
        )

    def to_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.python
        name, keys, pos, has_gauss, cached = self.numpy
        return {
            "python": {"version": version, "state": list(internal), "gauss_next": gauss},
            "numpy": {
                "bit_generator": name,
                "keys": [int(k) for k in keys],
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            },
            "torch": base64.b64encode(self.torch.numpy().tobytes()).decode("ascii"),
            "action_space": self.action_space,
            "noise": self.noise,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "TrainingState":
        """The state :meth:`to_dict` wrote; ``ValueError`` if any part would not load."""
        if not isinstance(data, Mapping):
            raise ValueError("'rng' must be an object")
        try:
            py = data["python"]
            python = (py["version"], tuple(py["state"]), py["gauss_next"])
            random.Random().setstate(python)
            nps = data["numpy"]
            keys = np.asarray(nps["keys"], dtype=np.uint32)
            numpy = (nps["bit_generator"], keys, nps["pos"], nps["has_gauss"], nps["cached_gaussian"])
            np.random.RandomState().set_state(numpy)
            state = torch.frombuffer(bytearray(base64.b64decode(data["torch"], validate=True)), dtype=torch.uint8).clone()
            torch.Generator().set_state(state)
            space = data["action_space"]
            if space is not None:
                np.random.default_rng().bit_generator.state = space
            noise = data["noise"]
            if noise is not None:
                noise_from_dict(noise)
        except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as exc:
            raise ValueError(f"RNG states do not load ({type(exc).__name__}: {exc})") from None
        return cls(python, numpy, state, space, noise)

    def apply(self, model: BaseAlgorithm) -> None:
        """Put every RNG and the noise of ``model`` back to the saved states."""
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.action_space is not None:
            model.action_space.np_random.bit_generator.state = dict(self.action_space)
        if self.noise is not None and isinstance(model.action_noise, (DecayingTruncatedNormalNoise, BatchNoise)):
            model.action_noise.restore(self.noise)


def algo_name(model: BaseAlgorithm) -> str:
    """The name ``model``'s algorithm has in :data:`ALGORITHMS`."""
    for name, cls in ALGORITHMS.items():
        if type(model) is cls:
            return name
    raise InternalError(f"unsupported agent type {type(model).__name__}; haq saves {', '.join(ALGORITHMS)}")


def write_snapshot(model: BaseAlgorithm, directory: Path) -> None:
    """Write ``model`` as data into ``directory`` (the three files of the module docstring)."""
    doc = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "algo": algo_name(model),
        "hyperparameters": _hyperparameters(model),
        "counters": {name: int(getattr(model, name)) for name in COUNTERS},
        "progress_remaining": float(model._current_progress_remaining),  # noqa: SLF001 - SB3 keeps it private; schedules read it
        "spaces": {"observation": _box(model.observation_space), "action": _box(model.action_space)},
        "rng": TrainingState.capture(model).to_dict(),
    }
    atomic_write_bytes(directory / STATE_FILE, (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode("utf-8"))
    _, variables = model._get_torch_save_params()  # noqa: SLF001 - SB3's documented hook: what its own save writes as tensors
    weights = {
        "params": model.get_parameters(),
        "variables": {name: _attr(model, name).detach().clone() for name in variables},
    }
    buf = io.BytesIO()
    torch.save(weights, buf)
    atomic_write_bytes(directory / WEIGHTS_FILE, buf.getvalue())
    arrays = _buffer_arrays(model)
    if arrays is not None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(directory / BUFFER_FILE, buf.getvalue())


def read_snapshot(
    directory: Path,
    env: gym.Env,
    with_buffer: bool,
    replay_buffer_class: type[NStepReplayBuffer],
    capacity: int | None = None,
) -> tuple[BaseAlgorithm, TrainingState]:
    """Construct the saved algorithm on ``env`` (off-policy ones with ``replay_buffer_class``) and
    load its state; one :class:`RunDirError` line for a file that is malformed or does not fit ``env``.

    ``capacity`` grows a replay buffer that has not wrapped around to that many transitions (a
    resumed search that runs more episodes keeps every one, as an uninterrupted one would).
    """
    path = directory / STATE_FILE
    doc = jsonio.read_json(path, "agent state", error=RunDirError)
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or doc.get("version") != STATE_VERSION:
        raise RunDirError(f"{path}: not a haq agent state (format '{STATE_FORMAT}' version {STATE_VERSION})")
    cls = ALGORITHMS.get(doc.get("algo"))  # type: ignore[arg-type]
    if cls is None:
        raise RunDirError(f"{path}: 'algo' must be one of {', '.join(ALGORITHMS)}")
    try:
        hp = _checked_hyperparameters(cls, doc.get("hyperparameters"))
        counters = doc.get("counters")
        if not isinstance(counters, dict) or any(_count(counters.get(n), 0) is None for n in COUNTERS):
            raise ValueError(f"'counters' must hold non-negative integers {', '.join(COUNTERS)}")
        progress = doc.get("progress_remaining")
        if _number(progress) is None:
            raise ValueError("'progress_remaining' must be a number")
        training = TrainingState.from_dict(doc.get("rng"))
    except ValueError as exc:
        raise RunDirError(f"{path}: {exc}") from None
    _check_spaces(doc.get("spaces"), env, path)
    buffer_path = directory / BUFFER_FILE
    arrays = _read_buffer(buffer_path) if with_buffer and buffer_path.is_file() else None
    if cls is not PPO and capacity is not None and capacity > hp["buffer_size"] and not (arrays is not None and arrays["full"]):
        hp["buffer_size"] = min(capacity, MAX_TRANSITIONS)
    kwargs = _constructor_kwargs(cls, hp)
    if cls is not PPO:
        kwargs["replay_buffer_class"] = replay_buffer_class
        kwargs["replay_buffer_kwargs"] = {"n_steps": hp["n_steps"], "gamma": hp["gamma"]}
        if training.noise is not None:
            kwargs["action_noise"] = noise_from_dict(training.noise)
    try:
        model = cls("MlpPolicy", env, device="cpu", verbose=0, **kwargs)
    except (ValueError, TypeError, AssertionError) as exc:
        raise RunDirError(f"{path}: the saved hyperparameters do not build a {doc['algo']} agent ({exc})") from None
    for name in COUNTERS:
        setattr(model, name, int(counters[name]))
    model._current_progress_remaining = float(progress)  # noqa: SLF001 - restored as SB3's own load does
    _load_weights(model, directory / WEIGHTS_FILE)
    if arrays is not None:
        _fill_buffer(model, arrays, buffer_path)
    return model, training


def _hyperparameters(model: BaseAlgorithm) -> dict[str, Any]:
    names = HYPERPARAMETERS.get(type(model))
    if names is None:
        raise InternalError(f"cannot save a {type(model).__name__} agent; haq saves {', '.join(ALGORITHMS)}")
    out: dict[str, Any] = {}
    for name in names:
        if name == "net_arch":
            out[name] = model.policy_kwargs["net_arch"]
        elif name == "train_freq":
            out[name] = [int(model.train_freq.frequency), model.train_freq.unit.value]  # type: ignore[attr-defined]
        elif name == "n_steps" and isinstance(model, OffPolicyAlgorithm):
            out[name] = int(model.replay_buffer_kwargs["n_steps"])
        elif name in ("learning_rate", "clip_range", "clip_range_vf"):
            out[name] = _constant(getattr(model, name), name)
        else:
            value = getattr(model, name)
            out[name] = value.item() if isinstance(value, (np.generic, torch.Tensor)) else value
    return out


def _constant(value: Any, name: str) -> float | None:
    """A schedule's value: haq's agents use constant rates, so a schedule is saved as its number."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    start, end = float(value(1.0)), float(value(0.0))
    if start != end:
        raise InternalError(f"{name} is a non-constant schedule; haq saves constant rates only")
    return start


def _checked_hyperparameters(cls: type[BaseAlgorithm], data: Any) -> dict[str, Any]:
    names = HYPERPARAMETERS[cls]
    if not isinstance(data, dict) or set(data) != set(names):
        raise ValueError(f"'hyperparameters' must hold exactly {', '.join(names)}")
    for name, value in data.items():
        if name in _COUNT and _count(value, 1) is None:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if name in _COUNT0 and _count(value, 0) is None:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if name in _NUMBER and _number(value) is None:
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        if name in _OPTIONAL_NUMBER and value is not None and _number(value) is None:
            raise ValueError(f"{name} must be a finite number or null, got {value!r}")
    if data.get("buffer_size", 0) > MAX_TRANSITIONS or data.get("n_steps", 0) > MAX_TRANSITIONS:
        raise ValueError(f"buffer_size and n_steps may be at most {MAX_TRANSITIONS}")
    net = data["net_arch"]

    def layers_ok(sizes: Any) -> bool:
        return isinstance(sizes, list) and 0 < len(sizes) <= MAX_LAYERS and all(_count(h, 1) and h <= MAX_WIDTH for h in sizes)

    if not isinstance(net, dict) or not all(isinstance(k, str) and layers_ok(v) for k, v in net.items()):
        raise ValueError(f"net_arch must map network names to 1-{MAX_LAYERS} layer sizes of 1-{MAX_WIDTH}")
    if cls is not PPO:
        freq = data["train_freq"]
        if not (isinstance(freq, list) and len(freq) == 2 and _count(freq[0], 1) is not None and freq[1] in ("step", "episode")):
            raise ValueError("train_freq must be [count, 'step' | 'episode']")
        if isinstance(data["gradient_steps"], bool) or not isinstance(data["gradient_steps"], int) or data["gradient_steps"] < -1:
            raise ValueError("gradient_steps must be an integer >= -1")
    if cls is SAC and not (_number(data["ent_coef"]) is not None or _auto_ent_coef(data["ent_coef"])):
        raise ValueError("ent_coef must be a number, 'auto' or 'auto_<positive number>'")
    if cls is PPO:
        if _number(data["ent_coef"]) is None or not isinstance(data["normalize_advantage"], bool):
            raise ValueError("ent_coef must be a number and normalize_advantage a boolean")
    return dict(data)


def policy_kwargs(cls: type[BaseAlgorithm], net_arch: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """The policy arguments of every haq agent, new or restored: its layer sizes, and Adam fused
    into one kernel per step (PPO keeps the ``eps`` stable-baselines3 gives it when it is given
    no optimizer arguments). Why: with networks this small an optimizer step is per-tensor dispatch,
    and the agent's update is about a third of a digits CNN search's wall time; fused, a gradient
    step of SAC / TD3 / DDPG took 0.90 / 0.83 / 0.91 of its time with the per-tensor loop
    (``bench/agent_update.py``, medians of paired ratios)."""
    optimizer: dict[str, Any] = {"fused": True, "eps": 1e-5} if cls is PPO else {"fused": True}
    return {"net_arch": {k: list(v) for k, v in net_arch.items()}, "optimizer_kwargs": optimizer}


def _constructor_kwargs(cls: type[BaseAlgorithm], hp: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in hp.items() if k not in ("net_arch", "n_steps", "train_freq")}
    kwargs["policy_kwargs"] = policy_kwargs(cls, hp["net_arch"])
    if cls is PPO:
        kwargs["n_steps"] = hp["n_steps"]
    else:
        kwargs["train_freq"] = (hp["train_freq"][0], hp["train_freq"][1])
    return kwargs


def _box(space: gym.Space) -> dict[str, Any]:
    if not isinstance(space, gym.spaces.Box):
        raise InternalError(f"haq's agents act in Box spaces, not {type(space).__name__}")
    return {"shape": list(space.shape), "low": space.low.reshape(-1).tolist(), "high": space.high.reshape(-1).tolist()}


def _check_spaces(data: Any, env: gym.Env, path: Path) -> None:
    """Refuse an agent saved for other observation or action spaces (what SB3's load checks)."""
    for key, space in (("observation", env.observation_space), ("action", env.action_space)):
        saved = data.get(key) if isinstance(data, dict) else None
        try:
            shape = tuple(saved["shape"])  # type: ignore[index]
            low = np.asarray(saved["low"], dtype=np.float64)  # type: ignore[index]
            high = np.asarray(saved["high"], dtype=np.float64)  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            raise RunDirError(f"{path}: 'spaces' must describe the observation and action boxes (shape, low, high)") from None
        same = (
            isinstance(space, gym.spaces.Box)
            and shape == space.shape
            and low.shape == high.shape == (int(np.prod(shape)),)
            and np.allclose(low, space.low.reshape(-1))
            and np.allclose(high, space.high.reshape(-1))
        )
        if not same:
            raise RunDirError(
                f"{path}: incompatible {key} layout for this environment (saved {list(shape)}, environment "
                f"{list(space.shape or ())}); the agent cannot be reused here"
            )


def _attr(model: BaseAlgorithm, dotted: str) -> Any:
    obj: Any = model
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _load_weights(model: BaseAlgorithm, path: Path) -> None:
    """Networks, optimizers and tensors from ``path``: tensors and plain containers only (weights_only)."""
    data = jsonio.read_bytes(path, "agent weights", max_bytes=MAX_WEIGHTS_BYTES, error=RunDirError)
    try:
        doc = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        zipfile.BadZipFile,
    ) as exc:  # each is torch's way of saying "not a file of plain tensors"
        raise RunDirError(f"{path}: not haq agent weights (tensors only): {type(exc).__name__}") from None
    names, variables = model._get_torch_save_params()  # noqa: SLF001 - the names SB3's own save uses
    params = doc.get("params") if isinstance(doc, dict) else None
    tensors = doc.get("variables") if isinstance(doc, dict) else None
    fits = isinstance(params, dict) and set(params) == set(names)
    if not (fits and isinstance(tensors, dict) and set(tensors) == set(variables)):
        raise RunDirError(
            f"{path}: must hold the state dicts {', '.join(names)} and the tensors {', '.join(variables) or '(none)'}"
        )
    try:
        model.set_parameters(params, exact_match=True, device=get_device("cpu"))
        with torch.no_grad():
            for name in variables:
                target, value = _attr(model, name), tensors[name]
                if not isinstance(value, torch.Tensor) or value.shape != target.shape:
                    raise ValueError(f"{name} must be a tensor of shape {list(target.shape)}")
                target.copy_(value)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise RunDirError(f"{path}: the weights do not fit this agent ({str(exc).splitlines()[0]})") from None


def _buffer_arrays(model: BaseAlgorithm) -> dict[str, np.ndarray] | None:
    """The filled part of the replay buffer, or PPO's rollout before its update; None if nothing to keep."""
    if isinstance(model, OffPolicyAlgorithm):
        buffer: ReplayBuffer | RolloutBuffer = model.replay_buffer  # type: ignore[assignment]
        fields = _REPLAY_FIELDS
    elif isinstance(model, PPO) and not model.rollout_buffer.generator_ready:
        buffer, fields = model.rollout_buffer, _ROLLOUT_FIELDS
    else:
        return None
    if buffer is None:
        return None
    n = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {name: getattr(buffer, name)[:n] for name in fields}
    return {**arrays, "pos": np.asarray(buffer.pos, dtype=np.int64), "full": np.asarray(buffer.full, dtype=np.bool_)}


def _read_buffer(path: Path) -> dict[str, Any]:
    """The arrays of a saved buffer (``allow_pickle=False``: arrays of numbers only), ``pos`` and ``full``."""
    data = jsonio.read_bytes(path, "replay buffer", max_bytes=MAX_BUFFER_BYTES, error=RunDirError)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays: dict[str, Any] = {name: z[name] for name in z.files}
        pos, full = arrays.pop("pos"), arrays.pop("full")
        if pos.shape != () or full.shape != () or pos.dtype.kind not in "iu" or full.dtype != np.bool_:
            raise ValueError("pos must be an integer and full a boolean")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise RunDirError(f"{path}: not a haq replay buffer (arrays only): {exc}") from None
    return {**arrays, "pos": int(pos), "full": bool(full)}


def _fill_buffer(model: BaseAlgorithm, arrays: Mapping[str, Any], path: Path) -> None:
    """Fill the freshly built buffer of ``model`` with :func:`_read_buffer`'s arrays, checked against it."""
    if isinstance(model, OffPolicyAlgorithm):
        buffer: ReplayBuffer | RolloutBuffer = model.replay_buffer  # type: ignore[assignment]
        fields = _REPLAY_FIELDS
    else:
        buffer, fields = model.rollout_buffer, _ROLLOUT_FIELDS  # type: ignore[attr-defined]
    if set(arrays) != {*fields, "pos", "full"}:
        raise RunDirError(f"{path}: a {type(model).__name__} buffer holds exactly {', '.join(fields)}, pos and full")
    pos, full = arrays["pos"], arrays["full"]
    if not 0 <= pos <= buffer.buffer_size:
        raise RunDirError(f"{path}: pos {pos} outside the buffer's {buffer.buffer_size} slots")
    n = buffer.buffer_size if full else pos
    for name in fields:
        arr, dst = arrays[name], getattr(buffer, name)
        if arr.dtype != dst.dtype or arr.shape != (n, *dst.shape[1:]):
            raise RunDirError(
                f"{path}: '{name}' is {arr.dtype}{list(arr.shape)}; this agent's buffer needs {dst.dtype}{[n, *dst.shape[1:]]}"
            )
    for name in fields:
        getattr(buffer, name)[:n] = arrays[name]
    buffer.pos, buffer.full = pos, full


def _count(value: Any, low: int) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= low else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _auto_ent_coef(value: Any) -> bool:
    """SB3's auto-tuned entropy weight: ``auto`` or ``auto_<initial value>``."""
    if value == "auto":
        return True
    if not isinstance(value, str) or not value.startswith("auto_"):
        return False
    try:
        start = float(value[len("auto_") :])
    except ValueError:
        return False
    return math.isfinite(start) and start > 0
