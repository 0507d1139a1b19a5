"""Issue 16.6: the memory caps of the configured plugins must fit the machine. The old default (64 MiB a plugin)
let ten plugins reach 640 MiB, more than a Pi Zero 2 W has; now the default fits ten there, and a configuration
whose caps exceed the machine's memory is refused with the numbers and how to size them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import edged.daemon.assembly as assembly_mod
from edged.bundled import bundled_dir
from edged.daemon.config import DaemonSection, load_config
from edged.daemon.daemon import Daemon
from edged.daemon.hardware import DeviceHardware
from edged.daemon.memory import DEVICE_CLASSES, EDGED_BASE_MB, machine_memory_mb
from edged.errors import ConfigError

TEN = [
    "rainbow",
    "plasma",
    "fire",
    "life",
    "matrix_rain",
    "matricks_pulse",
    "scroll_text",
    "sprite",
    "bar_graph",
    "plasma#2",
]
#: MemTotal of a Pi Zero 2 W (512 MB, less the GPU's share and the kernel's)
ZERO_2_W_MB = 427


def ten_plugin_config(tmp_path: Path, memory_line: str = "") -> Path:
    items = ",\n  ".join(
        f'{{ plugin = "{name.split("#")[0]}", duration_s = 5'
        + (', config = { seed = "2" }' if "#" in name else "")
        + " }"
        for name in TEN
    )
    path = tmp_path / "edged.toml"
    path.write_text(
        f"""
[daemon]
hardware = "emulated-16x16"
plugins_dir = ["{bundled_dir("plugins").as_posix()}"]
state_dir = "state"
calibrate_fuel = false
{memory_line}

[[displays]]
name = "main"
layers = [{{ name = "main", playlist = "ten" }}]

[playlists.ten]
items = [
  {items},
]
"""
    )
    return path


def test_default_cap_fits_ten_plugins_on_a_pi_zero_2_w(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assembly_mod, "machine_memory_mb", lambda: ZERO_2_W_MB)
    d = Daemon(load_config(ten_plugin_config(tmp_path)), DeviceHardware("emulated-16x16", emulate=True), frames=2)
    try:
        d.start()
        d.wait()
        assert len(d.list_plugins()) == 10
        runtimes = [p.plugin.plugin for p in d.displays["main"].runner.layers[0].player.slots.values()]
        # what each may hold: its own memory plus the kernel's, within the device's per-plugin budget
        held = [rt.memory_limit + rt.kernel_memory_limit for rt in runtimes]
        assert all(h <= DaemonSection().plugin_memory_mb * 2**20 for h in held)
        assert EDGED_BASE_MB + sum(held) / 2**20 <= ZERO_2_W_MB
    finally:
        d.stop()


def test_the_old_default_is_refused_on_a_pi_zero_2_w(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assembly_mod, "machine_memory_mb", lambda: ZERO_2_W_MB)
    cfg = load_config(ten_plugin_config(tmp_path, "plugin_memory_mb = 64"))
    hw = DeviceHardware("emulated-16x16", emulate=True)
    d = Daemon(cfg, hw, frames=2)
    with pytest.raises(ConfigError) as err:
        d.start()
    msg = str(err.value)
    assert "10 plugins capped at up to 64 MiB each (640 MiB)" in msg
    assert f"this machine has {ZERO_2_W_MB} MiB" in msg and "lower daemon.plugin_memory_mb (at most 32" in msg
    assert not d.displays and hw.outputs["main"].backend.latest().data.max() == 0  # nothing left running or lit
    d.stop()


def test_run_refuses_caps_beyond_this_machines_memory(tmp_path: Path) -> None:
    machine = machine_memory_mb()
    assert machine is not None
    per_plugin = min(4096, machine // 10 + 64)  # ten of these exceed the real machine
    path = ten_plugin_config(tmp_path, f"plugin_memory_mb = {per_plugin}")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edged",
            "run",
            "--emulate",
            "--config",
            str(path),
            "--frames",
            "2",
            "--no-control",
            "--no-http",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert f"this machine has {machine} MiB" in r.stderr and "docs/daemon.md, Sizing" in r.stderr


def test_device_classes_fit_ten_plugins() -> None:
    for name, (ram, per_plugin) in DEVICE_CLASSES.items():
        assert EDGED_BASE_MB + 10 * per_plugin < ram * 0.8, name
    assert DaemonSection().plugin_memory_mb == DEVICE_CLASSES["Pi Zero 2 W / Pi 3A+ (512 MB)"][1]
