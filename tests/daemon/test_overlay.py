"""Issue 11 point 1: the deployed-plugin overlay is a pure function of the config, the deployed plugins (with the
kind the host detected) and the marketplace's playlist; and point 1's "one detect_kind": the daemon places a
deployed plugin by the kind :func:`edged.host.plugin.detect_kind` gives, not by re-reading its manifest."""

from __future__ import annotations

import json
import time
from pathlib import Path

from edged.daemon import Daemon, load_config
from edged.daemon.config import OVERLAY_LAYER, DaemonConfig, PluginConfig
from edged.daemon.hardware import DeviceHardware
from edged.daemon.overlay import DeployedPlugin, deploy_display, overlay
from tests.conftest import wat
from tests.daemon.test_daemon import CONFIG, write_plugin
from tests.engine.anims import solid

#: a sensor plugin: it exports ``tick`` (and no ``frame``)
TICKER = wat('(module (memory (export "memory") 1) (func (export "tick") (result i32) (i32.const 0)))')


def config(tmp_path: Path, deploy: str = "") -> DaemonConfig:
    path = tmp_path / "edged.toml"
    path.write_text(CONFIG.format(side="blue", calibrate="false") + deploy)
    return load_config(path)


def entry(tmp_path: Path, name: str) -> PluginConfig:
    return PluginConfig(path=tmp_path / "store" / "plugins" / name / f"{name}.wasm")


def test_nothing_deployed_is_the_config_itself(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    placed = overlay(cfg, {})
    assert placed.config is cfg and placed.undrawable == [] and placed.replaced is None


def test_a_drawing_plugin_replaces_the_deploy_layers_playlist_and_says_which(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    placed = overlay(cfg, {"glow": DeployedPlugin(entry(tmp_path, "glow"), "animation")})
    bg = placed.config.displays[0].layers[0]
    assert bg.playlist == "deployed"
    assert [i.plugin for i in placed.config.playlists["deployed"].items] == ["glow"]
    assert placed.replaced is not None and (placed.replaced.layer, placed.replaced.playlist) == ("bg", "base")
    assert cfg.displays[0].layers[0].playlist == "base"  # the input is not changed


def test_a_sensor_plugin_runs_as_a_sensor_of_the_deploy_display(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    placed = overlay(cfg, {"ticker": DeployedPlugin(entry(tmp_path, "ticker"), "sensor")})
    assert [(s.plugin, s.display) for s in placed.config.sensors] == [("ticker", "main")]
    assert placed.config.displays == cfg.displays and placed.replaced is None


def test_append_keeps_the_configured_playlist_and_overlay_adds_a_layer(tmp_path: Path) -> None:
    glow = {"glow": DeployedPlugin(entry(tmp_path, "glow"), "animation")}
    appended = overlay(config(tmp_path, '\n[deploy]\nmode = "append"\n'), glow).config
    assert [i.plugin for i in appended.playlists["deployed"].items] == ["red", "glow"]
    layered = overlay(config(tmp_path, '\n[deploy]\nmode = "overlay"\n'), glow).config
    assert [layer.name for layer in layered.displays[0].layers] == ["bg", "right", OVERLAY_LAYER]
    assert layered.displays[0].layers[0].playlist == "base"


def test_the_marketplace_playlist_plays_there_and_extras_wait(tmp_path: Path) -> None:
    deployed = {
        "glow": DeployedPlugin(entry(tmp_path, "glow"), "animation"),
        "dim": DeployedPlugin(entry(tmp_path, "dim"), "animation"),
    }
    placed = overlay(config(tmp_path), deployed, ["dim"])
    assert [i.plugin for i in placed.config.playlists["remote"].items] == ["dim"]
    assert "deployed" not in placed.config.playlists  # glow is installed but not named: it waits


def test_drawing_plugins_on_a_device_without_displays_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "edged.toml"
    path.write_text('[daemon]\nhardware = "emulated-16x16"\nstate_dir = "state"\n')
    cfg = load_config(path)
    assert deploy_display(cfg) is None
    placed = overlay(
        cfg,
        {
            "glow": DeployedPlugin(entry(tmp_path, "glow"), "animation"),
            "ticker": DeployedPlugin(entry(tmp_path, "ticker"), "sensor"),
        },
    )
    assert placed.undrawable == ["glow"]
    assert [(s.plugin, s.display) for s in placed.config.sensors] == [("ticker", None)]


def test_a_deployed_sensor_whose_manifest_has_no_kind_runs_as_a_sensor(tmp_path: Path) -> None:
    """Before: the daemon read ``edged.kind`` from the manifest itself and, finding none, called the plugin an
    animation, while the host (which also looks at the exports) called it a sensor; the plugin was put in a
    playlist, took the layer's place and collected a strike on every frame."""
    write_plugin(tmp_path, "red", solid(255, 0, 0), {"capabilities": {"led": True}})
    write_plugin(tmp_path, "blue", solid(0, 0, 255))
    folder = write_plugin(tmp_path / "store", "ticker", TICKER, {"version": "1.0.0"})
    manifest = folder / "ticker.manifest.json"
    assert "kind" not in json.loads(manifest.read_text())["edged"]
    path = tmp_path / "edged.toml"
    path.write_text(CONFIG.format(side="blue", calibrate="false"))
    d = Daemon(load_config(path), DeviceHardware("emulated-16x16", emulate=True), config_path=path)
    d.start()
    try:
        activation = d.deploy("ticker", PluginConfig(path=manifest))
        assert activation.ok, activation.failures
        rows = {(r["display"], r["layer"], r["plugin"]): r for r in d.list_plugins()}
        assert ("main", None, "ticker") in rows  # a sensor of the deploy display, not a playlist item
        assert rows[("main", None, "ticker")]["kind"] == "sensor"
        assert ("main", "bg", "red") in rows  # the configured playlist plays on
        end = time.monotonic() + 60
        while d.stats()["plugins"]["main/sensor/ticker"]["ticks"] < 3 and time.monotonic() < end:
            time.sleep(0.02)
        frames, strikes, _error, running = d.plugin_health("ticker")
        assert frames >= 3 and strikes == 0 and running
    finally:
        d.stop()
