"""Display assembly: from the config's sections, playlists and plugin catalog to displays ready to run (plugins
loaded under their budgets, layers laid out, sensor plugins attached, the LED output opened).

Everything here runs on the caller's thread (start, a reload, a playlist switch), never on a frame thread.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..engine.calibration import Calibration, calibration
from ..engine.clock import Clock
from ..engine.display import DisplayRunner, Layer, SensorTask
from ..engine.playlist import PlaylistItem, PlaylistPlayer
from ..engine.supervisor import Budget, Supervised
from ..errors import ConfigError, EdgedError
from ..host.functions import DeviceIO, DisplayInfo, SharedValues
from ..host.plugin import DevicePlugin
from .config import DaemonConfig, DisplaySection, PluginConfig, SensorSection
from .levels import restore_levels
from .memory import machine_memory_mb, memory_problem
from .plugins import discover, fingerprint


class Sink(Protocol):
    """A display's output: the hardware pipeline and backend (or its emulation)."""

    def show(self, frame: np.ndarray) -> None: ...
    def blank(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class DisplayGeometry:
    """What the daemon needs to know of a display from the hardware profile."""

    width: int
    height: int
    serpentine: bool = False
    brightness: int = 255


class Hardware(Protocol):
    """The device's hardware as the daemon uses it (see :mod:`edged.daemon.hardware`)."""

    io: DeviceIO | None

    def geometry(self, display: str) -> DisplayGeometry: ...
    def fps(self, display: str) -> float: ...
    def open_sink(self, display: str) -> Sink: ...
    def advance(self, t: float) -> None: ...
    def close(self) -> None: ...


@dataclass
class RunningDisplay:
    """A display built from its config section: its frame runner, output and thread."""

    section: DisplaySection
    runner: DisplayRunner
    sink: Sink
    geometry: DisplayGeometry
    #: everything the display's state depends on (see :meth:`DisplayAssembler.display_key`)
    key: str
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)
    #: the playlist each layer plays (the config's, until ``switch_playlist``)
    playlists: dict[str, str] = field(default_factory=dict)


#: reports a problem: (where, message, the plugin it is about or None)
ProblemReporter = Callable[[str, str, "str | None"], None]


class DisplayAssembler:
    """Builds displays, playlists and supervised plugin slots from :attr:`config` and the plugin catalog.

    ``problem`` is called for what is refused (a plugin that does not load, an empty playlist) while the rest is
    built. ``idle`` is what each display's frame thread runs in its slack (the GC pacer's ``idle``)."""

    def __init__(
        self,
        config: DaemonConfig,
        hardware: Hardware,
        values: SharedValues,
        clock: Clock,
        problem: ProblemReporter,
        idle: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.hardware = hardware
        self.values = values
        self.clock = clock
        self.problem = problem
        self.idle = idle
        #: every plugin a config can name (plugins_dir, ``[plugins]``, deployed), and a digest of each one's files
        self.catalog: dict[str, PluginConfig] = {}
        self.prints: dict[str, str] = {}
        self.fuel_per_ms: float | None = None
        self.calibration: Calibration | None = None

    def refresh_catalog(self, deployed: dict[str, PluginConfig]) -> None:
        """Find the config's plugins again (``deployed`` ones win over those of the same name)."""
        self.catalog = {**discover(self.config), **deployed}
        self.prints = {name: fingerprint(entry.path) for name, entry in self.catalog.items()}

    def forget_print(self, name: str) -> None:
        self.prints.pop(name, None)

    def _rate(self) -> float | None:
        if self.fuel_per_ms is None and self.config.daemon.calibrate_fuel:
            self.calibration = calibration()  # this machine's, cached across runs: budgets mean the same each time
            self.fuel_per_ms = self.calibration.fuel_per_ms
        return self.fuel_per_ms

    def load(
        self, name: str, info: DisplayInfo | None, extra: dict[str, str], budget_ms: float, where: str
    ) -> Supervised | None:
        """Plugin ``name`` from the catalog, supervised under a budget of ``budget_ms`` per call; None (and a
        problem) when it does not load."""
        entry = self.catalog.get(name)
        if entry is None:
            self.problem(where, f"unknown plugin '{name}' (known: {sorted(self.catalog)})", name)
            return None
        try:
            plugin = DevicePlugin(
                entry.path,
                policy=self.config.policy,
                io=self.hardware.io,
                values=self.values,
                display=info,
                config={**entry.config, **extra},
                name=name,
                memory_budget=self.config.daemon.plugin_memory_mb << 20,
            )
        except (EdgedError, OSError, ValueError) as exc:
            self.problem(where, f"plugin '{name}' not loaded: {exc}", name)
            return None
        edged = plugin.compiled.manifest.edged
        hints = edged.budget if edged is not None else {}
        # the config wins; a manifest's own hint can only lower the display's share of the frame period (a plugin
        # does not get to grant itself more time than the device gives it)
        hint = hints.get("frame_ms")
        budget = Budget.from_ms(
            entry.budget_ms or (min(hint, budget_ms) if hint else budget_ms),
            self._rate(),
            self.config.daemon.deadline_factor,
            entry.deadline_ms,
        )
        if hints.get("fuel") and (budget.fuel is None or hints["fuel"] < budget.fuel):
            # a plugin that says it never needs more fuel is held to that: a deterministic cap, machine-independent
            budget = dataclasses.replace(budget, fuel=int(hints["fuel"]))
        fallback = None
        if entry.fallback.startswith("#") and info is not None:
            rgb = [int(entry.fallback[i : i + 2], 16) for i in (1, 3, 5)]
            fallback = np.full((info.height, info.width, 3), rgb, np.uint8)
        try:
            return Supervised(
                plugin,
                budget,
                self.clock,
                self.config.daemon.strikes,
                fallback=fallback,
                hold_last=entry.fallback == "last",
                background_init=True,
            )
        except (EdgedError, ValueError) as exc:
            plugin.close()
            self.problem(where, f"plugin '{name}' not loaded: {exc}", name)
            return None

    def player(self, playlist: str, info: DisplayInfo, budget_ms: float, where: str) -> PlaylistPlayer | None:
        """A player of ``playlist`` with every item's plugin loaded (those that do not load are skipped)."""
        pl = self.config.playlists[playlist]
        slots: dict[str, Supervised] = {}
        items: list[PlaylistItem] = []
        for i, item in enumerate(pl.items):
            key = item.plugin if not item.config else f"{item.plugin}#{i}"
            if key not in slots:
                slot = self.load(item.plugin, info, dict(item.config), budget_ms, f"{where} item {i}")
                if slot is None:
                    continue
                slot.name = key
                slots[key] = slot
            items.append(item.model_copy(update={"plugin": key}))
        if not items:
            self.problem(where, f"playlist '{playlist}' has no plugin that loads; the layer stays dark", None)
            return None
        return PlaylistPlayer(items, slots, loop=pl.loop)

    def sensors_for(self, display: str) -> list[SensorSection]:
        """The sensor sections that run on ``display``'s thread (those naming no display run on the first)."""
        first = self.config.displays[0].name if self.config.displays else None
        return [s for s in self.config.sensors if (s.display or first) == display]

    def sensor_tasks(self, sections: list[SensorSection]) -> list[SensorTask]:
        """The sensor plugins of ``sections`` that load, as tasks for a display's or the sensor thread."""
        tasks = []
        for s in sections:
            slot = self.load(s.plugin, None, {}, s.budget_ms, f"sensor '{s.plugin}'")
            if slot is not None:
                tasks.append(SensorTask(slot, s.interval_s))
        return tasks

    def display_key(self, section: DisplaySection) -> str:
        """Everything a display's state depends on, to tell on reload whether it must be rebuilt."""
        cfg = self.config
        used = {i.plugin for layer in section.layers for i in cfg.playlists[layer.playlist].items}
        used |= {s.plugin for s in self.sensors_for(section.name)}
        doc = {
            "section": section.model_dump(mode="json"),
            "playlists": {
                layer.playlist: cfg.playlists[layer.playlist].model_dump(mode="json") for layer in section.layers
            },
            "sensors": [s.model_dump(mode="json") for s in self.sensors_for(section.name)],
            "plugins": {
                n: [self.catalog[n].model_dump(mode="json"), self.prints.get(n)]
                for n in sorted(used & set(self.catalog))
            },
            "policy": cfg.policy.model_dump(mode="json"),
            "strikes": cfg.daemon.strikes.model_dump(mode="json"),
            "hardware": cfg.daemon.hardware,
        }
        return json.dumps(doc, sort_keys=True)

    def layer_info(self, rd: RunningDisplay, width: int, height: int, layers: int) -> tuple[DisplayInfo, float]:
        """What a plugin drawing a ``width``×``height`` layer of running display ``rd`` is told of its display, and
        the layer's share of the frame budget in ms (one of ``layers`` layers)."""
        fps = rd.runner.fps
        info = DisplayInfo(width, height, fps, rd.geometry.serpentine, rd.geometry.brightness)
        return info, 1000.0 / fps * rd.section.budget_fraction / max(1, layers)

    def build(self, section: DisplaySection, sink: Sink | None = None) -> RunningDisplay:
        """Display ``section`` with every layer's playlist and its sensor plugins loaded; its output is ``sink``
        (kept across a rebuild) or opened now (and its saved brightness and power restored). A layer that does not
        fit the display raises :class:`ConfigError`."""
        geo = self.hardware.geometry(section.name)
        fps = section.fps or self.hardware.fps(section.name)
        period_ms = 1000.0 / fps
        share = period_ms * section.budget_fraction / max(1, len(section.layers))
        layers: list[Layer] = []
        for j, layer in enumerate(section.layers):
            w = layer.width or max(0, geo.width - layer.x)
            h = layer.height or max(0, geo.height - layer.y)
            if w <= 0 or h <= 0 or layer.x + w > geo.width or layer.y + h > geo.height:
                i = next(k for k, d in enumerate(self.config.displays) if d.name == section.name)
                raise ConfigError(
                    f"displays.{i}.layers.{j}: layer '{layer.name}' at x={layer.x}, y={layer.y}, {w}x{h} does not "
                    f"fit display '{section.name}' ({geo.width}x{geo.height}, from hardware profile "
                    f"'{self.config.daemon.hardware}')"
                )
            info = DisplayInfo(w, h, fps, geo.serpentine, geo.brightness)
            where = f"display '{section.name}' layer '{layer.name}'"
            player = self.player(layer.playlist, info, share, where)
            if player is not None:
                layers.append(Layer(layer.name, player, layer.x, layer.y, w, h, layer.opacity))
        tasks = self.sensor_tasks(self.sensors_for(section.name))
        reopened = sink is None
        sink = sink if sink is not None else self.hardware.open_sink(section.name)
        runner = DisplayRunner(
            section.name, geo.width, geo.height, fps, layers, sink, self.clock, tasks, idle=self.idle
        )
        rd = RunningDisplay(section, runner, sink, geo, self.display_key(section))
        rd.playlists = {layer.name: layer.playlist for layer in section.layers}
        if reopened:
            restore_levels(self.config.state_dir, section.name, sink)
        return rd

    def memory_problem(self, built: list[RunningDisplay]) -> str | None:
        """Why every plugin of ``built`` at its memory budget would not fit the machine, or None."""
        caps: dict[str, float] = {}
        for rd in built:
            slots = [f"{layer.name}/{k}" for layer in rd.runner.layers for k in layer.player.slots]
            slots += [f"sensor/{t.slot.name}" for t in rd.runner.sensors]
            for key in slots:  # each may hold up to the device's budget (a manifest can only lower it)
                caps[f"{rd.section.name}/{key}"] = self.config.daemon.plugin_memory_mb
        return memory_problem(caps, machine_memory_mb())
