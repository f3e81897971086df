"""Atomic file writes: a reader (or a resumed run) never sees half a file; and the checks that
let a command refuse an unwritable output before it does any work.

Every temporary file is named ``.<target name>.<random>.tmp`` beside its target, unique per
write, so two writers never share one. A kill between creating and renaming it leaves an orphan;
the next write of the same target (or :func:`remove_stale_temps` on opening a directory) removes
orphans older than :data:`STALE_TEMP_SECONDS`, which no live writer holds that long.

Torch-free on purpose, so the device agent's side of haq can use it too.
"""

from __future__ import annotations

import glob
import os
import re
import tempfile
import time
from pathlib import Path

from haq.core.errors import ConfigError, HaqError, RunDirError

TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")
"""Our temporary files: ``tempfile.mkstemp`` with prefix ``.<name>.`` adds 8 random characters."""
STALE_TEMP_SECONDS = 3600.0
"""Age after which a temporary file of our naming pattern is an orphan of a killed writer."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a unique temporary file beside ``path``, flush it to disk, rename it
    over ``path``; the temporary file is removed if anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path.parent, glob.escape(f".{path.name}.") + "*" + TEMP_SUFFIX)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(exc, path) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def append_durably(path: Path, text: str) -> None:
    """Append ``text`` (UTF-8) to ``path`` and force it to disk before returning. If the write
    fails (a full disk), the file is cut back to its old length, so it never ends in half a line;
    the error names ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = memoryview(text.encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass  # a torn last line is still dropped on reading
            raise _naming(exc, path) from exc
    finally:
        os.close(fd)


def remove_stale_temps(directory: Path, max_age: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove our temporary files in ``directory`` older than ``max_age`` seconds (orphans of a
    killed writer); returns what was removed. Other files are never touched."""
    return _remove_stale(directory, f".*{TEMP_SUFFIX}", max_age)


def check_writable_dir(path: Path, what: str = "run directory", error: type[HaqError] = RunDirError) -> None:
    """Refuse, before any work starts, a directory that cannot be created or written: a file in
    its place (or in a parent's), or a read-only / full location. Creates nothing that stays.

    The nearest existing ancestor is probed by creating and removing a temporary file there,
    which is what later writes will do (permission bits alone do not tell: root, ACLs,
    read-only mounts).
    """
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        blocker = "it" if probe == path else f"{probe}"
        raise error(f"{what} {path} cannot be created: {blocker} is a file, not a directory; choose another --out")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".haq-write-check.", suffix=TEMP_SUFFIX, dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise error(f"{what} {path} is not writable ({exc.strerror or exc} in {probe}); choose a writable --out") from None


def check_writable_file(path: Path, what: str = "output file", error: type[HaqError] = ConfigError) -> None:
    """:func:`check_writable_dir` for a file's directory, and refuse a directory in the file's place."""
    if path.is_dir():
        raise error(f"{what} {path} is a directory; name a file")
    check_writable_dir(path.parent, f"directory of {what} {path}", error)


def _remove_stale(directory: Path, pattern: str, max_age: float = STALE_TEMP_SECONDS) -> list[Path]:
    removed = []
    cutoff = time.time() - max_age
    for p in directory.glob(pattern):
        if not _TEMP_NAME.fullmatch(p.name):
            continue
        try:
            if p.is_file() and not p.is_symlink() and p.stat().st_mtime < cutoff:
                p.unlink()
                removed.append(p)
        except OSError:
            continue  # another process removed or replaced it first
    return removed


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name when the system gave none (a write or fsync)."""
    if exc.filename is not None:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))
