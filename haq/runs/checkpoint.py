"""The checkpoint core every proposer shares: start or resume a run directory, checkpoint and log
each finished episode, find the latest checkpoint and reconcile the log with it.

Ordering that makes resume exact: when an episode finishes, :meth:`RunStore.commit` first writes
a new checkpoint (the proposer's payload, then ``state.json`` holding that episode's record,
then ``manifest.json`` with every file's SHA-256) into a fresh directory and renames it into
place, and only then appends the episode to ``episodes.jsonl`` and keeps ``best_policy.json``.
A kill at any point leaves either the previous checkpoint and log (the episode is re-run) or the
new checkpoint with the log one line short (the line is restored from the checkpoint), so the
log never has a gap or a duplicate.

Logged episodes are never discarded: without a checkpoint (none written yet, or the directory
removed) the whole log stands and the proposer continues after it; a log ahead of the newest
checkpoint is refused. A checkpoint is read only after its manifest matches its files
(:mod:`haq.runs.manifest`), and nothing in it is unpickled. ``best_policy.json`` is derived from
the log on resume and again at the end of every run (:meth:`RunDir.sync_best`).

The public methods fix that ordering once; a proposer's store overrides private hooks where the
proposers differ, as stable-baselines3's ``BaseAlgorithm.save`` calls its overridable
``_excluded_save_params`` / ``_get_torch_save_params``:

* ``_write_payload(directory)``: what a checkpoint holds besides its state (an agent; nothing
  for a baseline, whose candidates are deterministic);
* ``_is_complete(directory)``: whether a checkpoint holds what this proposer resumes from;
* ``_check_settings(doc)``: whether a stored run may be resumed with this run's settings.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from haq.core import config as serial
from haq.core import jsonio
from haq.core.errors import InternalError, RunDirError
from haq.core.fileio import TEMP_SUFFIX, atomic_write_text
from haq.runs.manifest import verify_manifest, write_manifest
from haq.runs.rundir import EpisodeRecord, RunDir

STATE_FILE = "state.json"
CHECKPOINT_PREFIX = "ep-"


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint: where it is, the episodes it covers and the proposer's state.

    last_record: the episode that completed it (restores a log line lost to a kill).
    state: what the proposer saved beside it (e.g. the reward baseline's running average).
    """

    path: Path
    episodes_done: int
    last_record: EpisodeRecord | None
    state: Mapping[str, Any] = field(default_factory=dict)


class RunStore:
    """One run directory as a proposer writes and resumes it (see the module docstring).

    kind: the run kind recorded in config.json; a resume refuses a directory of another kind.
    resumable: top-level settings a resume may change (a search may grow its ``episodes``).
    settings: what config.json records under ``config`` and a resume compares, given as the
    config (or a mapping of configs) it is written from: a stored run that lacks a field is
    compared as what the field's absence meant (:func:`haq.core.config.fill_absent`).
    After :meth:`restore`, ``records`` holds the log, ``best`` its best episode and
    ``checkpoint`` the latest checkpoint; :meth:`commit` keeps all three current.
    """

    kind: ClassVar[str] = "search"
    resumable: ClassVar[tuple[str, ...]] = ("episodes",)

    def __init__(self, path: str | Path, settings: Any = None) -> None:
        self.rd = RunDir(path)
        self._configs = settings
        self.settings: dict[str, Any] = serial.jsonable(settings or {})
        self.records: list[EpisodeRecord] = []
        self.best: EpisodeRecord | None = None
        self.checkpoint: Checkpoint | None = None

    @property
    def path(self) -> Path:
        """The run directory."""
        return self.rd.path

    def open(self, resume: bool) -> None:
        """Refuse an existing run unless resuming it, and a resume with other settings."""
        if not (self.rd.exists() or self.rd.episodes_path.exists()):
            return
        if not resume:
            raise RunDirError(f"{self.path} already holds a run; pass --resume to continue it or choose another --out")
        self._check_settings(self.rd.read_config())

    def start(self, **derived: Any) -> None:
        """Record the settings and derived facts (budget, reference, layers) of a new run."""
        if not self.rd.exists():
            self.rd.write_config(self.settings, kind=self.kind, **derived)

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint (``.tmp`` directories were interrupted), verified, or None.

        A checkpoint whose files do not match its manifest, one of an older haq (pickles, no
        manifest) and one without this proposer's payload are each a :class:`RunDirError`.
        """
        done = [
            p for p in self.rd.checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*")
            if p.is_dir() and not p.name.endswith(TEMP_SUFFIX)
        ]
        if not done:
            return None
        newest = max(done, key=lambda p: p.name)
        verify_manifest(newest)
        if not (newest / STATE_FILE).is_file():
            raise RunDirError(
                f"{newest}: checkpoint without {STATE_FILE}; remove {self.rd.checkpoint_dir} to continue from the log"
            )
        if not self._is_complete(newest):
            raise RunDirError(
                f"{newest}: checkpoint without the {self.kind}'s payload; "
                f"remove {self.rd.checkpoint_dir} to continue from the log"
            )
        return _read_checkpoint(newest)

    def restore(self) -> list[EpisodeRecord]:
        """Load the latest checkpoint and make the log agree with it: exactly its episodes, 0..k-1.

        Without a checkpoint every logged episode stands. The log may be one line behind its
        checkpoint (restored from it) but never ahead (refused: nothing logged is discarded).
        """
        self.checkpoint = self.latest()
        records = self.rd.read_episodes()
        if self.checkpoint is not None:
            k = self.checkpoint.episodes_done
            if len(records) > k:
                raise RunDirError(
                    f"{self.rd.episodes_path} holds {len(records)} episodes but the newest checkpoint "
                    f"({self.checkpoint.path.name}) covers {k}; remove {self.rd.checkpoint_dir} to continue from the log, "
                    "or start a new run"
                )
            if len(records) == k - 1 and self.checkpoint.last_record is not None:
                records.append(self.checkpoint.last_record)
        else:
            k = len(records)
        if [r.episode for r in records] != list(range(k)):
            raise RunDirError(
                f"{self.rd.episodes_path} does not match the checkpoint ({len(records)} usable lines for {k} episodes); "
                "start a new run"
            )
        text = "".join(r.to_json() + "\n" for r in records)
        if self.rd.episodes_path.is_file() and self.rd.episodes_path.read_bytes() != text.encode("utf-8"):
            self.rd.rewrite_episodes(records)
        self.records = records
        self.best = self.rd.sync_best(records)
        return list(records)

    def finish(self) -> EpisodeRecord | None:
        """End of a run: best_policy.json derived once more from the log (whatever happened to it meanwhile)."""
        self.best = self.rd.sync_best(self.records)
        return self.best

    def commit(self, record: EpisodeRecord, state: Mapping[str, Any] | None = None) -> None:
        """Checkpoint, then log, then keep the best: the order that makes resume exact."""
        self._check_next(record)
        self.save(record, state)
        self._log(record)

    def append(self, record: EpisodeRecord) -> None:
        """Log an episode that needs no checkpoint: one a resume re-derives from the log alone
        (a search's prior rungs, evaluated before its agent exists). Only before the first
        checkpoint, since a restore cuts the log back to its newest checkpoint."""
        if self.checkpoint is not None:
            raise InternalError(f"episode {record.episode} appended to {self.path} without a checkpoint after one")
        self._check_next(record)
        self._log(record)

    def commit_batch(self, records: Sequence[EpisodeRecord], state: Mapping[str, Any] | None = None) -> None:
        """Commit episodes that finished together with one checkpoint: all but the last are logged
        ahead of it (a kill before the checkpoint drops them again on restore, and the batch is
        re-run), then the last is committed as one episode, its checkpoint covering the batch."""
        for record in records[:-1]:
            self._check_next(record)
            self._log(record)
        if records:
            self.commit(records[-1], state)

    def _check_next(self, record: EpisodeRecord) -> None:
        if record.episode != len(self.records):
            raise InternalError(f"episode {record.episode} committed to {self.path} after {len(self.records)} episodes")

    def _log(self, record: EpisodeRecord) -> None:
        """Append the episode's line and keep the best."""
        self.rd.append_episode(record)
        self.records.append(record)
        if self.best is None or record.reward > self.best.reward:
            self.best = record
            self.rd.write_best(record)

    def save(self, record: EpisodeRecord, state: Mapping[str, Any] | None = None) -> Checkpoint:
        """Write the checkpoint ``record`` completes and swap it in atomically; older ones are removed."""
        done = record.episode + 1
        final = self.rd.checkpoint_dir / f"{CHECKPOINT_PREFIX}{done:06d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self._write_payload(tmp)
        extra = dict(state or {})
        atomic_write_text(tmp / STATE_FILE, json.dumps({**extra, "episodes_done": done, "last_record": record.to_json()}) + "\n")
        write_manifest(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in self.rd.checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        self.checkpoint = Checkpoint(final, done, record, extra)
        return self.checkpoint

    def _write_payload(self, directory: Path) -> None:
        """Hook: write what this proposer resumes from into ``directory`` (default: nothing)."""

    def _is_complete(self, directory: Path) -> bool:
        """Hook: whether ``directory`` holds this proposer's payload (default: the state is enough)."""
        return True

    def _check_settings(self, doc: Mapping[str, Any]) -> None:
        """Hook: refuse to resume a run of another kind or written with other settings."""
        self._check_kind(doc)
        written = doc.get("config", {})
        self._compare(serial.fill_absent(self._configs, written), self.settings, written)

    def _check_kind(self, doc: Mapping[str, Any]) -> None:
        if doc.get("kind") != self.kind:
            raise RunDirError(f"cannot resume {self.path} as a {self.kind}: it holds a '{doc.get('kind')}' run; choose another --out")

    def _compare(self, stored: Any, current: Mapping[str, Any], written: Any = None) -> None:
        """Name the first setting that differs, ignoring the resumable ones; ``written`` (the
        stored settings before :func:`~haq.core.config.fill_absent`) tells a setting the run's
        haq did not have yet, which the message says."""
        keep = {k: v for k, v in (stored if isinstance(stored, Mapping) else {}).items() if k not in self.resumable}
        diff = _first_difference(keep, {k: v for k, v in current.items() if k not in self.resumable})
        if diff is None:
            return
        key, old, new = diff
        if written is not None and not _holds(written, key):
            if not _holds(stored, key):  # the field declares no meaning for its absence
                raise RunDirError(
                    f"cannot resume {self.path}: it was written by a haq before {key} existed, and what that haq did "
                    f"without it is not recorded (this run has {key}={new!r}); use a new --out"
                )
            raise RunDirError(
                f"cannot resume {self.path}: it was written by a haq before {key} existed, which ran as {key}={old!r}; "
                f"this run has {key}={new!r}; give that setting to continue it, or use a new --out"
            )
        raise RunDirError(
            f"cannot resume {self.path}: it was written with {key}={old!r}, this run has {key}={new!r}; "
            "use a new --out or the same settings"
        )


def _read_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint's state file; an unreadable one is a :class:`RunDirError` naming it."""
    state_path = path / STATE_FILE
    try:
        doc = jsonio.read_json(state_path, "checkpoint state", error=RunDirError)
        done = int(doc.pop("episodes_done"))
        line = doc.pop("last_record", None)
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise RunDirError(f"{state_path}: unreadable checkpoint state ({type(exc).__name__}: {exc}); start a new run") from exc
    last = EpisodeRecord.from_json(line, str(state_path)) if isinstance(line, str) else None
    return Checkpoint(path, done, last, doc)


def _holds(doc: Any, dotted: str) -> bool:
    """Whether the nested mapping ``doc`` has the key path ``dotted`` (``env.evaluation.kind``)."""
    for part in dotted.split("."):
        if not isinstance(doc, Mapping) or part not in doc:
            return False
        doc = doc[part]
    return True


def _first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
            if found is not None:
                return found
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-12):
        return None
    return None if a == b else (prefix or "config", a, b)
