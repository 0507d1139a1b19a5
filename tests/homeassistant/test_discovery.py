"""Home Assistant discovery (issue 17, point 4) on a real mosquitto, with a client in Home Assistant's role: it reads
the retained discovery documents, checks the documented fields, sends commands and sees the LEDs change; installs
from the marketplace show as update entities; decommissioning removes every entity. Also the MQTT metrics (point 5).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edged.daemon import Daemon, load_config
from edged.daemon.deploy import DaemonTarget
from edged.daemon.hardware import DeviceHardware
from edged.deploy import topics
from edged.deploy.agent import DeviceAgent
from edged.deploy.store import PluginStore
from edged.homeassistant.bridge import HomeAssistantBridge
from edged.web.server import WebServer
from tests.support.harness import Harness, anim_wasm, wait_for
from tests.web.conftest import TOKEN, make_site

PREFIX = "homeassistant"


class HomeAssistant:
    """What Home Assistant's MQTT integration does with discovery: keep the latest retained message per topic."""

    def __init__(self, host: str, port: int) -> None:
        self.messages: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="home-assistant-test")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe([(f"{PREFIX}/#", 1), ("edged/v1/devices/#", 1)])
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages[msg.topic] = bytes(msg.payload)

    def get(self, topic: str) -> bytes | None:
        with self.lock:
            return self.messages.get(topic)

    def doc(self, topic: str) -> dict[str, Any] | None:
        raw = self.get(topic)
        return json.loads(raw) if raw else None

    def configs(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            items = list(self.messages.items())
        return {t: json.loads(p) for t, p in items if t.startswith(PREFIX + "/") and t.endswith("/config") and p}

    def send(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Device:
    daemon: Daemon
    agent: DeviceAgent
    bridge: HomeAssistantBridge
    target: DaemonTarget
    ha: HomeAssistant

    def latest_max(self, channel: int) -> int:
        out = self.daemon.led_output("main")
        frame = out.backend.latest()
        return int(out.pipeline.inverse(frame.data)[..., channel].max())


@pytest.fixture
def device(tmp_path: Path, harness: Harness) -> Iterator[Device]:
    path = make_site(tmp_path)
    cfg = load_config(path)
    daemon = Daemon(cfg, DeviceHardware("pi4-sensor-kit", emulate=True), config_path=path)
    daemon.start()
    target = DaemonTarget(daemon, cfg.state_dir)
    agent = DeviceAgent(
        "pi-7",
        harness.broker_config("pi-7"),
        PluginStore(cfg.state_dir / "store"),
        harness.trust,
        target,
        cfg.policy,
        health_frames=10,
        health_timeout_s=30.0,
        chunk_size=4096,
        state_dir=cfg.state_dir,
    )
    agent.start()
    wait_for(agent.connected.is_set, what="the agent to connect")
    ha = HomeAssistant(harness.broker.host, harness.broker.port)
    bridge = HomeAssistantBridge(
        daemon, "pi-7", harness.broker_config("pi-7"), name="Hall sign", state_dir=cfg.state_dir, agent=agent
    )
    bridge.start()
    dev = Device(daemon, agent, bridge, target, ha)
    yield dev
    bridge.stop()
    ha.close()
    agent.stop()
    target.close()
    daemon.stop()


LIGHT = f"{PREFIX}/light/pi-7/main/config"
SELECT = f"{PREFIX}/select/pi-7/main_playlist/config"
SENSOR = f"{PREFIX}/sensor/pi-7/distance_sensor_distance_m/config"


def test_discovery_follows_home_assistants_schema(device: Device) -> None:
    ha = device.ha
    wait_for(lambda: {LIGHT, SELECT, SENSOR} <= set(ha.configs()), what="light, select and sensor discovery")
    configs = ha.configs()
    light = configs[LIGHT]
    assert light["schema"] == "json"
    assert light["command_topic"] == "edged/v1/devices/pi-7/ha/main/light/set"
    assert light["state_topic"] == "edged/v1/devices/pi-7/ha/main/light/state"
    assert light["brightness"] is True and light["brightness_scale"] == 255
    assert light["supported_color_modes"] == ["brightness"]
    assert light["effect"] is True and light["effect_list"] == ["red", "green", "plasma"]
    assert light["unique_id"] == "edged_pi-7_main"
    for doc in configs.values():
        assert doc["device"]["identifiers"] == ["edged_pi-7"] and doc["device"]["name"] == "Hall sign"
        assert doc["device"]["manufacturer"] == "edged" and doc["device"]["model"] == "pi4-sensor-kit"
        assert doc["origin"]["name"] == "edged"
        assert doc["availability_mode"] == "all"
        presence, own = doc["availability"]
        assert presence["topic"] == topics.presence("pi-7") and presence["value_template"] == "{{ value_json.state }}"
        assert own["topic"] == "edged/v1/devices/pi-7/ha/availability"
        assert (own["payload_available"], own["payload_not_available"]) == ("online", "offline")
    assert len({doc["unique_id"] for doc in configs.values()}) == len(configs)
    select = configs[SELECT]
    assert select["options"] == ["colors", "fire"] and select["command_topic"].endswith("/main/playlist/set")
    sensor = configs[SENSOR]
    assert sensor["state_class"] == "measurement"
    wait_for(lambda: ha.get(sensor["state_topic"]), what="the sensor value")
    assert float(ha.get(sensor["state_topic"])) > 0

    def updates() -> dict[str, dict[str, Any]]:
        return {doc["name"]: doc for t, doc in ha.configs().items() if t.startswith(f"{PREFIX}/update/pi-7/")}

    wait_for(lambda: {"red", "green", "plasma", "distance_sensor"} <= set(updates()), what="the update entities")
    plasma = updates()["plasma"]["state_topic"]
    wait_for(lambda: ha.doc(plasma) == {"installed_version": "1.0.0", "latest_version": "1.0.0", "title": "plasma"})
    # available: the device's presence (the agent's retained online, offline its last will) and the bridge's own
    wait_for(lambda: json.loads(ha.get(topics.presence("pi-7")) or b"{}").get("state") == "online", what="presence")
    wait_for(lambda: ha.get("edged/v1/devices/pi-7/ha/availability") == b"online", what="the bridge online")


def test_commands_from_home_assistant_act_on_the_leds_and_state_comes_back(device: Device) -> None:
    ha = device.ha
    wait_for(lambda: LIGHT in ha.configs(), what="the light")
    command, state_topic = ha.configs()[LIGHT]["command_topic"], ha.configs()[LIGHT]["state_topic"]
    wait_for(lambda: device.latest_max(0) > 200, what="red")
    ha.send(command, json.dumps({"state": "OFF"}))
    wait_for(lambda: device.latest_max(0) == 0, what="the LEDs off")
    wait_for(lambda: (ha.doc(state_topic) or {}).get("state") == "OFF", what="OFF published back")
    ha.send(command, json.dumps({"state": "ON", "brightness": 40}))
    wait_for(lambda: 0 < device.latest_max(0) < 120, what="the LEDs dimmed")
    wait_for(
        lambda: ha.doc(state_topic) == {"state": "ON", "brightness": 40, "color_mode": "brightness", "effect": "red"}
    )
    ha.send(command, json.dumps({"effect": "green"}))
    wait_for(lambda: device.latest_max(1) > 0 and device.latest_max(0) == 0, what="green")
    wait_for(lambda: ha.doc(state_topic)["effect"] == "green", what="the effect published back")
    ha.send(command, "not json")  # refused (logged), nothing changes
    ha.send(command, json.dumps({"brightness": 999}))
    ha.send(command, json.dumps({"effect": "no-such-plugin"}))
    ha.send(ha.configs()[SELECT]["command_topic"], "fire")
    wait_for(lambda: device.daemon.display_state("main")["layers"][0]["playlist"] == "fire", what="fire playlist")
    wait_for(lambda: ha.get(ha.configs()[SELECT]["state_topic"]) == b"fire", what="the select published back")
    wait_for(lambda: ha.configs()[LIGHT]["effect_list"] == ["fire"], what="the effect list re-announced")
    assert device.daemon.display_state("main")["brightness"] == 40
    assert device.bridge.commands == 7
    # a change made elsewhere (the web page, edged ctl) shows in Home Assistant too
    device.daemon.set_brightness("main", 200)
    wait_for(lambda: ha.doc(state_topic)["brightness"] == 200, what="a local change published")


def test_update_entities_show_installed_and_wanted_versions_and_metrics_count_installs(
    device: Device, harness: Harness
) -> None:
    ha = device.ha
    harness.publish("glow", "1.0.0", anim_wasm("glow-1"))
    harness.publish("glow", "1.1.0", anim_wasm("glow-2", trap_at=3))
    harness.market.set_desired("device:pi-7", "glow", "1.0.0")
    topic = f"{PREFIX}/update/pi-7/glow_update/config"
    wait_for(lambda: topic in ha.configs(), what="an update entity for the installed plugin")
    state_topic = ha.configs()[topic]["state_topic"]
    wait_for(lambda: ha.doc(state_topic) == {"installed_version": "1.0.0", "latest_version": "1.0.0", "title": "glow"})
    harness.market.set_desired("device:pi-7", "glow", "1.1.0")  # fails its health check: rolled back
    wait_for(
        lambda: ha.doc(state_topic) == {"installed_version": "1.0.0", "latest_version": "1.1.0", "title": "glow"},
        what="the wanted version shown as an update that did not make it",
    )
    wait_for(lambda: ("rolled_back", "health_check") in device.agent.outcomes, what="the rollback counted")

    web = WebServer(device.daemon, port=0, token=TOKEN, agent=device.agent)
    web.start()
    try:
        text = httpx.get(f"{web.url}/metrics", timeout=10).text
    finally:
        web.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("edged_mqtt_connected", ())] == 1.0
    assert samples[("edged_install_outcomes_total", (("reason", ""), ("state", "healthy")))] >= 1
    assert samples[("edged_install_outcomes_total", (("reason", "health_check"), ("state", "rolled_back")))] == 1


def test_decommissioning_removes_every_entity(device: Device, harness: Harness) -> None:
    ha = device.ha
    # every entity the bridge announces (the update entities come after the light, select and sensor) has reached
    # Home Assistant before the snapshot; a snapshot taken earlier missed a late update entity
    wait_for(
        lambda: {LIGHT, SELECT, SENSOR} <= set(ha.configs()) and set(ha.configs()) == set(device.bridge.entities()[0]),
        what="every announced entity in Home Assistant",
    )
    announced = set(ha.configs())
    removed = device.bridge.remove()
    assert set(removed) == announced
    wait_for(lambda: not ha.configs(), what="every discovery document emptied")
    late = HomeAssistant(harness.broker.host, harness.broker.port)  # Home Assistant starting later finds nothing
    try:
        wait_for(lambda: late.get(topics.presence("pi-7")) is not None, what="the retained presence")
        assert not late.configs()
    finally:
        late.close()
    assert json.loads((device.daemon.config.state_dir / "homeassistant.json").read_text()) == {"announced": {}}


def test_entities_of_a_removed_display_go_away_and_home_assistant_restarts_get_them_again(device: Device) -> None:
    ha = device.ha
    wait_for(lambda: LIGHT in ha.configs(), what="the light")
    with ha.lock:
        ha.messages.pop(LIGHT)
    ha.send(f"{PREFIX}/status", "online")  # Home Assistant's birth message: announce again
    wait_for(lambda: LIGHT in ha.configs(), what="the light announced again")
    # a config without the display: its entities are removed
    cfg = device.daemon.config_path.read_text()
    start = cfg.index("[[displays]]")
    end = cfg.index("[playlists.colors]")
    device.daemon.config_path.write_text(cfg[:start] + cfg[end:])
    device.daemon.reload()
    wait_for(lambda: LIGHT not in ha.configs() and SELECT not in ha.configs(), what="the display's entities removed")
    assert ha.get(LIGHT) == b""


def test_turning_discovery_off_removes_what_the_last_run_announced(device: Device, harness: Harness) -> None:
    from edged.daemon.config import MqttSection
    from edged.web.face import Face

    ha = device.ha
    wait_for(lambda: LIGHT in ha.configs(), what="discovery")
    device.bridge.stop()  # the daemon stops; its entities stay in Home Assistant, unavailable
    assert ha.configs()
    broker = harness.broker_config("pi-7")
    mqtt_section = MqttSection(device_id="pi-7", trust=harness.trust_path, broker=broker)  # home_assistant off
    cfg = device.daemon.config.model_copy(update={"mqtt": mqtt_section})
    face = Face(device.daemon, cfg, http=False)
    face.start()
    wait_for(lambda: not ha.configs(), what="the previous run's entities removed")
    face.close()


def test_ctl_decommission_removes_the_device_from_home_assistant(device: Device, harness: Harness) -> None:
    import subprocess
    import sys

    from edged.daemon.config import HomeAssistantSection, MqttSection
    from edged.daemon.control import ControlServer
    from edged.web.face import Face

    device.bridge.stop()
    broker = harness.broker_config("pi-7")
    section = MqttSection(
        device_id="pi-7", trust=harness.trust_path, broker=broker, home_assistant=HomeAssistantSection(enabled=True)
    )
    cfg = device.daemon.config.model_copy(update={"mqtt": section})
    face = Face(device.daemon, cfg, device.agent, http=False)
    face.start()
    sock = Path("/tmp") / f"edged-ha-{id(face)}.sock"
    server = ControlServer(device.daemon, sock, face.local)
    server.start()
    try:
        wait_for(lambda: LIGHT in device.ha.configs(), what="discovery by the daemon's bridge")
        out = subprocess.run(
            [sys.executable, "-m", "edged", "ctl", "--socket", str(sock), "decommission"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert LIGHT in json.loads(out.stdout)["removed"]
        wait_for(lambda: not device.ha.configs(), what="every entity removed")
        again = subprocess.run(
            [sys.executable, "-m", "edged", "ctl", "--socket", str(sock), "decommission"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 1 and "not running" in again.stderr
    finally:
        server.close()
        face.close()
