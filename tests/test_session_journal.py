"""A batch of timings resumes after a kill: every session is journaled as it is timed, a batch
timed again reuses its models' sessions and times only the rest, and a journal of another
protocol or one that cannot be read is started anew, never trusted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from haq.core.config import to_dict
from haq.hardware.device import timing
from haq.hardware.device.journal import SessionJournal, model_digest
from haq.hardware.device.runner import LocalRunner
from haq.hardware.device.sentinel import sentinel_model
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.timing import measure_models

QUICK = ProtocolConfig(
    sessions=3, warmup_runs=1, warmup_s=0.0, batch_warmup_s=0.0, repeats=3, min_repeat_ms=0.5, max_retries=0, ci_rel=0.0
)


TIME_SESSION = timing._time_session


class _Killed(Exception):
    """Stands for a kill in the middle of a batch."""


def _counting(monkeypatch: pytest.MonkeyPatch, kill_after: int | None = None) -> list[bytes]:
    """Record every session timed from now on; raise after ``kill_after`` of them."""
    timed: list[bytes] = []

    def session(model: bytes, cfg: ProtocolConfig, limits: object) -> tuple[list[float], int]:
        if kill_after is not None and len(timed) == kill_after:
            raise _Killed
        timed.append(model)
        return TIME_SESSION(model, cfg, limits)  # type: ignore[arg-type]

    monkeypatch.setattr(timing, "_time_session", session)
    return timed


def _journal(path: Path, cfg: ProtocolConfig = QUICK) -> SessionJournal:
    journal = SessionJournal(path, to_dict(cfg))
    journal.open()
    return journal


def test_an_interrupted_batch_resumes_where_it_stopped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a, b = sentinel_model(16), sentinel_model(24)
    path = tmp_path / "sessions.jsonl"
    _counting(monkeypatch, kill_after=4)  # two rounds of two models, then the kill
    with pytest.raises(_Killed):
        measure_models([a, b], QUICK, journal=_journal(path))
    timed = _counting(monkeypatch)
    journal = _journal(path)
    assert {d: len(s) for d, s in journal.sessions.items()} == {model_digest(a): 2, model_digest(b): 2}
    kept = [samples for samples, _ in journal.sessions[model_digest(a)]]
    first, second = measure_models([a, b], QUICK, journal=journal)
    assert sorted(timed) == sorted([a, b])  # one session each: the third round only
    assert len(first.samples_ms) == len(second.samples_ms) == 3
    assert list(first.samples_ms[:2]) == kept  # the journaled sessions are the measurement's first two


def test_a_model_caught_up_and_one_already_done(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Killed inside a round: the model that missed the round's session gets it first; a model
    with all its sessions is not timed again."""
    a, b = sentinel_model(16), sentinel_model(24)
    path = tmp_path / "sessions.jsonl"
    one = replace(QUICK, sessions=2)
    _counting(monkeypatch, kill_after=3)  # round 1: a, b; round 2: one of them, then the kill
    with pytest.raises(_Killed):
        measure_models([a, b], one, journal=_journal(path, one))
    timed = _counting(monkeypatch)
    results = measure_models([a, b], one, journal=_journal(path, one))
    assert len(timed) == 1 and all(len(m.samples_ms) == 2 for m in results)
    again = _counting(monkeypatch)
    measure_models([a], one, journal=_journal(path, one))
    assert again == []  # every session of it is in the journal


def test_another_protocol_or_a_damaged_journal_starts_anew(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a = sentinel_model(16)
    path = tmp_path / "sessions.jsonl"
    measure_models([a], QUICK, journal=_journal(path))
    assert len(_journal(path).sessions[model_digest(a)]) == 3
    assert _journal(path, replace(QUICK, repeats=4)).sessions == {}  # and the file now holds the new header only
    assert _journal(path).sessions == {}
    measure_models([a], QUICK, journal=_journal(path))
    path.write_text(path.read_text().replace('"samples": [', '"samples": [-1.0, '))
    said: list[str] = []
    damaged = SessionJournal(path, to_dict(QUICK), said.append)
    damaged.open()
    assert damaged.sessions == {} and len(said) == 1 and "unreadable" in said[0] and str(path) in said[0]


def test_the_local_runner_removes_its_journal_when_the_batch_is_done(tmp_path: Path) -> None:
    path = tmp_path / "fit-sessions.jsonl"
    (m,) = LocalRunner(QUICK, journal=path).measure_many([sentinel_model(16)])
    assert len(m.samples_ms) == 3 and not path.exists()
