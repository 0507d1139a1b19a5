"""Home Assistant MQTT discovery: the device's displays, playlists, sensor values and plugin versions as entities.

Per display a ``light`` (JSON schema: on/off, brightness, effect = the plugin playing, effect list = the first
layer's playlist) and a ``select`` (the playlist); per value a sensor plugin publishes a ``sensor``; per plugin an
``update`` (installed version against the version the marketplace's desired state wants). Discovery documents go to
``<prefix>/<component>/<node>/<object>/config`` (retained); state and command topics live under the device's own
tree, ``edged/v1/devices/<id>/ha/…``. Each entity is available while both the device's presence (the deploy
agent's retained ``online``, with ``offline`` as its last will) and this bridge's own availability (its last will)
say ``online``.

Commands from Home Assistant run through :func:`edged.daemon.control.execute`, like ``edged ctl`` and the HTTP API.
State is compared every ``state_interval_s`` and published (retained) when it changed, so a playlist moving on or
a change made on the web page shows in Home Assistant too. Entities that disappear (a display, a plugin) have their
discovery removed; :meth:`HomeAssistantBridge.remove` (``edged ctl decommission``) removes them all.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import __version__
from ..daemon.config import DaemonConfig
from ..daemon.control import ControlRequest, execute
from ..deploy import topics
from ..deploy.broker import BrokerConfig, make_client
from ..fsutil import atomic_write

if TYPE_CHECKING:
    from ..daemon.daemon import Daemon
    from ..deploy.agent_view import AgentView

log = logging.getLogger("edged.homeassistant")

STATE_FILE = "homeassistant.json"


def object_id(*parts: str) -> str:
    """Home Assistant's node and object ids take letters, digits, ``_`` and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", "_".join(parts))


class LightCommand(BaseModel):
    """A JSON-schema light command from Home Assistant (the fields edged acts on; others are ignored)."""

    model_config = ConfigDict(extra="ignore")
    state: str | None = Field(default=None, pattern="^(ON|OFF)$")
    brightness: int | None = Field(default=None, ge=0, le=255)
    effect: str | None = None


class HomeAssistantBridge:
    """Announces a daemon to Home Assistant over its own MQTT connection and carries commands and state."""

    def __init__(
        self,
        daemon: Daemon,
        device_id: str,
        broker: BrokerConfig,
        *,
        prefix: str = "homeassistant",
        name: str | None = None,
        model: str | None = None,
        interval_s: float = 1.0,
        state_dir: Path | None = None,
        agent: AgentView | None = None,
    ) -> None:
        self.daemon = daemon
        self.device_id = topics.check_id(device_id)
        self.broker = broker
        self.prefix = prefix
        self.name = name or device_id
        self.model = model or daemon.config.daemon.hardware
        self.interval_s = interval_s
        self.agent = agent
        self.node = object_id(device_id)
        self.base = topics.device(device_id, "ha")
        self.availability_topic = f"{self.base}/availability"
        self._state_file = state_dir / STATE_FILE if state_dir is not None else None
        #: discovery topic -> the document last published (what is announced now)
        self._saved = ""
        self._announced: dict[str, str] = self._load()
        #: state topic -> the payload last published
        self._states: dict[str, str] = {}
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.connected = threading.Event()
        self._on_connect_event = threading.Event()
        self.commands = 0
        self.client = make_client(broker, f"edged-{device_id}-ha", clean_session=True)
        self.client.will_set(self.availability_topic, "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = lambda c, u, msg: self._queue.put((msg.topic, bytes(msg.payload)))

    @classmethod
    def from_config(
        cls, daemon: Daemon, cfg: DaemonConfig, state_dir: Path, agent: AgentView | None = None
    ) -> HomeAssistantBridge:
        m = cfg.mqtt
        assert m is not None
        ha = m.home_assistant
        return cls(
            daemon,
            m.device_id,
            m.broker,
            prefix=ha.discovery_prefix,
            name=ha.name,
            model=cfg.daemon.hardware,
            interval_s=ha.state_interval_s,
            state_dir=state_dir,
            agent=agent,
        )

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect (reconnecting by itself) and start announcing."""
        self._worker = threading.Thread(target=self._work, name="edged-homeassistant", daemon=True)
        self._worker.start()
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        """Say ``offline`` and disconnect; the discovery stays (Home Assistant shows the entities unavailable)."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=5)
        if self.connected.is_set():
            self.client.publish(self.availability_topic, "offline", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    def remove(self, timeout: float = 5.0) -> list[str]:
        """Remove every entity from Home Assistant (empty retained discovery documents) and clear the retained
        state; the bridge stops announcing. Returns the discovery topics removed."""
        self._stop.set()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=5)
        if not self.connected.wait(timeout):
            raise OSError("not connected to the MQTT broker: nothing was removed")
        removed = sorted(self._announced)
        infos = [self.client.publish(t, b"", qos=1, retain=True) for t in removed]
        infos += [self.client.publish(t, b"", qos=1, retain=True) for t in self._states]
        infos.append(self.client.publish(self.availability_topic, b"", qos=1, retain=True))
        for info in infos:
            info.wait_for_publish(timeout)
        self._announced.clear()
        self._states.clear()
        self._save()
        log.info("removed from Home Assistant", extra={"entities": len(removed)})
        return removed

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("Home Assistant bridge: connect refused", extra={"reason": str(reason)})
            return
        client.subscribe([(f"{self.base}/+/+/set", 1), (f"{self.prefix}/status", 1)])
        self._on_connect_event.set()
        self._queue.put(("$connected", b""))

    # --- the worker --------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        next_sync = 0.0
        while not self._stop.is_set():
            try:
                topic, payload = self._queue.get(timeout=0.05)
            except queue.Empty:
                topic, payload = "", b""
            try:
                if topic == "$connected":
                    self.connected.set()
                    self._states.clear()
                    self._sync(force=True)
                    self.client.publish(self.availability_topic, "online", qos=1, retain=True)
                elif topic == f"{self.prefix}/status":
                    if payload == b"online":  # Home Assistant restarted: announce again
                        self._sync(force=True)
                elif topic:
                    self._command(topic, payload)
                    self._sync()
                now = self.daemon.clock.now()
                if now >= next_sync and self.connected.is_set():
                    next_sync = now + self.interval_s
                    self._sync()
            except Exception:  # never let Home Assistant's input stop the bridge
                log.exception("Home Assistant bridge error", extra={"topic": topic})

    def _command(self, topic: str, payload: bytes) -> None:
        parts = topic[len(self.base) + 1 :].split("/")
        if len(parts) != 3 or parts[2] != "set":
            return
        obj, kind = parts[0], parts[1]
        display = next((d for d in list(self.daemon.displays) if object_id(d) == obj), None)
        if display is None:
            log.warning("Home Assistant command for an unknown display", extra={"topic": topic})
            return
        self.commands += 1
        try:
            if kind == "light":
                try:
                    cmd = LightCommand.model_validate_json(payload)
                except ValidationError as exc:
                    log.warning("bad light command from Home Assistant: %s", exc.errors()[0]["msg"])
                    return
                if cmd.effect is not None:
                    execute(self.daemon, ControlRequest(cmd="play", display=display, plugin=cmd.effect))
                if cmd.brightness is not None:
                    execute(self.daemon, ControlRequest(cmd="brightness", display=display, brightness=cmd.brightness))
                if cmd.state is not None:
                    execute(self.daemon, ControlRequest(cmd="power", display=display, on=cmd.state == "ON"))
            elif kind == "playlist":
                playlist = payload.decode("utf-8", errors="replace").strip()
                execute(self.daemon, ControlRequest(cmd="switch", display=display, playlist=playlist))
        except (KeyError, ValueError) as exc:
            log.warning("Home Assistant command refused: %s", exc.args[0] if exc.args else exc, extra={"topic": topic})

    # --- what is announced ---------------------------------------------------------------------------------------

    def _common(self, component: str, obj: str, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "unique_id": f"edged_{self.node}_{obj}",
            "device": {
                "identifiers": [f"edged_{self.node}"],
                "name": self.name,
                "manufacturer": "edged",
                "model": self.model,
                "sw_version": __version__,
            },
            "origin": {"name": "edged", "sw_version": __version__},
            "availability": [
                {
                    "topic": topics.presence(self.device_id),
                    "value_template": "{{ value_json.state }}",
                    "payload_available": "online",
                    "payload_not_available": "offline",
                },
                {"topic": self.availability_topic, "payload_available": "online", "payload_not_available": "offline"},
            ],
            "availability_mode": "all",
            "qos": 1,
        }

    def _versions(self) -> dict[str, tuple[str | None, str | None]]:
        versions: dict[str, tuple[str | None, str | None]] = {}
        for row in self.daemon.list_plugins():
            name = row["plugin"].split("#")[0]
            versions.setdefault(name, (row["version"], row["version"]))
        if self.agent is not None:
            try:
                managed = self.agent.plugin_versions()
            except RuntimeError:  # the agent's worker changed its state under us: next time
                managed = {}
            for name, (installed, wanted) in managed.items():
                running = installed or versions.get(name, (None, None))[0]
                versions[name] = (running, wanted or running)
        return versions

    def entities(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """(discovery topic -> document, state topic -> payload) for what the daemon runs now."""
        docs: dict[str, dict[str, Any]] = {}
        states: dict[str, str] = {}
        playlists = sorted(self.daemon.config.playlists)
        for display in list(self.daemon.displays):
            try:
                st = self.daemon.display_state(display)
            except KeyError:
                continue
            obj = object_id(display)
            first = st["layers"][0] if st["layers"] else None
            effects = [item.split("#")[0] for item in first["items"]] if first else []
            light_state = f"{self.base}/{obj}/light/state"
            docs[f"{self.prefix}/light/{self.node}/{obj}/config"] = {
                **self._common("light", obj, display),
                "schema": "json",
                "command_topic": f"{self.base}/{obj}/light/set",
                "state_topic": light_state,
                "brightness": True,
                "brightness_scale": 255,
                "supported_color_modes": ["brightness"],
                "effect": True,
                "effect_list": list(dict.fromkeys(effects)),
            }
            states[light_state] = json.dumps(
                {
                    "state": "ON" if st["power"] else "OFF",
                    "brightness": st["brightness"],
                    "color_mode": "brightness",
                    "effect": (first["playing"] or "").split("#")[0] if first else None,
                }
            )
            select_state = f"{self.base}/{obj}/playlist/state"
            options = playlists if first is None or first["playlist"] in playlists else [*playlists, first["playlist"]]
            docs[f"{self.prefix}/select/{self.node}/{obj}_playlist/config"] = {
                **self._common("select", f"{obj}_playlist", f"{display} playlist"),
                "command_topic": f"{self.base}/{obj}/playlist/set",
                "state_topic": select_state,
                "options": options,
                "icon": "mdi:playlist-play",
            }
            if first is not None and first["playlist"] is not None:
                states[select_state] = first["playlist"]
        for plugin, values in self.daemon.sensor_values().items():
            for key, value in values.items():
                obj = object_id(plugin, key)
                state_topic = f"{self.base}/sensor/{obj}"
                doc = {**self._common("sensor", obj, f"{plugin} {key}"), "state_topic": state_topic}
                if _numeric(value):
                    doc["state_class"] = "measurement"
                docs[f"{self.prefix}/sensor/{self.node}/{obj}/config"] = doc
                states[state_topic] = value
        for plugin, (installed, latest) in sorted(self._versions().items()):
            obj = object_id(plugin, "update")
            state_topic = f"{self.base}/update/{object_id(plugin)}"
            docs[f"{self.prefix}/update/{self.node}/{obj}/config"] = {
                **self._common("update", obj, plugin),
                "state_topic": state_topic,
                "entity_category": "diagnostic",
            }
            states[state_topic] = json.dumps(
                {"installed_version": installed, "latest_version": latest, "title": plugin}
            )
        return docs, states

    def _sync(self, force: bool = False) -> None:
        if not self.connected.is_set():
            return
        docs, states = self.entities()
        for topic, doc in docs.items():
            text = json.dumps(doc, sort_keys=True)
            if force or self._announced.get(topic) != text:
                self.client.publish(topic, text, qos=1, retain=True)
                self._announced[topic] = text
        for topic in [t for t in self._announced if t not in docs]:
            self.client.publish(topic, b"", qos=1, retain=True)  # gone: removed from Home Assistant
            del self._announced[topic]
        for topic, payload in states.items():
            if force or self._states.get(topic) != payload:
                self.client.publish(topic, payload, qos=1, retain=True)
                self._states[topic] = payload
        self._save()

    # --- what was announced, across restarts (to remove entities that went away meanwhile) ---------------------

    def _load(self) -> dict[str, str]:
        if self._state_file is None:
            return {}
        try:
            doc = json.loads(self._state_file.read_text())
            return {str(k): str(v) for k, v in doc.get("announced", {}).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _save(self) -> None:
        if self._state_file is None:
            return
        text = json.dumps({"announced": self._announced}, sort_keys=True)
        if text == self._saved:
            return
        try:
            atomic_write(self._state_file, text)
            self._saved = text
        except OSError as exc:
            log.warning("cannot save Home Assistant state: %s", exc)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
