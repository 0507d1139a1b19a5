"""C and Zig plugins fit the device's default memory budget (16 MiB a plugin, DEFAULT_PLUGIN_MEMORY_MB).

zig links a wasm32-wasi module with a 16 MiB stack (and a freestanding one with 1 MiB) at the bottom of its linear
memory, so a WASI C plugin declared 258 initial pages, more than the whole budget, and no device could load it.
plugins/build links every C and Zig plugin with a 64 KiB stack (STACK_BYTES): a module starts at its stack plus its
static data and grows from there within the budget.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from edged.daemon.config import DaemonSection
from edged.host import DevicePolicy
from edged.host.frames import Tick
from edged.host.functions import DisplayInfo
from edged.host.plugin import DEFAULT_MEMORY_BUDGET, DEFAULT_PLUGIN_MEMORY_MB, DevicePlugin
from edged.runtime import PAGE
from edged.tooling import new_plugin

ROOT = Path(__file__).resolve().parents[2]
#: what a plugin's linear memory may start at: the 64 KiB stack plus static data (frame buffers, tables, fonts)
#: stays far below this; zig's default stacks alone were 1 MiB (freestanding) and 16 MiB (WASI)
START_LIMIT = 1 << 20


def initial_bytes(wasm: Path) -> int:
    """The initial size of the module's exported memory."""
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(wasm))
    (memory,) = [e.type for e in module.exports if isinstance(e.type, wasmtime.MemoryType)]
    return memory.limits.min * PAGE


def test_one_default_for_the_daemon_preview_and_check() -> None:
    assert DaemonSection().plugin_memory_mb == DEFAULT_PLUGIN_MEMORY_MB == 16
    assert DEFAULT_MEMORY_BUDGET == 16 << 20


@pytest.mark.parametrize("lang", ["c", "zig"])
def test_a_new_plugin_fits_the_default_budget(tmp_path: Path, lang: str) -> None:
    folder = new_plugin("fits", lang, tmp_path)
    build = subprocess.run(
        [sys.executable, str(ROOT / "plugins" / "build"), str(folder)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    wasm = folder / "fits.wasm"
    assert initial_bytes(wasm) <= START_LIMIT
    # loaded as edged preview and edged plugin check load it (the default budget), it draws on a 64×64 display
    dp = DevicePlugin(folder / "manifest.json", display=DisplayInfo(64, 64, fps=30), fuel=10**9, timeout_ms=5000)
    frame = dp.frame(Tick(0, 0, 0, 64, 64, True))
    assert frame is not None and frame.shape[:2] == (64, 64) and frame.any()


#: the committed C and Zig plugins (plugins/**/NAME/NAME.c|zig, as plugins/build finds them)
SHIPPED = sorted(p for ext in ("c", "zig") for p in (ROOT / "plugins").glob(f"*/*/*.{ext}") if p.stem == p.parent.name)


def test_the_gallery_has_c_and_zig_plugins() -> None:
    assert {p.suffix for p in SHIPPED} == {".c", ".zig"} and len(SHIPPED) >= 8


@pytest.mark.parametrize("source", SHIPPED, ids=lambda p: p.stem)
def test_shipped_c_and_zig_plugins_start_small(source: Path) -> None:
    assert initial_bytes(source.with_suffix(".wasm")) <= START_LIMIT


def test_a_wasi_c_plugin_fits_the_default_budget(built_plugin: Any, tmp_path: Path) -> None:
    """tests/plugins/wasi/wasi_files.c: wasi-libc, malloc, stdio; zig's 16 MiB default stack made it 258 pages."""
    wasm = built_plugin("wasi_files")
    assert initial_bytes(wasm) <= START_LIMIT
    manifest = {
        "wasm": [{"path": str(wasm)}],
        "allowed_paths": {str(tmp_path): "/data"},
        "edged": {"name": "wasi_files", "kind": "service", "capabilities": {"wasi": True}},
    }
    dp = DevicePlugin(manifest, policy=DevicePolicy(wasi=True, allowed_paths={str(tmp_path): "/data"}))
    dp.plugin.call("write_file", "/data/x.txt\n" + "y" * 100_000)  # its heap grows past the initial pages
    assert (tmp_path / "x.txt").read_text() == "y" * 100_000
    assert dp.plugin.call("read_file", "/data/x.txt") == b"y" * 65536  # what its read buffer holds
