"""A checkpoint's manifest: every file it holds with its SHA-256, so a checkpoint is read only when
its files are exactly the ones that were written.

``manifest.json``::

    {"format": "haq.manifest", "version": 1, "files": {"<relative path>": "<sha256 hex>", ...}}

A checkpoint is data (JSON, ``.npz`` read without pickle, tensors read with ``weights_only``);
the manifest adds integrity: a file changed, missing or added after the checkpoint was written
is refused before anything is read. A directory without a manifest that holds pickles (the
``agent.zip`` / ``replay_buffer.pkl`` of an older haq) is refused as such: haq never unpickles a
run directory.
"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from haq.core import jsonio
from haq.core.errors import RunDirError
from haq.core.fileio import TEMP_SUFFIX, atomic_write_text

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "haq.manifest"
MANIFEST_VERSION = 1
PICKLED_SUFFIXES = (".pkl", ".pickle", ".zip")
"""What an older haq (stable-baselines3's ``save``) left in a checkpoint: pickles, or zips of them."""


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> dict[str, str]:
    """List every file under ``directory`` (but the manifest and temporary files) with its hash."""
    files = {name: file_sha256(directory / name) for name in _files(directory)}
    doc = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": files}
    atomic_write_text(directory / MANIFEST_FILE, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return files


def verify_manifest(directory: Path, what: str = "checkpoint") -> dict[str, str]:
    """The manifest's files after checking that ``directory`` holds exactly them, unchanged.

    A directory of an older haq (no manifest, pickled files) and a file changed, missing or added
    since the manifest was written are each one :class:`RunDirError` naming the problem.
    """
    path = directory / MANIFEST_FILE
    if not path.is_file():
        pickled = sorted(n for n in _files(directory) if n.endswith(PICKLED_SUFFIXES))
        if pickled:
            raise RunDirError(
                f"{directory}: {what} of an older haq holding pickled files ({', '.join(pickled)}), which haq never "
                "unpickles; resume it with the haq that wrote it, or remove the checkpoint directory to continue from "
                "episodes.jsonl with a fresh agent"
            )
        raise RunDirError(
            f"{directory}: {what} without {MANIFEST_FILE} (written by an older haq, or damaged), so it is not read; "
            "remove the checkpoint directory to continue from episodes.jsonl, or start a new run"
        )
    files = _read(path)
    present = set(_files(directory))
    for name, expected in files.items():
        if name not in present:
            raise RunDirError(f"{directory / name}: listed in {path} but missing; the {what} is incomplete, start a new run")
        if file_sha256(directory / name) != expected:
            raise RunDirError(
                f"{directory / name}: does not match the SHA-256 in {path}; the {what} was changed after it was written, "
                "so it is not read (restore the file or start a new run)"
            )
    extra = sorted(present - set(files))
    if extra:
        raise RunDirError(
            f"{directory}: {', '.join(extra)} not listed in {MANIFEST_FILE}; a {what} holds only the files it was written "
            "with (remove the extra files)"
        )
    return files


def _read(path: Path) -> dict[str, str]:
    doc: Any = jsonio.read_json(path, "checkpoint manifest", error=RunDirError)
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or doc.get("version") != MANIFEST_VERSION:
        raise RunDirError(f"{path}: not a haq manifest (format '{MANIFEST_FORMAT}' version {MANIFEST_VERSION})")
    if not isinstance(files, dict) or not all(
        isinstance(n, str) and _safe_name(n) and isinstance(h, str) and len(h) == 64 for n, h in files.items()
    ):
        raise RunDirError(f"{path}: 'files' must map relative file names inside the checkpoint to SHA-256 hex digests")
    return files


def _safe_name(name: str) -> bool:
    """A relative path that stays inside the directory (no absolute path, no ``..``)."""
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and name != MANIFEST_FILE


def _files(directory: Path) -> list[str]:
    """Relative POSIX names of the files under ``directory``; a link, device or pipe there is refused
    (hashing ``/dev/zero`` would never end)."""
    names = []
    for p in directory.rglob("*"):
        mode = p.lstat().st_mode
        if stat.S_ISDIR(mode) or p.name == MANIFEST_FILE or p.name.endswith(TEMP_SUFFIX):
            continue
        if not stat.S_ISREG(mode):
            raise RunDirError(f"{p}: not a regular file; a checkpoint holds regular files only, so it is not read")
        names.append(p.relative_to(directory).as_posix())
    return sorted(names)
