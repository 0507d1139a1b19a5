"""Issue 15 point 6: where plugins installed over MQTT play is the config's `[deploy]` section. By default they
replace the deploy layer's playlist, and the log says so (with display, layer and playlist); "append" keeps the
configured playlist playing with them, "overlay" puts them on a layer of their own on top."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from edged.daemon import Daemon, load_config
from edged.daemon.config import PluginConfig
from edged.daemon.hardware import DeviceHardware
from edged.errors import ConfigError
from tests.daemon.test_daemon import CONFIG, write_plugin
from tests.engine.anims import solid


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write_plugin(tmp_path, "red", solid(255, 0, 0))
    write_plugin(tmp_path, "blue", solid(0, 0, 255))
    write_plugin(tmp_path, "green", solid(0, 255, 0))
    # an installed plugin lives outside plugins_dir, as the agent's store does
    write_plugin(tmp_path / "store", "glow", solid(9, 9, 9))
    return tmp_path


def daemon(site: Path, deploy: str = "") -> Daemon:
    path = site / "edged.toml"
    path.write_text(CONFIG.format(side="blue", calibrate="false") + deploy)
    d = Daemon(load_config(path), DeviceHardware("emulated-16x16", emulate=True), config_path=path)
    d.start()
    return d


def glow(site: Path) -> PluginConfig:
    return PluginConfig(path=site / "store" / "plugins" / "glow" / "glow.wasm")


def layers(d: Daemon) -> dict[str, str | None]:
    """What each layer of display main plays, once every layer has drawn (a rebuilt display starts anew)."""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        now = d.stats()["displays"]["main"]["layers"]
        if None not in now.values():
            return now
        time.sleep(0.02)
    raise AssertionError(f"a layer never drew: {now}")


def rows(d: Daemon) -> set[tuple[str | None, str]]:
    return {(r["layer"], r["plugin"]) for r in d.list_plugins()}


def test_by_default_a_deployed_plugin_replaces_the_first_layer_and_says_so(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = daemon(site)
    try:
        with caplog.at_level(logging.WARNING, logger="edged.daemon"):
            d.deploy("glow", glow(site))
        assert layers(d) == {"bg": "glow", "right": "blue"}
        said = [r for r in caplog.records if "replace the configured playlist" in r.getMessage()]
        assert len(said) == 1
        record = said[0]
        assert (record.display, record.layer, record.playlist) == ("main", "bg", "base")  # type: ignore[attr-defined]
        assert record.plugins == ["glow"]  # type: ignore[attr-defined]
        d.undeploy("glow")
        assert layers(d) == {"bg": "red", "right": "blue"}  # the playlist is back
    finally:
        d.stop()


def test_append_keeps_the_configured_playlist_playing(site: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = daemon(site, '\n[deploy]\nmode = "append"\nlayer = "right"\nduration_s = 5\n')
    try:
        with caplog.at_level(logging.WARNING, logger="edged.daemon"):
            d.deploy("glow", glow(site))
        assert not [r for r in caplog.records if "replace" in r.getMessage()]
        assert layers(d) == {"bg": "red", "right": "blue"}  # still its own first
        assert rows(d) == {("bg", "red"), ("right", "blue"), ("right", "glow")}
    finally:
        d.stop()


def test_overlay_puts_deployed_plugins_on_a_layer_of_their_own(site: Path) -> None:
    d = daemon(site, '\n[deploy]\nmode = "overlay"\nx = 12\nwidth = 4\nopacity = 0.5\n')
    try:
        d.deploy("glow", glow(site))
        assert layers(d) == {"bg": "red", "right": "blue", "deployed": "glow"}
        top = d.displays["main"].runner.layers[-1]
        assert (top.name, top.x, top.width, top.opacity) == ("deployed", 12, 4, 0.5)
        d.set_remote_playlist(["green", "glow"])  # the marketplace's playlist plays in the same place
        assert layers(d) == {"bg": "red", "right": "blue", "deployed": "green"}
    finally:
        d.stop()


def test_two_deployed_plugins_take_turns_instead_of_the_last_one_hiding_the_first(site: Path) -> None:
    write_plugin(site / "store", "dim", solid(1, 1, 1))
    d = daemon(site, "\n[deploy]\nduration_s = 7\n")
    try:
        d.deploy("glow", glow(site))
        d.deploy("dim", PluginConfig(path=site / "store" / "plugins" / "dim" / "dim.wasm"))
        assert {("bg", "glow"), ("bg", "dim")} <= rows(d)
    finally:
        d.stop()


@pytest.mark.parametrize(
    ("deploy", "message"),
    [
        ('display = "wall"', "deploy.display: unknown display 'wall'"),
        ('layer = "top"', "deploy.layer: display 'main' has no layer 'top'"),
        ('mode = "hide"', "deploy.mode"),
    ],
)
def test_a_bad_deploy_section_is_a_clear_config_error(site: Path, deploy: str, message: str) -> None:
    path = site / "edged.toml"
    path.write_text(CONFIG.format(side="blue", calibrate="false") + f"\n[deploy]\n{deploy}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)
