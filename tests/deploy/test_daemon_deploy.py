"""The deploy agent inside the daemon: a marketplace install over a real mosquitto lands on the daemon's display,
is health-checked on the daemon's own frames, and a version that fails its check is rolled back by the device."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.daemon import Daemon, load_config
from edged.daemon.deploy import DaemonTarget
from edged.daemon.hardware import DeviceHardware
from edged.deploy.agent import DeviceAgent
from edged.deploy.store import PluginStore
from tests.engine.anims import solid
from tests.support.harness import Harness, anim_wasm, wait_for

CONFIG = """
[daemon]
hardware = "emulated-16x16"
plugins_dir = ["plugins"]
state_dir = "state"
calibrate_fuel = false

[[displays]]
name = "main"
fps = 100
layers = [{ name = "main", playlist = "base" }]

[playlists.base]
items = [{ plugin = "red", duration_s = 1000 }]
"""


@pytest.fixture
def device(tmp_path: Path, harness: Harness) -> Iterator[tuple[Daemon, DeviceAgent]]:
    site = tmp_path / "site"
    (site / "plugins" / "red").mkdir(parents=True)
    (site / "plugins" / "red" / "red.wasm").write_bytes(solid(255, 0, 0))
    (site / "edged.toml").write_text(CONFIG)
    cfg = load_config(site / "edged.toml")
    daemon = Daemon(cfg, DeviceHardware("emulated-16x16", emulate=True))
    daemon.start()
    target = DaemonTarget(daemon, cfg.state_dir)
    agent = DeviceAgent(
        "pi-1",
        harness.broker_config("pi-1"),
        PluginStore(cfg.state_dir / "store"),
        harness.trust,
        target,
        cfg.policy,
        health_frames=20,
        health_timeout_s=30.0,
        chunk_size=4096,
        state_dir=cfg.state_dir,
    )
    agent.start()
    wait_for(agent.connected.is_set, what="the device to connect")
    yield daemon, agent
    agent.stop()
    target.close()
    daemon.stop()


def playing(daemon: Daemon) -> str | None:
    return daemon.stats()["displays"]["main"]["layers"]["main"]


def test_an_install_plays_on_the_display_and_a_failing_upgrade_rolls_back(
    harness: Harness, device: tuple[Daemon, DeviceAgent]
) -> None:
    daemon, _agent = device
    assert playing(daemon) == "red"
    harness.publish("glow", "1.0.0", anim_wasm("glow-1"))
    harness.publish("glow", "1.1.0", anim_wasm("glow-2", trap_at=3))
    harness.market.set_desired("device:pi-1", "glow", "1.0.0")
    wait_for(lambda: harness.healthy("pi-1", "glow", "1.0.0"), what="glow 1.0.0 healthy on the daemon")
    assert playing(daemon) == "glow"
    health = _agent.target.health("glow")  # on screen and in the off-screen probe
    assert health.frames >= 20 and health.strikes == 0 and health.running
    assert daemon.plugin_health("glow")[0] > 0  # and it really plays on the display

    harness.market.set_desired("device:pi-1", "glow", "1.1.0")
    wait_for(
        lambda: (p := harness.events.plugin("pi-1", "glow")) is not None and p.state in ("failed", "rolled_back"),
        what="the failing upgrade to be refused",
    )
    wait_for(lambda: daemon.plugin_health("glow")[1] == 0, what="the previous version to run again")
    store = PluginStore(daemon.config.state_dir / "store")
    assert store.active("glow").version == "1.0.0"
    assert playing(daemon) == "glow"
    assert daemon.stats()["displays"]["main"]["frames"] > 0


def test_edged_run_with_an_mqtt_section_installs_from_the_marketplace(tmp_path: Path, harness: Harness) -> None:
    import json
    import signal
    import subprocess
    import sys

    site = tmp_path / "site2"
    (site / "plugins" / "red").mkdir(parents=True)
    (site / "plugins" / "red" / "red.wasm").write_bytes(solid(255, 0, 0))
    broker = harness.broker_config("pi-2")
    sock = Path("/tmp") / f"edged-mqtt-{tmp_path.name[-10:]}.sock"
    mqtt = (
        f'\n[mqtt]\ndevice_id = "pi-2"\ntrust = "{harness.trust_path}"\nhealth_frames = 10\n'
        f'broker = {{ host = "{broker.host}", port = {broker.port} }}\n'
    )
    text = CONFIG.replace('state_dir = "state"', f'state_dir = "state"\ncontrol_socket = "{sock}"')
    (site / "edged.toml").write_text(text + mqtt)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged", "run", "--config", "edged.toml", "--emulate", "--render", "headless"],
        cwd=site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (d := harness.catalog.device("pi-2")) and d.presence == "online", what="pi-2 online")
        harness.publish("glow", "1.0.0", anim_wasm("glow-1"))
        harness.market.set_desired("device:pi-2", "glow", "1.0.0")
        wait_for(lambda: harness.healthy("pi-2", "glow", "1.0.0"), what="glow healthy on edged run")
        ctl = subprocess.run(
            [sys.executable, "-m", "edged", "ctl", "--socket", str(sock), "stats"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(ctl.stdout)["displays"]["main"]["layers"]["main"] == "glow"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    wait_for(lambda: harness.catalog.device("pi-2").presence == "offline", what="pi-2 offline after SIGTERM")


def test_a_playlist_from_the_marketplace_plays_on_the_daemon(
    harness: Harness, device: tuple[Daemon, DeviceAgent]
) -> None:
    daemon, _agent = device
    harness.publish("glow", "1.0.0", anim_wasm("glow-1"))
    harness.publish("spark", "1.0.0", anim_wasm("spark-1"))
    harness.market.set_desired("device:pi-1", "glow", "1.0.0")
    harness.market.set_desired("device:pi-1", "spark", "1.0.0")
    wait_for(lambda: harness.healthy("pi-1", "spark", "1.0.0"), what="spark healthy")
    wait_for(lambda: harness.healthy("pi-1", "glow", "1.0.0"), what="glow healthy, though spark is on screen")
    harness.market.set_playlist("device:pi-1", ["spark", "red"])
    wait_for(lambda: "remote" in daemon.config.playlists, what="the marketplace's playlist to arrive")
    assert [i.plugin for i in daemon.config.playlists["remote"].items] == ["spark", "red"]
    assert daemon.config.displays[0].layers[0].playlist == "remote"
    wait_for(lambda: playing(daemon) == "spark", what="its first item to play")
    harness.market.set_playlist("device:pi-1", None)
    wait_for(lambda: "remote" not in daemon.config.playlists, what="back to the device's own config")


def test_plugins_off_screen_pass_their_health_check_on_the_probe(
    harness: Harness, device: tuple[Daemon, DeviceAgent]
) -> None:
    """A plugin the display is not showing (another one is playing, or the marketplace's playlist leaves it out)
    is still run for its health check, off screen, as its display would run it."""
    daemon, _agent = device
    harness.publish("spark", "1.0.0", anim_wasm("spark-1"))
    harness.publish("glow", "1.0.0", anim_wasm("glow-1"))
    harness.publish("glow", "1.1.0", anim_wasm("glow-2"))
    harness.publish("blue", "1.0.0", anim_wasm("blue-1"))
    harness.market.set_desired("device:pi-1", "spark", "1.0.0")
    wait_for(lambda: harness.healthy("pi-1", "spark", "1.0.0"), what="spark healthy")
    harness.market.set_playlist("device:pi-1", ["spark"])
    wait_for(lambda: "remote" in daemon.config.playlists, what="the marketplace's playlist")
    # not in the playlist: never on screen, healthy through the probe
    harness.market.set_desired("device:pi-1", "glow", "1.0.0")
    wait_for(lambda: harness.healthy("pi-1", "glow", "1.0.0"), what="glow healthy off screen")
    harness.market.set_desired("device:pi-1", "glow", "1.1.0")
    wait_for(lambda: harness.healthy("pi-1", "glow", "1.1.0"), what="glow's upgrade healthy off screen")
    harness.market.set_desired("device:pi-1", "blue", "1.0.0")
    wait_for(lambda: harness.healthy("pi-1", "blue", "1.0.0"), what="blue healthy off screen")
    assert playing(daemon) == "spark"


def test_a_faulty_plugin_off_screen_still_fails_its_health_check(
    harness: Harness, device: tuple[Daemon, DeviceAgent]
) -> None:
    daemon, _agent = device
    harness.publish("spark", "1.0.0", anim_wasm("spark-1"))
    harness.publish("bad", "1.0.0", anim_wasm("bad-1", trap_at=2))
    harness.market.set_desired("device:pi-1", "spark", "1.0.0")
    wait_for(lambda: harness.healthy("pi-1", "spark", "1.0.0"), what="spark healthy")
    harness.market.set_playlist("device:pi-1", ["spark"])
    wait_for(lambda: "remote" in daemon.config.playlists, what="the marketplace's playlist")
    harness.market.set_desired("device:pi-1", "bad", "1.0.0")
    wait_for(
        lambda: (p := harness.events.plugin("pi-1", "bad")) is not None and p.state in ("failed", "rolled_back"),
        what="the faulty plugin to fail its check off screen",
    )


def test_identify_from_the_marketplace_blinks_the_daemons_display(
    harness: Harness, device: tuple[Daemon, DeviceAgent]
) -> None:
    daemon, _agent = device
    harness.market.command("pi-1", "identify")
    wait_for(lambda: daemon.displays["main"].runner.identify_until is not None, what="the display to blink")
