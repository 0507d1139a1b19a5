"""Durable file writes, shared by every layer (this module imports nothing of edged's).

:func:`atomic_write` is the one way edged replaces a file: readers see the old content or the new, never a mix,
and a power cut after it returns cannot undo it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "temp_name"]


def temp_name(path: Path) -> str:
    """The name of a temp file for ``path`` (``.NAME.RANDOM.tmp``): hidden, unique, and easy to sweep after a crash
    with ``glob(f".{path.name}.*.tmp")``."""
    return f".{path.name}.{secrets.token_hex(6)}.tmp"


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | bytearray | memoryview | str,
    mode: int = 0o644,
    *,
    tmp_dir: str | os.PathLike[str] | None = None,
    before_replace: Callable[[], None] | None = None,
    sync_dir: bool = True,
    parents: bool = True,
) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    The data goes to a new temp file (``mode``; text is UTF-8), which is fsynced and renamed over ``path``; then
    the directory is fsynced so the rename survives a power cut. Missing parent directories are created (unless
    ``parents=False``: then a missing directory is an error, as for a store's discarded transfer). If
    anything fails before the rename, ``path`` keeps its old content, the temp file is removed and the error
    (usually :class:`OSError`) propagates.

    ``tmp_dir`` puts the temp file in another directory of the same file system (the deploy store keeps its own,
    swept on recovery); by default it sits beside ``path`` under :func:`temp_name`. ``before_replace`` runs between
    the fsync and the rename (crash-test checkpoints). With ``sync_dir=False`` the directory fsync is left to the
    caller (who may treat its failure differently: the rename has happened by then).
    """
    final = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    if parents:
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tmp_dir if tmp_dir is not None else final.parent) / temp_name(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(final.parent)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename or unlink in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
