"""Hostile and careless inputs meet one ``haq: error:`` line, never a hang or a traceback: special
and huge files, bytes that are not UTF-8, JSON that is too deep, too long or says a key twice,
outputs that cannot be written, a disk that fills mid-run (nothing logged is lost), damaged
checkpoints, a reader of stdout that goes away, user models that exit; and temporary files
orphaned by a kill are cleaned up."""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

from haq import cli
from haq.cli import main
from haq.core import fileio, jsonio
from haq.core.errors import ConfigError, PolicyError, RunDirError
from haq.core.fileio import atomic_write_text, check_writable_dir, remove_stale_temps
from haq.quant import QuantPolicy
from haq.runs.rundir import RunDir

SEARCH = ["search", "--evaluator", "cheap", "--warmup", "2", "--seed", "0"]


def _haq(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``haq argv`` in-process; an escaping exception fails the test (it would be a traceback)."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("haq: ")]
    assert len(lines) == 1 and lines[0].startswith("haq: error: ") and "Traceback" not in err, err
    return lines[0]


def _policy_file(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "policy.json"
    path.write_bytes(content)
    return str(path)


def _doc(layers: str) -> bytes:
    return ('{"format": "haq.policy", "version": 1, "layers": ' + layers + "}").encode()


# ---------------------------------------------------------------- special and huge files (Low 9)


@pytest.fixture
def fifo(tmp_path: Path) -> str:
    path = tmp_path / "fifo.json"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize("flag", ["--device", "--policy"])
def test_special_files_are_refused_not_read(capsys: pytest.CaptureFixture[str], tmp_path: Path, fifo: str, flag: str) -> None:
    good = _policy_file(tmp_path, json.dumps(QuantPolicy.uniform(["conv1"], 8).to_dict()).encode())
    for special in ("/dev/zero", fifo):  # unbounded, and blocking forever on open or read
        files = {"--policy": good, "--device": "bitfusion", flag: special}
        rc, _, err = _haq(capsys, "cost", "--policy", files["--policy"], "--device", files["--device"])
        line = _one_error_line(err)
        assert rc == 2 and special in line and "not a regular file" in line


def test_documents_over_the_size_cap_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as fh:  # sparse: no disk space used
        fh.truncate(jsonio.MAX_DOCUMENT_BYTES + 1)
    with pytest.raises(RunDirError, match="more than the 64 MiB a run config may have"):
        jsonio.read_json(big, "run config", error=RunDirError)
    with pytest.raises(PolicyError, match="more than the 16 MiB"):
        QuantPolicy.load(big)


def test_run_files_must_be_regular(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "config.json")
    with pytest.raises(RunDirError, match="cannot read run config .* a pipe, not a regular file"):
        RunDir(run).read_config()


# ---------------------------------------------------------------- malformed documents (Low 10, Low 12)


@pytest.mark.parametrize(
    "content,needle",
    [
        (b'{"format": "haq.policy", "layers": {"conv\xff": 1}}', "not UTF-8 text (byte 0xff at offset 41)"),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b"[" * 100 + b"]" * 100, "nested too deeply"),
        (_doc('{"conv1": {"w_bits": ' + "9" * 5000 + ', "a_bits": 8}}'), "an integer of more than"),
        (_doc('{"conv1": {"w_bits": 8, "a_bits": 8}, "conv1": {"w_bits": 2, "a_bits": 2}}'), "duplicate JSON key 'conv1'"),
        (_doc('{"conv1": {"w_bits": 8, "a_bits": 8, "a_bits": 2}}'), "duplicate JSON key 'a_bits'"),
    ],
    ids=["not-utf8", "recursion", "deep", "5000-digits", "duplicate-layer", "duplicate-field"],
)
def test_malformed_policy_files_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, needle: str
) -> None:
    rc, _, err = _haq(capsys, "cost", "--policy", _policy_file(tmp_path, content), "--device", "bitfusion")
    assert rc == 2 and needle in _one_error_line(err)


def _run_dir(path: Path, config: bytes, episodes: bytes) -> Path:
    path.mkdir()
    (path / "config.json").write_bytes(config)
    (path / "episodes.jsonl").write_bytes(episodes)
    return path


GOOD_CONFIG = json.dumps({"format": "haq.search_run", "version": 1, "kind": "search", "config": {}}).encode()


@pytest.mark.parametrize(
    "config,episodes,needle",
    [
        (b"\xff\xfe{}", b"", "run config"),
        (b'{"format": "haq.search_run", "format": "haq.search_run", "version": 1}', b"", "duplicate JSON key 'format'"),
        (GOOD_CONFIG, b'{"episode": 0, "policy": {"c\xe9": [8, 8]}}\n', "episode log"),
        (GOOD_CONFIG, b'{"episode": ' + b"1" * 5000 + b"}\n", "an integer of more than"),
        (GOOD_CONFIG, b"[" * 100_000 + b"\n", "nested too deeply"),
    ],
    ids=["config-not-utf8", "config-duplicate", "log-not-utf8", "log-5000-digits", "log-deep"],
)
def test_malformed_run_files_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, config: bytes, episodes: bytes, needle: str
) -> None:
    run = _run_dir(tmp_path / "run", config, episodes)
    rc, _, err = _haq(capsys, "plot", str(run))
    assert rc == 2 and needle in _one_error_line(err)


# ---------------------------------------------------------------- outputs that cannot be written (Low 10)


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the problem (training, evaluating) must not start when the output is unusable."""

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("work started before the run directory was checked")

    monkeypatch.setattr("haq.jobs.problems.make_problem", refuse)


@pytest.mark.parametrize("command", [SEARCH + ["--episodes", "2"], ["baseline", "--method", "random", "--evaluator", "cheap"]])
def test_out_naming_a_file_is_refused_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, no_work: None, command: list[str]
) -> None:
    afile = tmp_path / "results.txt"
    afile.write_text("keep me\n")
    for out in (afile, afile / "run"):
        rc, _, err = _haq(capsys, *command, "--out", str(out))
        line = _one_error_line(err)
        assert rc == 2 and "is a file, not a directory" in line and "--out" in line
    assert afile.read_text() == "keep me\n"


def test_unwritable_out_is_refused_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, no_work: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root writes through permission bits, so a read-only mount is stood in for by the probe's refusal.
    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.mkstemp

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        if Path(str(kwargs.get("dir"))) == locked:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(locked))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    rc, _, err = _haq(capsys, *SEARCH, "--episodes", "2", "--out", str(locked / "run"))
    line = _one_error_line(err)
    assert rc == 2 and "not writable" in line and "Read-only file system" in line and "--out" in line
    assert not (locked / "run").exists()


def test_check_writable_dir_accepts_new_and_existing_directories(tmp_path: Path) -> None:
    check_writable_dir(tmp_path / "a" / "b")
    check_writable_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="is a directory"):
        fileio.check_writable_file(tmp_path, "--onnx")


@pytest.mark.parametrize(
    "err_no,fix",
    [
        (errno.ENOSPC, "free space there and run again"),
        (errno.EROFS, "read-only: choose a writable location"),
        (errno.EACCES, "fix its permissions"),
    ],
)
def test_os_errors_are_one_line_naming_path_and_fix(capsys: pytest.CaptureFixture[str], err_no: int, fix: str) -> None:
    def fail(_ns: argparse.Namespace) -> int:
        raise OSError(err_no, os.strerror(err_no), "/data/run/best_policy.json")

    assert cli.run_command(argparse.Namespace(func=fail)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert os.strerror(err_no) in line and "/data/run/best_policy.json" in line and fix in line


def test_atomic_write_failures_name_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", full)
    target = tmp_path / "state.json"
    with pytest.raises(OSError, match="No space left") as exc:
        atomic_write_text(target, "{}")
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "log.jsonl").write_text("line 0\n")
    with pytest.raises(OSError) as exc:
        fileio.append_durably(tmp_path / "log.jsonl", "line 1\n")
    assert exc.value.filename == str(tmp_path / "log.jsonl")
    assert (tmp_path / "log.jsonl").read_text() == "line 0\n"  # cut back: no half line


# ---------------------------------------------------------------- a full disk mid-run, then resume (Low 10)


def _log(run: Path) -> list[str]:
    return (run / "episodes.jsonl").read_text().splitlines(keepends=True)


@pytest.mark.parametrize("where", ["checkpoint", "log"])
def test_full_disk_mid_run_loses_nothing_logged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    run = tmp_path / "run"
    real_fsync = os.fsync

    def disk_fills_after_three(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        logged = (run / "episodes.jsonl").read_text().count("\n") if (run / "episodes.jsonl").is_file() else 0
        in_log = target.endswith("episodes.jsonl")  # its fsync follows the write of its newest line
        if (where == "log" and in_log and logged >= 4) or (where == "checkpoint" and not in_log and logged >= 3):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_fills_after_three)
    rc, _, err = _haq(capsys, *SEARCH, "--episodes", "6", "--out", str(run))
    line = _one_error_line(err)
    assert rc == 2 and "No space left on device" in line and str(run) in line and "--resume" in line
    before = _log(run)
    assert len(before) == 3 and all(x.endswith("\n") for x in before)
    monkeypatch.setattr(os, "fsync", real_fsync)
    rc, _, err = _haq(capsys, *SEARCH, "--episodes", "6", "--out", str(run), "--resume")
    assert rc == 0, err
    after = _log(run)
    assert after[:3] == before and [json.loads(x)["episode"] for x in after] == list(range(6))


# ---------------------------------------------------------------- damaged checkpoints (Low 10)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main([*SEARCH, "--episodes", "3", "--out", str(run)]) == 0
    return run


def _checkpoint(run: Path) -> Path:
    (latest,) = [p for p in (run / "checkpoint").iterdir() if p.is_dir()]
    return latest


def _corrupt_state(content: bytes) -> Callable[[Path], None]:
    return lambda ckpt: (ckpt / "state.json").write_bytes(content)


def _corrupt_agent(ckpt: Path) -> None:
    for p in ckpt.iterdir():
        if p.is_file() and p.name != "state.json":
            p.write_bytes(b"PK\x03\x04 not the archive it claims to be" if p.suffix == ".zip" else b"\x00\xffgarbage")


@pytest.mark.parametrize(
    "damage",
    [
        _corrupt_state(b"\xff\xfe not text"),
        _corrupt_state(b'{"episodes_done": 1e999, "last_record": null}'),
        _corrupt_state(b"[" * 100_000),
        _corrupt_agent,
    ],
    ids=["state-not-utf8", "state-overflow", "state-deep", "agent-garbage"],
)
def test_damaged_checkpoint_is_one_line_on_resume(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, finished_run: Path, damage: Callable[[Path], None]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    damage(_checkpoint(run))
    logged = _log(run)
    rc, _, err = _haq(capsys, *SEARCH, "--episodes", "4", "--out", str(run), "--resume")
    assert rc in (1, 2)
    _one_error_line(err)
    assert _log(run) == logged


# ---------------------------------------------------------------- stdout closed, unforeseen errors (Low 10)


@pytest.mark.parametrize(
    "argv,read",
    [
        (["tables", "list"], 0),  # `haq tables list | head -0`: the reader is gone before anything is written
        (["tables", "show", "bitfusion", "--entries", "100000"], 200),  # `... | head -c 200`: gone mid-output
    ],
)
def test_closed_stdout_ends_quietly(argv: list[str], read: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "haq.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    assert len(proc.stdout.read(read)) == read
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err.decode() == "", err.decode()


def test_broken_pipe_on_stdout_in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    class Gone:
        def write(self, _text: str) -> int:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def prints(_ns: argparse.Namespace) -> int:
        print("a row")
        return 0

    monkeypatch.setattr(sys, "stdout", Gone())
    assert cli.run_command(argparse.Namespace(func=prints)) == 141
    monkeypatch.undo()
    assert capsys.readouterr().err == ""


def test_broken_pipe_elsewhere_is_an_error_not_silence(capsys: pytest.CaptureFixture[str]) -> None:
    def socket_gone(_ns: argparse.Namespace) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    assert cli.run_command(argparse.Namespace(func=socket_gone)) == 2
    assert "Broken pipe" in _one_error_line(capsys.readouterr().err)


def test_unforeseen_exception_is_one_line_with_the_traceback_kept(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(_ns: argparse.Namespace) -> int:
        raise KeyError("lr_schedule")

    monkeypatch.delenv("HAQ_DEBUG", raising=False)
    assert cli.run_command(argparse.Namespace(func=bug)) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "unexpected KeyError: 'lr_schedule'" in line
    kept = Path(line.rsplit("traceback in ", 1)[1].rstrip(")"))
    assert "Traceback" in kept.read_text() and "lr_schedule" in kept.read_text()
    kept.unlink()
    monkeypatch.setenv("HAQ_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.run_command(argparse.Namespace(func=bug))


# ---------------------------------------------------------------- user models that exit (Low 12)


def test_user_model_that_exits_is_a_model_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "exits_on_import.py").write_text("raise SystemExit(0)\n")
    (tmp_path / "returns_junk.py").write_text("def build():\n    return 'a model'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for model, needle in (
        ("sys:exit", "calling 'sys:exit()' failed: SystemExit"),
        ("exits_on_import:build", "importing module 'exits_on_import'"),
        ("returns_junk:build", "not a torch.nn.Module"),
    ):
        rc, _, err = _haq(capsys, "cost", "--model", model, "--policy", "p.json", "--device", "bitfusion")
        assert rc == 2 and needle in _one_error_line(err)
    sys.modules.pop("exits_on_import", None)
    sys.modules.pop("returns_junk", None)


# ---------------------------------------------------------------- orphaned temporary files (Low 12)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_orphaned_temps_are_removed_and_names_are_unique(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    orphan = tmp_path / ".best_policy.json.k1ll3d_x.tmp"
    other_orphan = tmp_path / ".config.json.abcdefgh.tmp"
    live = tmp_path / ".best_policy.json.writing_.tmp"
    mine = tmp_path / ".notes.tmp"  # not our naming pattern
    for p in (orphan, other_orphan, live, mine):
        p.write_text("partial")
    for p in (orphan, other_orphan, mine):
        _age(p, 2 * fileio.STALE_TEMP_SECONDS)
    renames: list[str] = []
    real_replace = os.replace

    def record(src: str, dst: Path) -> None:
        renames.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", record)
    atomic_write_text(tmp_path / "best_policy.json", "{}\n")
    atomic_write_text(tmp_path / "best_policy.json", "{}\n")
    assert not orphan.exists() and other_orphan.exists() and live.exists() and mine.exists()
    assert len(set(renames)) == 2 and all(n.startswith(".best_policy.json.") and n.endswith(".tmp") for n in renames)
    assert remove_stale_temps(tmp_path) == [other_orphan]
    assert live.exists() and mine.exists()
