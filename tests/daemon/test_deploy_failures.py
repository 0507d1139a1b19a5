"""Issue 11 point 1: a deploy's failure is typed (the daemon's problems name the plugin they are about), not found
by searching the problems' text for the plugin's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.daemon import Daemon, load_config
from edged.daemon.deploy import DaemonTarget
from edged.daemon.hardware import DeviceHardware
from edged.errors import PluginError
from tests.daemon.test_daemon import CONFIG, write_plugin
from tests.engine.anims import solid

#: the deploy display also runs a sensor the config names but no folder provides
MISSING_SENSOR = '\n[[sensors]]\nplugin = "missing"\n'


def start(tmp_path: Path, extra: str = "") -> tuple[Daemon, DaemonTarget]:
    write_plugin(tmp_path, "red", solid(255, 0, 0), {"capabilities": {"led": True}})
    write_plugin(tmp_path, "blue", solid(0, 0, 255))
    path = tmp_path / "edged.toml"
    path.write_text(CONFIG.format(side="blue", calibrate="false") + extra)
    cfg = load_config(path)
    d = Daemon(cfg, DeviceHardware("emulated-16x16", emulate=True), config_path=path)
    d.start()
    return d, DaemonTarget(d, cfg.state_dir)


def test_another_plugins_problem_that_names_this_one_is_not_its_failure(tmp_path: Path) -> None:
    """Before: rebuilding the display for 'glow' reported "unknown plugin 'missing' (known: [..., 'glow', ...])";
    that message contains "'glow'", so the activation of a healthy glow was refused (and rolled back)."""
    d, target = start(tmp_path, MISSING_SENSOR)
    try:
        wasm = tmp_path / "glow.wasm"
        wasm.write_bytes(solid(9, 9, 9))
        target.activate("glow", "1.0.0", wasm, {"wasm": [{"path": str(wasm)}]})
        problems = [p for p in d.problems if "'glow'" in p.message]
        assert problems and all(p.plugin == "missing" for p in problems)  # the text names glow; the problem is not its
        assert ("main", "bg", "glow") in {(r["display"], r["layer"], r["plugin"]) for r in d.list_plugins()}
    finally:
        target.close()
        d.stop()


def test_a_deploy_next_to_a_sensor_that_does_not_load_succeeds(tmp_path: Path) -> None:
    d, target = start(tmp_path, '\n[[sensors]]\nplugin = "glow-sensor"\n')
    try:
        wasm = tmp_path / "glow.wasm"
        wasm.write_bytes(solid(9, 9, 9))
        activation = d.deploy("glow", d.assembler.catalog["red"].model_copy(update={"path": wasm}))
        assert activation.ok, activation.failures
        assert any(p.plugin == "glow-sensor" for p in d.problems)
    finally:
        target.close()
        d.stop()


def test_the_plugins_own_failure_is_still_a_failure(tmp_path: Path) -> None:
    d, target = start(tmp_path, MISSING_SENSOR)
    try:
        wasm = tmp_path / "broken.wasm"
        wasm.write_bytes(b"\x00asm\x01\x00\x00\x00garbage")
        with pytest.raises(PluginError, match="broken 1.0.0 did not start: plugin 'broken' not loaded"):
            target.activate("broken", "1.0.0", wasm, {"wasm": [{"path": str(wasm)}]})
        assert [p.plugin for p in d.problems if p.plugin == "broken"] == ["broken"]
        # what ran before runs on
        assert ("main", "bg", "red") in {(r["display"], r["layer"], r["plugin"]) for r in d.list_plugins()}
    finally:
        target.close()
        d.stop()
