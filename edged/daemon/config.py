"""The daemon's TOML config: displays and their layers, playlists, plugins, sensors, device policy, logging.

Validated by pydantic with errors that name the key and the line (see :mod:`edged.tomlconfig`). Relative paths
are relative to the config file. Without a config file the daemon runs :data:`DEFAULT_CONFIG`: the bundled demo
plugins on an emulated 16×16 matrix, with no broker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..bundled import bundled_dir
from ..deploy.broker import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, BrokerConfig
from ..engine.playlist import PlaylistItem
from ..engine.supervisor import StrikePolicy
from ..host.capabilities import DevicePolicy
from ..host.plugin import DEFAULT_PLUGIN_MEMORY_MB
from ..tomlconfig import load_toml
from .paths import default_state_dir

_STRICT = ConfigDict(extra="forbid", frozen=True)

#: The demo plugins the embedded default plays (shipped in the wheel; ``plugins/gallery`` in a checkout).
BUNDLED_PLUGINS = bundled_dir("plugins")


class LoggingConfig(BaseModel):
    model_config = _STRICT
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: level for plugins' own log lines (logger ``edged.plugin.*``)
    plugin_level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class PluginConfig(BaseModel):
    """One plugin the daemon may run. ``path`` is a manifest (JSON) or a bare ``.wasm`` (legacy grant)."""

    model_config = _STRICT
    path: Path
    #: Extism config merged over the manifest's (strings)
    config: dict[str, str] = Field(default_factory=dict)
    #: per-call budget in ms; default: the engine's share of the frame period
    budget_ms: float | None = Field(default=None, gt=0)
    #: the wall-clock backstop per call; default: ``daemon.deadline_factor`` × the budget
    deadline_ms: float | None = Field(default=None, gt=0)
    #: what its layer shows while it fails or sits in quarantine: "last" (its last good frame), "off" (nothing:
    #: the layers below show through) or a colour "#rrggbb"
    fallback: str = Field(default="last", pattern=r"^(last|off|#[0-9a-fA-F]{6})$")


class LayerConfig(BaseModel):
    """A region of a display (x, y, width, height; 0 = to the edge) running a playlist, bottom layers first."""

    model_config = _STRICT
    name: str
    playlist: str
    x: int = Field(default=0, ge=0)
    y: int = Field(default=0, ge=0)
    width: int = Field(default=0, ge=0)
    height: int = Field(default=0, ge=0)
    opacity: float = Field(default=1.0, ge=0, le=1)


class DisplaySection(BaseModel):
    """A display: its geometry and output come from the hardware profile's display of the same name."""

    model_config = _STRICT
    name: str
    #: frames per second; default: the hardware profile's rate for this display
    fps: float | None = Field(default=None, gt=0, le=240)
    layers: list[LayerConfig] = Field(min_length=1)
    #: fraction of the frame period the plugins of this display may use together (split across layers)
    budget_fraction: float = Field(default=0.6, gt=0, le=1)


class PlaylistConfig(BaseModel):
    model_config = _STRICT
    loop: bool = True
    items: list[PlaylistItem] = Field(min_length=1)


class SensorSection(BaseModel):
    """A sensor plugin run every ``interval_s`` seconds between the frames of ``display``."""

    model_config = _STRICT
    plugin: str
    interval_s: float = Field(default=0.5, gt=0)
    display: str | None = None
    budget_ms: float = Field(default=5.0, gt=0)


class DaemonSection(BaseModel):
    model_config = _STRICT
    state_dir: Path | None = None
    #: folders scanned for plugins (``NAME/NAME.manifest.json`` or ``NAME/manifest.json`` or ``NAME/NAME.wasm``)
    plugins_dir: list[Path] = Field(default_factory=list)
    #: hardware profile: a name from the ``hardware/`` folder or a path to a TOML profile (one with a ``/`` or ending
    #: in ``.toml``: :meth:`DaemonConfig.resolve_paths` makes it absolute against the config file's folder)
    hardware: str = "emulated-16x16"
    #: local control socket; default ``<state_dir>/control.sock``
    control_socket: Path | None = None
    #: measure fuel per ms at start-up so budgets in ms become fuel (else only the wall-clock deadline applies)
    calibrate_fuel: bool = True
    strikes: StrikePolicy = Field(default_factory=StrikePolicy)
    #: Python's thread switch interval while the daemon runs (process-wide): a frame thread waiting for the GIL
    #: behind MQTT, install or logging threads waits at most about this long per hand-over (Python's default: 5 ms)
    gil_switch_ms: float = Field(default=1.0, ge=0.1, le=10.0)
    #: each call's wall-clock deadline as a multiple of its budget (the backstop behind fuel)
    deadline_factor: float = Field(default=2.0, ge=1.0, le=20.0)
    #: everything one plugin may hold (MiB): its memories, its kernel blocks and vars; a manifest can only lower it.
    #: The default (DEFAULT_PLUGIN_MEMORY_MB, 16, which preview and plugin check use too) lets ten plugins fit a Pi
    #: Zero 2 W; edged refuses to start when the caps together exceed the machine's memory (docs/daemon.md, Sizing)
    plugin_memory_mb: int = Field(default=DEFAULT_PLUGIN_MEMORY_MB, ge=1, le=4096)


class HomeAssistantSection(BaseModel):
    """``[mqtt.home_assistant]``: announce the device to Home Assistant by MQTT discovery (docs/web.md)."""

    model_config = _STRICT
    enabled: bool = False
    #: Home Assistant's discovery prefix (its MQTT integration's setting)
    discovery_prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    #: the device's name in Home Assistant (default: the device id)
    name: str | None = None
    #: how often the state is compared and published on change (seconds)
    state_interval_s: float = Field(default=1.0, ge=0.1, le=60)


class HttpSection(BaseModel):
    """``[http]``: the web page, the HTTP API and ``/metrics`` (docs/web.md)."""

    model_config = _STRICT
    enabled: bool = True
    #: address to listen on: loopback by default; "0.0.0.0" (or the LAN address) to open it on the LAN
    bind: str = "127.0.0.1"
    #: TCP port (0: any free port, logged at start)
    port: int = Field(default=8080, ge=0, le=65535)
    #: when bound beyond loopback, let anyone on the network read (page, state, live view, metrics) without the
    #: credential; changing anything always needs it there
    open_reads: bool = False
    #: the credential's file; default ``<state_dir>/http-token`` (created at first start, mode 0600)
    token_file: Path | None = None
    #: the live view streams at most this many frames per second per display
    live_fps_max: float = Field(default=30.0, gt=0, le=240)
    #: requests with a larger body are refused (413)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)


class MqttSection(BaseModel):
    """Plugin installs over MQTT from a marketplace (docs/mqtt.md). Without this section there is no agent."""

    model_config = _STRICT
    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    groups: list[str] = Field(default_factory=list)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    #: trusted publisher and marketplace keys (JSON or TOML, see docs/deploy-store.md)
    trust: Path
    #: the on-device plugin store; default ``<state_dir>/store``
    store: Path | None = None
    keep_versions: int = Field(default=3, ge=1)
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=MIN_CHUNK_SIZE, le=MAX_CHUNK_SIZE)
    #: a new version must run this many frames (or sensor ticks) without a strike ...
    health_frames: int = Field(default=30, ge=1)
    #: ... within this many seconds, or the device rolls back to the previous version
    health_timeout_s: float = Field(default=10.0, gt=0)
    home_assistant: HomeAssistantSection = Field(default_factory=HomeAssistantSection)


class DeploySection(BaseModel):
    """Where plugins installed over MQTT play, when no playlist of the config names them (docs/mqtt.md). The
    marketplace's playlist for the device plays in the same place.

    ``mode``: ``"replace"`` (the default) plays them on ``layer`` instead of its playlist, which comes back when they
    are removed (logged as a warning each time, so the configured playlist never disappears silently);
    ``"append"`` adds them to the end of that layer's playlist, ``duration_s`` each turn; ``"overlay"`` plays them on
    a layer of their own on top of the display's layers (``x``, ``y``, ``width``, ``height``, ``opacity``), the
    configured layers keep playing underneath."""

    model_config = _STRICT
    mode: Literal["replace", "append", "overlay"] = "replace"
    #: the display (default: the first)
    display: str | None = None
    #: the layer replaced or appended to (default: the display's first layer)
    layer: str | None = None
    #: seconds each deployed plugin plays per turn when several share a layer (or in "append" mode)
    duration_s: float = Field(default=30.0, gt=0)
    #: "overlay": the layer's region (0 = to the edge) and opacity
    x: int = Field(default=0, ge=0)
    y: int = Field(default=0, ge=0)
    width: int = Field(default=0, ge=0)
    height: int = Field(default=0, ge=0)
    opacity: float = Field(default=1.0, ge=0, le=1)


#: the name of the layer a ``[deploy] mode = "overlay"`` adds on top of its display
OVERLAY_LAYER = "deployed"


class DaemonConfig(BaseModel):
    """The whole ``edged.toml``."""

    model_config = _STRICT
    daemon: DaemonSection = Field(default_factory=DaemonSection)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    policy: DevicePolicy = Field(default_factory=DevicePolicy)
    plugins: dict[str, PluginConfig] = Field(default_factory=dict)
    playlists: dict[str, PlaylistConfig] = Field(default_factory=dict)
    displays: list[DisplaySection] = Field(default_factory=list)
    sensors: list[SensorSection] = Field(default_factory=list)
    mqtt: MqttSection | None = None
    deploy: DeploySection = Field(default_factory=DeploySection)
    http: HttpSection = Field(default_factory=HttpSection)

    @model_validator(mode="after")
    def _references(self) -> DaemonConfig:
        # each message starts with the key it is about, so the TOML loader can point at its line
        names = [d.name for d in self.displays]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"displays.{i}.name: display names must be unique ('{name}' is used twice)")
        for i, d in enumerate(self.displays):
            for j, layer in enumerate(d.layers):
                if layer.playlist not in self.playlists:
                    raise ValueError(
                        f"displays.{i}.layers.{j}.playlist: display '{d.name}' layer '{layer.name}' uses unknown "
                        f"playlist '{layer.playlist}' (known: {sorted(self.playlists)})"
                    )
            layer_names = [layer.name for layer in d.layers]
            for j, lname in enumerate(layer_names):
                if lname in layer_names[:j]:
                    raise ValueError(f"displays.{i}.layers.{j}.name: layer names must be unique ('{lname}')")
        dep = self.deploy
        if dep.display is not None and dep.display not in names:
            raise ValueError(f"deploy.display: unknown display '{dep.display}' (known: {names})")
        section = next((x for x in self.displays if x.name == dep.display), None) if dep.display else None
        section = section or (self.displays[0] if self.displays else None)
        if section is not None:
            layers = [layer.name for layer in section.layers]
            if dep.layer is not None and dep.layer not in layers:
                raise ValueError(
                    f"deploy.layer: display '{section.name}' has no layer '{dep.layer}' (it has: {layers})"
                )
            if dep.mode == "overlay" and OVERLAY_LAYER in layers:
                raise ValueError(
                    f"deploy.mode: \"overlay\" adds a layer named '{OVERLAY_LAYER}' to display '{section.name}', "
                    "which already has one: rename that layer"
                )
        for i, s in enumerate(self.sensors):
            if s.display is not None and s.display not in names:
                raise ValueError(
                    f"sensors.{i}.display: sensor '{s.plugin}' names unknown display '{s.display}' (known: {names})"
                )
        return self

    def resolve_paths(self, base: Path) -> DaemonConfig:
        """Make relative paths absolute against ``base`` (the config file's folder)."""

        def fix(p: Path) -> Path:
            p = p.expanduser()
            return p if p.is_absolute() else (base / p).resolve()

        hardware = self.daemon.hardware
        if "/" in hardware or hardware.endswith(".toml"):  # a path to a profile (a bare name stays a name)
            hardware = str(fix(Path(hardware)))
        daemon = self.daemon.model_copy(
            update={
                "hardware": hardware,
                "state_dir": fix(self.daemon.state_dir) if self.daemon.state_dir else None,
                "plugins_dir": [fix(p) for p in self.daemon.plugins_dir],
                "control_socket": fix(self.daemon.control_socket) if self.daemon.control_socket else None,
            }
        )
        http = self.http.model_copy(update={"token_file": fix(self.http.token_file) if self.http.token_file else None})
        plugins = {k: v.model_copy(update={"path": fix(v.path)}) for k, v in self.plugins.items()}
        mqtt = self.mqtt
        if mqtt is not None:
            broker = mqtt.broker
            files = {k: fix(v) for k in ("ca_file", "cert_file", "key_file") if (v := getattr(broker, k)) is not None}
            mqtt = mqtt.model_copy(
                update={
                    "trust": fix(mqtt.trust),
                    "store": fix(mqtt.store) if mqtt.store else None,
                    "broker": broker.model_copy(update=files),
                }
            )
        return self.model_copy(update={"daemon": daemon, "plugins": plugins, "mqtt": mqtt, "http": http})

    @property
    def state_dir(self) -> Path:
        return self.daemon.state_dir or default_state_dir()

    @property
    def http_token_file(self) -> Path:
        return self.http.token_file or self.state_dir / "http-token"

    @property
    def control_socket(self) -> Path:
        return self.daemon.control_socket or self.state_dir / "control.sock"


DEFAULT_CONFIG = """\
# edged's embedded default: the bundled demo plugins on an emulated 16x16 matrix, no broker.
[daemon]
hardware = "emulated-16x16"
plugins_dir = ["{plugins}"]

[[displays]]
name = "main"
layers = [{{ name = "main", playlist = "demo" }}]

[playlists.demo]
loop = true
items = [
  {{ plugin = "rainbow", duration_s = 6, transition = "crossfade" }},
  {{ plugin = "plasma", duration_s = 6, transition = "crossfade" }},
  {{ plugin = "fire", duration_s = 6, transition = "crossfade" }},
  {{ plugin = "life", duration_s = 10, transition = "crossfade" }},
  {{ plugin = "matrix_rain", duration_s = 6, transition = "crossfade" }},
]
"""


def default_config() -> DaemonConfig:
    """The embedded default config (see :data:`DEFAULT_CONFIG`)."""
    text = DEFAULT_CONFIG.format(plugins=BUNDLED_PLUGINS.as_posix())
    return load_toml(DaemonConfig, text=text)


def load_config(path: str | Path | None) -> DaemonConfig:
    """Load ``path`` (or the embedded default when None), with paths resolved against the file's folder."""
    if path is None:
        return default_config()
    cfg = load_toml(DaemonConfig, path)
    return cfg.resolve_paths(Path(path).resolve().parent)
