"""plugins/build on plugin folders given by path: clear errors for what it cannot build, reproducible output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edged.tooling import new_plugin

ROOT = Path(__file__).resolve().parents[2]


def build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "plugins" / "build"), *args], capture_output=True, text=True)


def test_a_folder_with_two_sources_is_refused(tmp_path: Path) -> None:
    folder = new_plugin("twice", "c", tmp_path)
    (folder / "twice.zig").write_text("export fn frame() i32 { return 0; }\n")
    result = build(str(folder))
    assert result.returncode != 0 and "needs exactly one of twice.ts, twice.c, twice.zig" in result.stderr


def test_not_a_plugin(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    result = build(str(tmp_path / "notes.txt"))
    assert result.returncode != 0 and "is not a plugin folder or a .ts/.c/.zig source" in result.stderr


@pytest.mark.parametrize("lang", ["c", "zig", "as"])
def test_a_compile_error_names_the_source_and_writes_nothing(tmp_path: Path, lang: str) -> None:
    folder = new_plugin("broken", lang, tmp_path)
    source = next(folder.glob("broken.*"))
    source.write_text(source.read_text() + "\nthis is not code\n")
    result = build(str(folder))
    assert result.returncode != 0
    assert f"{source} failed to build" in result.stderr or f"{source.name} failed to build" in result.stderr
    assert not (folder / "broken.wasm").exists()


def test_a_failing_generate_script_stops_the_build(tmp_path: Path) -> None:
    folder = new_plugin("gen", "c", tmp_path)
    (folder / "generate.py").write_text("raise SystemExit('no sprite sheet today')\n")
    result = build(str(folder))
    assert result.returncode != 0 and "generate.py failed" in result.stderr and "no sprite sheet today" in result.stderr


@pytest.mark.parametrize("lang", ["c", "zig"])
def test_builds_are_reproducible(tmp_path: Path, lang: str) -> None:
    a = new_plugin("same", lang, tmp_path / "a")
    b = new_plugin("same", lang, tmp_path / "b")
    assert build(str(a)).returncode == 0 and build(str(b)).returncode == 0
    assert (a / "same.wasm").read_bytes() == (b / "same.wasm").read_bytes()
