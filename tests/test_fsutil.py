"""edged.fsutil.atomic_write: the one way edged replaces a file (old or new content, never a mix, no temp litter)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import pytest

from edged.fsutil import atomic_write, fsync_dir, temp_name


def test_writes_bytes_and_text_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "state.json"
    atomic_write(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    atomic_write(target, "text ☃")
    assert target.read_text(encoding="utf-8") == "text ☃"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_mode_is_the_files(tmp_path: Path) -> None:
    atomic_write(tmp_path / "secret", b"k", 0o600)
    atomic_write(tmp_path / "blob", b"w", 0o444)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "blob").stat().st_mode) == 0o444


def test_file_then_directory_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[tuple[bool, str]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((stat.S_ISDIR(st.st_mode), os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write(tmp_path / "f", b"data")
    assert len(synced) == 2
    (file_is_dir, file_name), (dir_is_dir, dir_name) = synced
    assert not file_is_dir and file_name.startswith(".f.") and file_name.endswith(".tmp")  # the temp, pre-rename
    assert dir_is_dir and dir_name == tmp_path.name  # the rename made durable


@pytest.mark.parametrize("fail_at", ["write", "fsync"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"old")

    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if fail_at == "fsync":
        monkeypatch.setattr(os, "fsync", disk_full)
    else:  # two bytes of the temp file reach the disk, then it is full
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f: IO[bytes]) -> None:
                self.f = f

            def write(self, data: bytes) -> int:
                self.f.write(data[:2])
                self.f.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, name: str) -> Any:
                return getattr(self.f, name)

            def __enter__(self) -> HalfWriter:
                return self

            def __exit__(self, *exc: object) -> None:
                self.f.close()

        def fdopen(fd: int, mode: str) -> HalfWriter:
            return HalfWriter(real_fdopen(fd, mode))

        monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(OSError) as err:
        atomic_write(target, b"new content, longer")
    assert err.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_an_exception_before_the_rename_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"old")

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new", before_replace=interrupted)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_killed_before_the_rename_leaves_the_old_file_and_a_sweepable_temp(tmp_path: Path) -> None:
    """SIGKILL between the temp file's fsync and the rename: the old content stays, and the only leftover is a
    temp file named as temp_name says, which a reader can sweep with its glob."""
    target = tmp_path / "state.json"
    atomic_write(target, b"old")
    child = (
        "import os, signal, sys\n"
        "from edged.fsutil import atomic_write\n"
        "atomic_write(sys.argv[1], b'new', before_replace=lambda: os.kill(os.getpid(), signal.SIGKILL))\n"
    )
    r = subprocess.run([sys.executable, "-c", child, str(target)], cwd=Path(__file__).parents[1], timeout=60)
    assert r.returncode == -9
    assert target.read_bytes() == b"old"
    leftovers = list(tmp_path.glob(f".{target.name}.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["state.json", leftovers[0].name])


def test_temp_dir_and_no_parents(tmp_path: Path) -> None:
    """The store keeps its temp files in a folder of its own, and a missing directory stays an error there."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    seen: list[str] = []
    atomic_write(tmp_path / "rec.json", b"{}", tmp_dir=scratch, before_replace=lambda: seen.extend(os.listdir(scratch)))
    assert len(seen) == 1 and seen[0].startswith(".rec.json.")
    assert list(scratch.iterdir()) == [] and (tmp_path / "rec.json").read_bytes() == b"{}"
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "gone" / "chunk", b"x", tmp_dir=scratch, parents=False)
    assert list(scratch.iterdir()) == [] and not (tmp_path / "gone").exists()


def test_temp_names_are_hidden_and_unique(tmp_path: Path) -> None:
    names = {temp_name(tmp_path / "x") for _ in range(100)}
    assert len(names) == 100 and all(n.startswith(".x.") and n.endswith(".tmp") for n in names)


def test_fsync_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "f")
    fsync_dir(tmp_path)
