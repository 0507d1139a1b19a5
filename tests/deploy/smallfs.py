"""A small file system for the store: a real tmpfs where root may mount one, else an injected ENOSPC quota.

As root (the CI container, and tests/run on a fresh machine run as root) ``small_disk`` mounts a tmpfs of the given
size, so every write of the store and the agent meets the kernel's real ENOSPC. Where mounting is not allowed it
falls back to a quota enforced in ``os.fsync`` (every durable write of the store and the agent fsyncs) and in
``os.statvfs``, and says so in the test's output (``EDGED_TEST_NO_TMPFS=1`` forces the fallback, to test it).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest


def _used(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


@contextmanager
def small_disk(path: Path, size: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``path`` as a file system of ``size`` bytes; yields ``"tmpfs"`` or ``"injected"``."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0 and not os.environ.get("EDGED_TEST_NO_TMPFS"):  # the variable forces the fallback
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, check=False
        )
        mounted = proc.returncode == 0
    if mounted:
        try:
            yield "tmpfs"
        finally:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
        return
    real_fsync, real_statvfs = os.fsync, os.statvfs
    root = str(path.resolve())

    def fsync(fd: int) -> None:
        where = os.path.realpath(f"/proc/self/fd/{fd}")
        if where.startswith(root) and _used(path) > size:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    def statvfs(p: object) -> os.statvfs_result:
        st = real_statvfs(p)  # type: ignore[arg-type]
        if not os.path.realpath(str(p)).startswith(root):
            return st
        free_blocks = max(0, size - _used(path)) // st.f_frsize
        fields = list(st)
        fields[3] = fields[4] = free_blocks  # f_bfree, f_bavail
        return os.statvfs_result(fields)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "statvfs", statvfs)
    print(f"small_disk: cannot mount a tmpfs here, {size} bytes enforced by an injected ENOSPC")
    yield "injected"


def fill(path: Path) -> Path:
    """Fill the file system under ``path`` to the last byte with a ballast file; returns it (delete to free)."""
    ballast = path / "ballast"
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize  # on a tmpfs the write below meets ENOSPC first; with the quota it stops here
    with open(ballast, "wb", buffering=0) as f:
        block = b"\0" * 4096
        written = 0
        try:
            while written < free + 8 * len(block):
                f.write(block)
                written += len(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        with suppress(OSError):
            os.fsync(f.fileno())
    return ballast
