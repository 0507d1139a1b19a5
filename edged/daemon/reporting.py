"""What the daemon reports: its problems, and one row per plugin slot it runs, read by every consumer (``edged ctl
plugins``/``stats``, the deploy health check, the web page, Home Assistant, ``/metrics``, the systemd status)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine.display import SensorRunner, SensorTask
from ..engine.supervisor import Supervised

if TYPE_CHECKING:
    from .assembly import RunningDisplay


@dataclass
class Problem:
    """Something the daemon refused (a plugin that would not load, a bad reload), kept for ``edged ctl``.

    ``plugin`` names the plugin the problem is about, when it is about one: callers match on it, never on the
    message's text."""

    where: str
    message: str
    t: float = field(default_factory=time.time)
    plugin: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"where": self.where, "message": self.message, "t": self.t}


@dataclass(frozen=True)
class PluginRow:
    """One running plugin slot: where it runs and its supervised instance.

    ``display`` is None for the sensor thread of a device without displays; ``layer`` is None for a sensor plugin.
    ``plugin`` is the slot's name: the plugin's, or ``NAME#i`` for a playlist item with its own config."""

    display: str | None
    layer: str | None
    plugin: str
    slot: Supervised
    playing: bool
    #: a sensor's ticks run (None for a layer's slot)
    ticks: int | None = None

    @property
    def name(self) -> str:
        """The plugin's name (a slot ``NAME#i`` is plugin ``NAME``)."""
        return self.plugin.split("#")[0]

    @property
    def key(self) -> str:
        """The row's key in :meth:`Daemon.stats`' ``plugins``: ``display/layer/plugin``, ``display/sensor/plugin``
        or ``sensors/plugin``."""
        if self.display is None:
            return f"sensors/{self.plugin}"
        return f"{self.display}/{self.layer if self.layer is not None else 'sensor'}/{self.plugin}"

    def summary(self) -> dict[str, Any]:
        """The row as ``edged ctl plugins`` lists it."""
        return {
            "display": self.display,
            "layer": self.layer,
            "plugin": self.plugin,
            "version": self.slot.plugin.version,
            "kind": self.slot.plugin.kind,
            "playing": self.playing,
            "quarantined": self.slot.quarantined,
            "strikes": self.slot.stats.strikes,
        }

    def stats(self) -> dict[str, Any]:
        """Budget use, strikes and quarantines (and a sensor's ticks)."""
        doc = self.slot.stats.as_dict(self.slot.budget)
        return doc if self.ticks is None else {**doc, "ticks": self.ticks}


def _sensor_row(display: str | None, task: SensorTask) -> PluginRow:
    return PluginRow(display, None, task.slot.name, task.slot, True, task.ticks)


def plugin_rows(displays: Iterable[RunningDisplay], sensors: SensorRunner | None) -> Iterator[PluginRow]:
    """Every plugin slot of ``displays`` (each layer's playlist slots, then the display's sensor plugins), then
    those of the sensor thread ``sensors``. Lists are copied as they are read, so a caller that does not hold the
    daemon's lock (a metrics scrape) sees a reload's before or after, never an error."""
    for rd in list(displays):
        name = rd.section.name
        for layer in list(rd.runner.layers):
            current = layer.player.current
            for key, slot in list(layer.player.slots.items()):
                yield PluginRow(name, layer.name, key, slot, current is not None and current.plugin == key)
        for task in list(rd.runner.sensors):
            yield _sensor_row(name, task)
    if sensors is not None:
        for task in list(sensors.tasks):
            yield _sensor_row(None, task)
