"""The trained-model cache under concurrency and across software versions: two processes that
need the same uncached model train it once (a file lock) and load identical weights, and a
cached model is keyed by the torch and haq versions that trained it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from haq.data import load_dataset
from haq.models.cache import cache_key, pretrained_model, software_versions
from haq.models.zoo import ZOO
from haq.training import TrainConfig

WORKER = r"""
import sys, time
from pathlib import Path

import pytest
import torch

import haq.models.cache as cache
from haq.data import load_dataset
from haq.training import TrainConfig

cache_dir, run_dir, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
real_train = cache.train_model


def train_when_both_arrived(*args, **kwargs):
    # Hold the lock until the other worker has asked for the model too, so without the lock
    # both would train; with it, the other one waits here and then loads this one's file.
    while len(list(run_dir.glob("arrived-*"))) < 2:
        time.sleep(0.01)
    time.sleep(0.5)
    return real_train(*args, **kwargs)


cache.train_model = train_when_both_arrived
data = load_dataset("digits")
(run_dir / f"ready-{name}").touch()
while not (run_dir / "go").exists():
    time.sleep(0.01)
(run_dir / f"arrived-{name}").touch()
model = cache.pretrained_model("digits_mlp", data, torch.device("cpu"), cache_dir, TrainConfig(epochs=1, max_batches=5),
                               log=lambda m: print(m, flush=True))
torch.save(model.state_dict(), run_dir / f"weights-{name}.pt")
"""


def test_two_processes_train_a_cached_model_once(tmp_path: Path) -> None:
    cache_dir, run_dir = tmp_path / "cache", tmp_path / "run"
    run_dir.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(cache_dir), str(run_dir), name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    try:
        while len(list(run_dir.glob("ready-*"))) < 2:
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.02)
        (run_dir / "go").touch()
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    logs = "".join(out for out, _ in outputs)
    assert sum(line.startswith("training digits_mlp") for line in logs.splitlines()) == 1, logs
    a = torch.load(run_dir / "weights-a.pt", weights_only=True)
    b = torch.load(run_dir / "weights-b.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(list(cache_dir.glob("digits_mlp-digits-*.pt"))) == 1
    assert not list(cache_dir.glob(".*.tmp"))


def test_cache_key_includes_torch_and_haq_versions() -> None:
    data = load_dataset("digits")
    recipe = ZOO["digits_cnn"].train
    now = software_versions()
    assert now == {"torch": torch.__version__, "haq": now["haq"]} and now["haq"]
    assert cache_key("digits_cnn", data, recipe) == cache_key("digits_cnn", data, recipe, versions=now)
    assert cache_key("digits_cnn", data, recipe, versions={**now, "torch": "0.0.1"}) != cache_key("digits_cnn", data, recipe)
    assert cache_key("digits_cnn", data, recipe, versions={**now, "haq": "0.0.1"}) != cache_key("digits_cnn", data, recipe)


def test_a_cache_written_by_another_version_is_not_reused(tmp_path: Path) -> None:
    data = load_dataset("digits")
    recipe = TrainConfig(epochs=1, max_batches=2)
    old = tmp_path / f"digits_mlp-digits-{cache_key('digits_mlp', data, recipe, versions={'torch': '1.0', 'haq': '0.0'})}.pt"
    old.write_bytes(b"weights of another torch")
    lines: list[str] = []
    pretrained_model("digits_mlp", data, torch.device("cpu"), tmp_path, recipe, log=lines.append)
    assert any(line.startswith("training digits_mlp") for line in lines)
    assert old.read_bytes() == b"weights of another torch"


def test_empty_cache_variable_means_the_default_not_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    from haq.models.cache import default_cache_dir

    monkeypatch.setenv("HAQ_CACHE_DIR", "")
    assert default_cache_dir() == Path.home() / ".cache" / "haq"
    monkeypatch.setenv("HAQ_CACHE_DIR", "/tmp/x")
    assert default_cache_dir() == Path("/tmp/x")
