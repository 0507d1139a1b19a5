"""The daemon: displays driven by their own threads on fixed frame grids, plugins supervised under budgets,
live reload, a control interface, and a clean stop that blanks the LEDs.

Everything slow (reading config, compiling and instantiating plugins) happens off the frame threads: a reload or a
playlist switch builds the new display state on the caller's thread, then swaps it in between two frames.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..engine.calibration import Calibration, calibration
from ..engine.clock import Clock, RealClock
from ..engine.display import DisplayRunner, Layer, SensorRunner, SensorTask
from ..engine.playlist import PlaylistItem, PlaylistPlayer
from ..engine.supervisor import Budget, Supervised
from ..errors import ConfigError, EdgedError
from ..host.functions import DeviceIO, DisplayInfo, SharedValues
from ..host.plugin import DevicePlugin
from .config import (
    OVERLAY_LAYER,
    DaemonConfig,
    DisplaySection,
    LayerConfig,
    PlaylistConfig,
    PluginConfig,
    SensorSection,
)
from .memory import machine_memory_mb, memory_problem
from .plugins import discover, fingerprint

log = logging.getLogger("edged.daemon")

#: the displays' brightness and power as last set (``edged ctl brightness``, the web page, Home Assistant)
LEVELS_FILE = "levels.json"


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
class Problem:
    """Something the daemon refused (a plugin that would not load, a bad reload), kept for ``edged ctl``."""

    where: str
    message: str
    t: float = field(default_factory=time.time)


@dataclass
class RunningDisplay:
    section: DisplaySection
    runner: DisplayRunner
    sink: Sink
    geometry: DisplayGeometry
    key: str
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)
    #: the playlist each layer plays (the config's, until ``switch_playlist``)
    playlists: dict[str, str] = field(default_factory=dict)


class GcPacer:
    """Python's garbage collector, run in the frame threads' slack instead of whenever allocation counts say.

    A full collection of a daemon's heap takes tens of milliseconds (measured: a 50-60 ms stall every few seconds
    with faulty plugins failing on every frame), far more than a frame period. So once the displays run, automatic
    collection is off, everything loaded so far is frozen out of the collector's way, and :meth:`idle` (called after
    each frame is rendered ahead) collects the young generations, and now and then the old one, when the next
    deadline leaves room.
    """

    #: collect generation 1 every this many frames, generation 2 every this many
    GEN1_EVERY, GEN2_EVERY = 16, 1800

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._frames = 0
        self._active = False
        self.collections = [0, 0, 0]

    def take_over(self) -> None:
        self.settle()
        gc.disable()
        self._active = True

    def settle(self) -> None:
        """Move what exists now (plugins, modules, config) to the permanent generation."""
        gc.collect()
        gc.freeze()

    def freeze_new(self) -> None:
        """After a reload, while frames run: freeze what exists without a full collection (that would stall the
        untouched displays); the pacer collects the young generations as usual."""
        if self._active:
            gc.freeze()

    def release(self) -> None:
        """Give collection back to Python (on stop): unfreeze, so that what the daemon held can be collected."""
        if self._active:
            self._active = False
            gc.unfreeze()
            gc.enable()

    def idle(self, deadline: float) -> None:
        if not self._active or not self._lock.acquire(blocking=False):
            return  # another display thread is collecting
        try:
            self._frames += 1
            slack = deadline - self.clock.now()
            generation = 0
            if self._frames % self.GEN2_EVERY == 0 or gc.get_count()[2] > 10 * gc.get_threshold()[2]:
                generation = 2
            elif self._frames % self.GEN1_EVERY == 0:
                generation = 1
            if generation and slack < 0.004:
                generation = 0  # no room this frame: the young generation only
            if slack > 0.0005 or gc.get_count()[0] > 10 * gc.get_threshold()[0]:
                gc.collect(generation)
                self.collections[generation] += 1
        finally:
            self._lock.release()


class Daemon:
    """Runs a :class:`DaemonConfig` on some :class:`Hardware`.

    ``frames`` stops each display after that many frames. ``clock`` is injectable for tests. Use :meth:`start`,
    then :meth:`wait` (or :meth:`run` for both), and :meth:`stop` (idempotent) to blank and release everything.
    """

    def __init__(
        self,
        config: DaemonConfig,
        hardware: Hardware,
        *,
        config_path: Path | None = None,
        frames: int | None = None,
        clock: Clock | None = None,
        on_frame: Callable[[DisplayRunner], Any] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.hardware = hardware
        self.frames = frames
        self.clock = clock or RealClock()
        self.on_frame = on_frame
        self.values = SharedValues()
        self.displays: dict[str, RunningDisplay] = {}
        self.problems: list[Problem] = []
        self.started_at = time.monotonic()
        self._lock = threading.RLock()  # guards self.displays and reconfiguration
        self._stopped = threading.Event()
        self._fuel_per_ms: float | None = None
        self._calibration: Calibration | None = None
        self._catalog: dict[str, PluginConfig] = {}
        self._prints: dict[str, str] = {}
        self.reloads = 0
        self._t0 = 0.0
        self.gc = GcPacer(self.clock)
        #: sensor plugins of a device without displays, on a thread of their own
        self.sensor_runner: SensorRunner | None = None
        self._sensor_stop = threading.Event()
        self._sensor_thread: threading.Thread | None = None
        self._sensor_done = threading.Event()
        #: plugins installed over MQTT (name -> entry), overriding plugins_dir, kept across reloads
        self._deployed: dict[str, PluginConfig] = {}
        #: a playlist the marketplace set for this device (plugin names), played where ``[deploy]`` puts plugins
        self._remote_playlist: list[str] | None = None
        #: the config as read from the file, before deployed plugins are overlaid
        self._base_config = config
        #: the MQTT connection's state (``edged run`` sets it when the config has ``[mqtt]``): in stats and health
        self.mqtt_state: Callable[[], dict[str, Any]] | None = None

    # --- building --------------------------------------------------------------------------------------------

    def _problem(self, where: str, message: str) -> None:
        log.error("%s: %s", where, message, extra={"where": where})
        self.problems.append(Problem(where, message))
        del self.problems[:-100]

    def _rate(self) -> float | None:
        if self._fuel_per_ms is None and self.config.daemon.calibrate_fuel:
            self._calibration = calibration()  # this machine's, cached across runs: budgets mean the same each time
            self._fuel_per_ms = self._calibration.fuel_per_ms
        return self._fuel_per_ms

    def _load(
        self, name: str, info: DisplayInfo | None, extra: dict[str, str], budget_ms: float, where: str
    ) -> Supervised | None:
        entry = self._catalog.get(name)
        if entry is None:
            self._problem(where, f"unknown plugin '{name}' (known: {sorted(self._catalog)})")
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
            self._problem(where, f"plugin '{name}' not loaded: {exc}")
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
            self._problem(where, f"plugin '{name}' not loaded: {exc}")
            return None

    def _player(self, playlist: str, info: DisplayInfo, budget_ms: float, where: str) -> PlaylistPlayer | None:
        pl = self.config.playlists[playlist]
        slots: dict[str, Supervised] = {}
        items: list[PlaylistItem] = []
        for i, item in enumerate(pl.items):
            key = item.plugin if not item.config else f"{item.plugin}#{i}"
            if key not in slots:
                slot = self._load(item.plugin, info, dict(item.config), budget_ms, f"{where} item {i}")
                if slot is None:
                    continue
                slot.name = key
                slots[key] = slot
            items.append(item.model_copy(update={"plugin": key}))
        if not items:
            self._problem(where, f"playlist '{playlist}' has no plugin that loads; the layer stays dark")
            return None
        return PlaylistPlayer(items, slots, loop=pl.loop)

    def _display_key(self, section: DisplaySection) -> str:
        """Everything a display's state depends on, to tell on reload whether it must be rebuilt."""
        used = {i.plugin for layer in section.layers for i in self.config.playlists[layer.playlist].items}
        used |= {s.plugin for s in self._sensors_for(section.name)}
        doc = {
            "section": section.model_dump(mode="json"),
            "playlists": {
                layer.playlist: self.config.playlists[layer.playlist].model_dump(mode="json")
                for layer in section.layers
            },
            "sensors": [s.model_dump(mode="json") for s in self._sensors_for(section.name)],
            "plugins": {
                n: [self._catalog[n].model_dump(mode="json"), self._prints.get(n)]
                for n in sorted(used & set(self._catalog))
            },
            "policy": self.config.policy.model_dump(mode="json"),
            "strikes": self.config.daemon.strikes.model_dump(mode="json"),
            "hardware": self.config.daemon.hardware,
        }
        return json.dumps(doc, sort_keys=True)

    def _sensors_for(self, display: str) -> list[SensorSection]:
        first = self.config.displays[0].name if self.config.displays else None
        return [s for s in self.config.sensors if (s.display or first) == display]

    def _build(self, section: DisplaySection, sink: Sink | None = None) -> RunningDisplay:
        geo = self.hardware.geometry(section.name)
        fps = section.fps or self.hardware.fps(section.name)
        period_ms = 1000.0 / fps
        sensors = self._sensors_for(section.name)
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
            player = self._player(layer.playlist, info, share, where)
            if player is not None:
                layers.append(Layer(layer.name, player, layer.x, layer.y, w, h, layer.opacity))
        tasks = []
        for s in sensors:
            slot = self._load(s.plugin, None, {}, s.budget_ms, f"sensor '{s.plugin}'")
            if slot is not None:
                tasks.append(SensorTask(slot, s.interval_s))
        reopened = sink is None
        sink = sink if sink is not None else self.hardware.open_sink(section.name)
        runner = DisplayRunner(
            section.name, geo.width, geo.height, fps, layers, sink, self.clock, tasks, idle=self.gc.idle
        )
        rd = RunningDisplay(section, runner, sink, geo, self._display_key(section))
        rd.playlists = {layer.name: layer.playlist for layer in section.layers}
        if reopened:
            self._restore_levels(rd)
        return rd

    def _reserve_led_pins(self) -> None:
        """The LED data pins of the hardware profile are reserved in the device policy, whatever it says."""
        reserved = getattr(self.hardware, "reserved_pins", None)
        pins = set(reserved()) if callable(reserved) else set()
        if pins - set(self.config.policy.reserved_pins):
            policy = self.config.policy.model_copy(
                update={"reserved_pins": sorted(pins | set(self.config.policy.reserved_pins))}
            )
            self.config = self.config.model_copy(update={"policy": policy})

    def _refresh_catalog(self) -> None:
        self._catalog = {**discover(self.config), **self._deployed}
        self._prints = {name: fingerprint(entry.path) for name, entry in self._catalog.items()}

    # --- running ---------------------------------------------------------------------------------------------

    def _thread(self, rd: RunningDisplay) -> None:
        try:
            rd.runner.run(rd.stop, self.frames, self._after_frame)
        except Exception:  # a bug in edged itself: keep the other displays running, and say so loudly
            log.exception("display thread crashed", extra={"display": rd.section.name})
            self._problem(f"display '{rd.section.name}'", "display thread crashed; see the log")
        finally:
            rd.done.set()

    def _after_frame(self, runner: DisplayRunner) -> None:
        first = self.config.displays[0].name if self.config.displays else None
        if runner.name == first:  # scripted inputs follow the first display's frame clock
            self.hardware.advance(self.clock.now() - self._t0)
        if self.on_frame is not None:
            self.on_frame(runner)

    def _launch(self, rd: RunningDisplay) -> None:
        rd.thread = threading.Thread(target=self._thread, args=(rd,), name=f"edged-display-{rd.section.name}")
        rd.thread.daemon = True
        rd.thread.start()

    def start(self) -> None:
        """Load every plugin, open every display and start their frame threads."""
        sys.setswitchinterval(self.config.daemon.gil_switch_ms / 1000.0)
        with self._lock:
            self._t0 = self.clock.now()
            self._reserve_led_pins()
            self._refresh_catalog()
            built = [self._build(section) for section in self.config.displays]
            self._check_memory(built)
            for rd in built:
                self.displays[rd.section.name] = rd
            if self.displays:
                self.gc.take_over()  # before the frame threads start: the full collection it does is slow
            for rd in built:
                self._launch(rd)
            if not self.config.displays and self.config.sensors:
                self._start_sensor_runner()
        log.info("edged running", extra={"displays": list(self.displays)})

    def _check_memory(self, built: list[RunningDisplay]) -> None:
        """Refuse to start (closing what was built) when every plugin at its memory budget would not fit the machine."""
        caps: dict[str, float] = {}
        for rd in built:
            slots = [(f"{layer.name}/{k}", s) for layer in rd.runner.layers for k, s in layer.player.slots.items()]
            slots += [(f"sensor/{t.slot.name}", t.slot) for t in rd.runner.sensors]
            for key, _slot in slots:  # each may hold up to the device's budget (a manifest can only lower it)
                caps[f"{rd.section.name}/{key}"] = self.config.daemon.plugin_memory_mb
        problem = memory_problem(caps, machine_memory_mb())
        if problem is not None:
            for rd in built:
                self._stop_display(rd)
            raise ConfigError(problem)

    def _start_sensor_runner(self) -> None:
        tasks = []
        for s in self.config.sensors:
            slot = self._load(s.plugin, None, {}, s.budget_ms, f"sensor '{s.plugin}'")
            if slot is not None:
                tasks.append(SensorTask(slot, s.interval_s))
        self.sensor_runner = SensorRunner(tasks, self.clock)
        self._sensor_stop.clear()
        self._sensor_done.clear()

        def run() -> None:
            try:
                assert self.sensor_runner is not None
                self.sensor_runner.run(
                    self._sensor_stop, self.frames, lambda now: self.hardware.advance(now - self._t0)
                )
            except Exception:
                log.exception("sensor thread crashed")
                self._problem("sensors", "sensor thread crashed; see the log")
            finally:
                self._sensor_done.set()

        self._sensor_thread = threading.Thread(target=run, name="edged-sensors", daemon=True)
        self._sensor_thread.start()

    def _stop_sensor_runner(self) -> None:
        if self.sensor_runner is None:
            return
        self._sensor_stop.set()
        if self._sensor_thread is not None:
            self._sensor_thread.join(timeout=5)
        self.sensor_runner.close()
        self.sensor_runner = None

    def wait(self, stop: threading.Event | None = None, poll: Callable[[], None] | None = None) -> None:
        """Block until every display finished its ``frames`` or ``stop`` is set; ``poll`` runs every 50 ms on this
        thread (the CLI handles signals there)."""
        while not self._stopped.is_set():
            if stop is not None and stop.is_set():
                break
            with self._lock:
                running = list(self.displays.values())
            if self.frames is not None and running and all(rd.done.is_set() for rd in running):
                break
            if self.frames is not None and not running and (self._sensor_done.is_set() or not self.config.sensors):
                break  # a device with sensors only: --frames counts each sensor's ticks; with nothing at all, done
            if poll is not None:
                poll()
            time.sleep(0.05)

    def _stop_display(self, rd: RunningDisplay, blank: bool = True, close_sink: bool = True) -> None:
        rd.stop.set()
        if rd.thread is not None and rd.thread is not threading.current_thread():
            rd.thread.join(timeout=5)
        if blank:
            try:
                rd.sink.blank()
            except Exception:
                log.exception("could not blank display", extra={"display": rd.section.name})
        rd.runner.close()
        if close_sink:
            rd.sink.close()

    def stop(self) -> None:
        """Stop every display, blank the LEDs, release plugins and hardware. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.gc.release()
        with self._lock:
            for rd in self.displays.values():
                self._stop_display(rd)
            self._stop_sensor_runner()
        self.hardware.close()
        log.info("edged stopped")

    # --- live control ----------------------------------------------------------------------------------------

    def reload(self, config: DaemonConfig | None = None) -> dict[str, list[str]]:
        """Apply a new config (re-read from ``config_path`` when None). Displays whose config, playlists and
        plugins are unchanged keep running untouched; changed ones are rebuilt off their frame thread and swapped
        in; a config that does not load leaves everything as it was."""
        if config is None:
            from .config import load_config

            try:
                config = load_config(self.config_path)
            except ConfigError as exc:
                self._problem("reload", str(exc))
                return {"error": [str(exc)]}
        report: dict[str, list[str]] = {"kept": [], "rebuilt": [], "added": [], "removed": []}
        with self._lock:
            self._base_config = config
            config = self._overlay(config)
            old_config = self.config
            self.config = config
            self._reserve_led_pins()
            self._refresh_catalog()
            new_names = {d.name for d in config.displays}
            for name in [n for n in self.displays if n not in new_names]:
                self._stop_display(self.displays.pop(name))
                report["removed"].append(name)
            for section in config.displays:
                current = self.displays.get(section.name)
                key = self._display_key(section)
                if current is not None and current.key == key:
                    report["kept"].append(section.name)
                    continue
                hardware_same = old_config.daemon.hardware == config.daemon.hardware
                try:
                    rd = self._build(section, sink=current.sink if current and hardware_same else None)
                except EdgedError as exc:
                    self._problem(f"reload display '{section.name}'", str(exc))
                    continue
                if current is not None:
                    self._stop_display(current, blank=False, close_sink=rd.sink is not current.sink)
                    report["rebuilt"].append(section.name)
                else:
                    report["added"].append(section.name)
                self.displays[section.name] = rd
                self._launch(rd)
            if not config.displays and config.sensors:  # a sensors-only device: their thread restarts with the config
                self._stop_sensor_runner()
                self._start_sensor_runner()
            else:
                self._stop_sensor_runner()
            self.reloads += 1
            self.gc.freeze_new()  # what the reload loaded is long-lived: out of the collector's way
        log.info("reloaded", extra={"report": report})
        return report

    def switch_playlist(self, display: str, playlist: str, layer: str | None = None) -> str:
        """Play ``playlist`` on a layer of ``display`` (the first layer by default), starting now."""
        with self._lock:
            rd = self._display(display)
            if playlist not in self.config.playlists:
                raise KeyError(f"unknown playlist '{playlist}' (known: {sorted(self.config.playlists)})")
            idx = self._layer_index(rd, layer)
            target = rd.runner.layers[idx]
            fps = rd.runner.fps
            info = DisplayInfo(target.width, target.height, fps, rd.geometry.serpentine, rd.geometry.brightness)
            share = 1000.0 / fps * rd.section.budget_fraction / max(1, len(rd.runner.layers))
            player = self._player(playlist, info, share, f"display '{display}' layer '{target.name}'")
            if player is None:
                raise ValueError(f"no plugin of playlist '{playlist}' loads")
            with rd.runner.lock:
                old = target.player
                target.player = player
            for slot in old.slots.values():
                slot.close()
            rd.playlists[target.name] = playlist
            rd.key = ""  # no longer what the config says: the next reload rebuilds it
        return target.name

    def next_item(self, display: str, layer: str | None = None) -> str:
        """Cut to the next item of a layer's playlist."""
        with self._lock:
            rd = self._display(display)
            target = rd.runner.layers[self._layer_index(rd, layer)]
            with rd.runner.lock:
                p = target.player
                p.jump(p.index + 1, self.clock.now())
                item = p.current
        return item.plugin if item else ""

    def play(self, display: str, plugin: str, layer: str | None = None) -> str:
        """Cut to the first item of a layer's playlist that plays ``plugin`` (Home Assistant's light effect)."""
        with self._lock:
            rd = self._display(display)
            target = rd.runner.layers[self._layer_index(rd, layer)]
            with rd.runner.lock:
                p = target.player
                names = [item.plugin for item in p.items]
                if plugin not in names:
                    raise KeyError(
                        f"plugin '{plugin}' is not in the playlist of layer '{target.name}' (it has: {names})"
                    )
                p.jump(names.index(plugin), self.clock.now())
        return plugin

    def led_output(self, display: str) -> Any:
        """The LED output (:class:`~edged.hardware.output.LedOutput`: pipeline and backend) behind ``display``, or
        None for a sink that is not one."""
        rd = self._display(display)
        out = getattr(rd.sink, "output", rd.sink)
        return out if hasattr(out, "pipeline") else None

    def _dimmable(self, display: str) -> Any:
        out = self.led_output(display)
        if out is None:
            raise ValueError(f"display '{display}' has no LED output to switch or dim")
        return out.pipeline

    def set_power(self, display: str, on: bool) -> dict[str, Any]:
        """Switch a display's LEDs off (black, the plugins keep running) or back on, from the next frame; kept
        across restarts (``<state_dir>/levels.json``)."""
        with self._lock:
            self._dimmable(display).set_level(power=on)
            self._save_levels()
            return self.display_state(display)

    def set_brightness(self, display: str, brightness: int) -> dict[str, Any]:
        """Set a display's brightness (0-255, applied before gamma, as the profile's ``brightness``); kept across
        restarts."""
        with self._lock:
            self._dimmable(display).set_level(brightness=brightness)
            self._save_levels()
            return self.display_state(display)

    def _save_levels(self) -> None:
        levels = {}
        for name in self.displays:
            out = self.led_output(name)
            if out is not None:
                levels[name] = {"brightness": out.pipeline.brightness, "power": out.pipeline.power}
        try:
            from ..deploy.trust import atomic_write

            atomic_write(self.config.state_dir / LEVELS_FILE, json.dumps(levels).encode())
        except OSError as exc:
            log.warning("could not save the displays' brightness and power: %s", exc)

    def _restore_levels(self, rd: RunningDisplay) -> None:
        """A display's brightness and power as they were set before the last stop."""
        try:
            doc = json.loads((self.config.state_dir / LEVELS_FILE).read_text()).get(rd.section.name)
        except (OSError, ValueError, AttributeError):
            return
        out = getattr(rd.sink, "output", rd.sink)
        if not isinstance(doc, dict) or not hasattr(out, "pipeline"):
            return
        brightness, power = doc.get("brightness"), doc.get("power")
        try:
            out.pipeline.set_level(
                brightness if isinstance(brightness, int) else None, power if isinstance(power, bool) else None
            )
        except ValueError:
            log.warning("ignoring a bad saved brightness", extra={"display": rd.section.name})

    def display_state(self, display: str) -> dict[str, Any]:
        """A display as the web page and Home Assistant show it: size, rate, power, brightness, layers and what
        they play."""
        with self._lock:
            rd = self._display(display)
            out = self.led_output(display)
            pipeline = out.pipeline if out is not None else None
            layers = []
            for layer in rd.runner.layers:
                current = layer.player.current
                layers.append(
                    {
                        "name": layer.name,
                        "playlist": rd.playlists.get(layer.name),
                        "playing": current.plugin if current else None,
                        "items": [item.plugin for item in layer.player.items],
                        "x": layer.x,
                        "y": layer.y,
                        "width": layer.width,
                        "height": layer.height,
                    }
                )
            return {
                "name": display,
                "width": rd.runner.width,
                "height": rd.runner.height,
                "fps": rd.runner.fps,
                "power": pipeline.power if pipeline is not None else True,
                "brightness": pipeline.brightness if pipeline is not None else rd.geometry.brightness,
                "layers": layers,
            }

    def sensor_values(self) -> dict[str, dict[str, str]]:
        """The values each running sensor plugin published (plugin -> key -> value as text; bytes that are not
        UTF-8 text as hex)."""
        with self._lock:
            slots = [t.slot for rd in self.displays.values() for t in rd.runner.sensors]
            if self.sensor_runner is not None:
                slots += [t.slot for t in self.sensor_runner.tasks]
        out: dict[str, dict[str, str]] = {}
        for slot in slots:
            keys = out.setdefault(slot.name, {})
            for key in slot.plugin.grant.publish:
                raw = self.values.get(key)
                if raw is None:
                    continue
                try:
                    keys[key] = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    keys[key] = raw.hex()
        return out

    def _display(self, name: str) -> RunningDisplay:
        if name not in self.displays:
            raise KeyError(f"unknown display '{name}' (known: {sorted(self.displays)})")
        return self.displays[name]

    @staticmethod
    def _layer_index(rd: RunningDisplay, layer: str | None) -> int:
        if not rd.runner.layers:
            raise ValueError(f"display '{rd.section.name}' has no running layers")
        if layer is None:
            return 0
        for i, candidate in enumerate(rd.runner.layers):
            if candidate.name == layer:
                return i
        raise KeyError(f"unknown layer '{layer}' (known: {[layer.name for layer in rd.runner.layers]})")

    # --- deployed plugins (the MQTT agent's target) ------------------------------------------------------------

    @staticmethod
    def _deploy_display(config: DaemonConfig) -> int | None:
        """The index of the display deployed plugins play on (``[deploy] display``, else the first), or None."""
        if not config.displays:
            return None
        want = config.deploy.display
        return next((i for i, d in enumerate(config.displays) if d.name == want), 0) if want else 0

    def _overlay(self, config: DaemonConfig) -> DaemonConfig:
        """``config`` with the deployed plugins that no playlist or sensor names, placed as ``[deploy]`` says (see
        :class:`~edged.daemon.config.DeploySection`): animations on the deploy display's layer (replacing its
        playlist, appended to it, or on a layer of their own on top), sensor plugins as its sensors. The
        marketplace's playlist for this device plays in the same place."""
        place = config.deploy
        playlists = dict(config.playlists)
        sensors = list(config.sensors)
        displays = list(config.displays)
        t = self._deploy_display(config)
        remote: list[PlaylistItem] | None = None
        if self._remote_playlist and t is not None:
            remote = [PlaylistItem(plugin=n, transition="crossfade") for n in self._remote_playlist]
        named = {i.plugin for pl in playlists.values() for i in pl.items} | {s.plugin for s in config.sensors}
        named |= {i.plugin for i in remote or []}
        adhoc = [n for n in self._deployed if n not in named]
        drawing: list[str] = []
        for name in adhoc:
            if _kind(self._deployed[name].path) == "sensor":
                sensors.append(SensorSection(plugin=name, display=displays[t].name if t is not None else None))
            elif t is None:
                self._problem(f"deployed plugin '{name}'", "draws frames, but this device has no display")
            elif remote is None:  # the marketplace said what plays: installed extras wait until it names them
                drawing.append(name)
        if remote is None and not drawing:
            return config if sensors == config.sensors else config.model_copy(update={"sensors": sensors})
        assert t is not None
        section = displays[t]
        pl_name = "remote" if remote is not None else "deployed"
        if remote is not None:
            items = remote
        else:
            each = None if len(drawing) == 1 and place.mode != "append" else place.duration_s
            items = [PlaylistItem(plugin=n, duration_s=each) for n in drawing]
        if place.mode == "overlay":
            playlists[pl_name] = PlaylistConfig(items=items)
            layer = LayerConfig(
                name=OVERLAY_LAYER,
                playlist=pl_name,
                x=place.x,
                y=place.y,
                width=place.width,
                height=place.height,
                opacity=place.opacity,
            )
            displays[t] = section.model_copy(update={"layers": [*section.layers, layer]})
        else:
            j = next((k for k, layer in enumerate(section.layers) if layer.name == place.layer), 0)
            base = section.layers[j]
            if place.mode == "append" and remote is None:
                own = [
                    i if i.duration_s else i.model_copy(update={"duration_s": place.duration_s})
                    for i in config.playlists[base.playlist].items
                ]
                items = [*own, *items]
            else:
                log.warning(
                    "deployed plugins replace the configured playlist until they are removed ([deploy] mode = "
                    '"append" or "overlay" keeps it playing)',
                    extra={
                        "display": section.name,
                        "layer": base.name,
                        "playlist": base.playlist,
                        "plugins": [i.plugin for i in items],
                    },
                )
            playlists[pl_name] = PlaylistConfig(items=items)
            layers = list(section.layers)
            layers[j] = base.model_copy(update={"playlist": pl_name})
            displays[t] = section.model_copy(update={"layers": layers})
        return config.model_copy(update={"playlists": playlists, "sensors": sensors, "displays": displays})

    def deploy(self, name: str, entry: PluginConfig) -> dict[str, list[str]]:
        """Run ``entry`` as plugin ``name`` from now on (a new version replaces the old one): every display that
        uses it is rebuilt, so its statistics start over for the health check."""
        with self._lock:
            self._deployed[name] = entry
            self._prints.pop(name, None)
            report = self._rebuild_using(name)
        return report

    def undeploy(self, name: str) -> dict[str, list[str]]:
        """Stop running the deployed plugin ``name``; a plugin of that name in ``plugins_dir`` comes back."""
        with self._lock:
            if self._deployed.pop(name, None) is None:
                return {"kept": list(self.displays), "rebuilt": [], "added": [], "removed": []}
            return self._rebuild_using(name)

    def _rebuild_using(self, name: str) -> dict[str, list[str]]:
        # a plugin whose file did not change keeps its fingerprint, so force the displays that use it to rebuild
        for rd in self.displays.values():
            if name in rd.key:
                rd.key = ""
        return self.reload(self._base_config)

    def identify(self, seconds: float = 5.0) -> None:
        """Blink a white border on every display for ``seconds``: to find this device among many."""
        until = self.clock.now() + seconds
        with self._lock:
            for rd in self.displays.values():
                rd.runner.identify_until = until

    def set_remote_playlist(self, items: list[str] | None) -> dict[str, list[str]]:
        """Play ``items`` (plugin names) where ``[deploy]`` puts deployed plugins, or go back to the config."""
        with self._lock:
            self._remote_playlist = list(items) if items else None
            return self.reload(self._base_config)

    def probe_slot(self, name: str) -> tuple[Supervised, float, bool] | None:
        """A fresh supervised instance of plugin ``name`` as the deploy display would run it (its size, rate and a
        layer's share of the budget) or as a sensor plugin: (slot, period in seconds, is a sensor)."""
        entry = self._catalog.get(name)
        if entry is None:
            return None
        if _kind(entry.path) == "sensor":
            slot = self._load(name, None, {}, 5.0, f"health probe of '{name}'")
            return (slot, 0.5, True) if slot is not None else None
        t = self._deploy_display(self.config)
        if t is None or self.config.displays[t].name not in self.displays:
            return None
        rd = self.displays[self.config.displays[t].name]
        fps = rd.runner.fps
        info = DisplayInfo(rd.geometry.width, rd.geometry.height, fps, rd.geometry.serpentine, rd.geometry.brightness)
        share = 1000.0 / fps * rd.section.budget_fraction / max(1, len(rd.section.layers))
        slot = self._load(name, info, {}, share, f"health probe of '{name}'")
        return (slot, 1.0 / fps, False) if slot is not None else None

    def plugin_health(self, name: str) -> tuple[int, int, str | None, bool]:
        """(frames or ticks run, strikes, last error, running) of every slot of plugin ``name`` since it started."""
        frames = strikes = 0
        last_error: str | None = None
        running = False
        with self._lock:
            slots = [
                slot
                for rd in self.displays.values()
                for layer in rd.runner.layers
                for key, slot in layer.player.slots.items()
                if key == name or key.startswith(name + "#")
            ]
            slots += [t.slot for rd in self.displays.values() for t in rd.runner.sensors if t.slot.name == name]
            if self.sensor_runner is not None:
                slots += [t.slot for t in self.sensor_runner.tasks if t.slot.name == name]
        for slot in slots:
            frames += slot.stats.calls - slot.stats.failures
            strikes += slot.stats.strikes
            last_error = slot.stats.last_error or last_error
            running = running or not slot.quarantined
        return frames, strikes, last_error, running

    # --- reporting -------------------------------------------------------------------------------------------

    def list_plugins(self) -> list[dict[str, Any]]:
        """Every loaded plugin slot: where it runs, its state and its current stats."""
        out: list[dict[str, Any]] = []
        with self._lock:
            for rd in self.displays.values():
                for layer in rd.runner.layers:
                    current = layer.player.current
                    for key, slot in layer.player.slots.items():
                        out.append(
                            {
                                "display": rd.section.name,
                                "layer": layer.name,
                                "plugin": key,
                                "version": slot.plugin.version,
                                "kind": slot.plugin.kind,
                                "playing": current is not None and current.plugin == key,
                                "quarantined": slot.quarantined,
                                "strikes": slot.stats.strikes,
                            }
                        )
                for task in rd.runner.sensors:
                    out.append(
                        {
                            "display": rd.section.name,
                            "layer": None,
                            "plugin": task.slot.name,
                            "version": task.slot.plugin.version,
                            "kind": task.slot.plugin.kind,
                            "playing": True,
                            "quarantined": task.slot.quarantined,
                            "strikes": task.slot.stats.strikes,
                        }
                    )
            out.extend(self._sensor_rows())
        return out

    def _sensor_rows(self) -> list[dict[str, Any]]:
        tasks = self.sensor_runner.tasks if self.sensor_runner is not None else []
        return [
            {
                "display": None,
                "layer": None,
                "plugin": t.slot.name,
                "version": t.slot.plugin.version,
                "kind": t.slot.plugin.kind,
                "playing": True,
                "quarantined": t.slot.quarantined,
                "strikes": t.slot.stats.strikes,
            }
            for t in tasks
        ]

    def health(self) -> dict[str, Any]:
        """Readiness: ``ready`` is False, with the ``reasons``, while a display's frame thread is not running, or
        while the MQTT connection (with ``[mqtt]``) is not ``connected``. ``edged ctl health`` exits 1 then."""
        reasons: list[str] = []
        with self._lock:
            for name, rd in self.displays.items():
                if rd.done.is_set() and self.frames is None:
                    reasons.append(f"display '{name}' is not running (see `edged ctl problems`)")
        mqtt = self.mqtt_state() if self.mqtt_state is not None else None
        if mqtt is not None and mqtt.get("state") != "connected":
            why = f": {mqtt['reason']}" if mqtt.get("reason") else ""
            reasons.append(f"MQTT {mqtt.get('state')} ({mqtt.get('broker')}){why}")
        return {"ready": not reasons, "reasons": reasons, "mqtt": mqtt}

    def stats(self) -> dict[str, Any]:
        """Frames rendered and dropped, frame intervals p50/p99/max, and each plugin's budget use, strikes and
        quarantines (the ``--stats`` file and ``edged ctl stats``)."""
        displays: dict[str, Any] = {}
        plugins: dict[str, Any] = {}
        with self._lock:
            for name, rd in self.displays.items():
                st = rd.runner.stats
                displays[name] = {
                    "fps": rd.runner.fps,
                    "frames": st.frames,
                    "dropped": st.dropped,
                    "interval": st.intervals.summary(),
                    "render_ms_max": st.render_ms_max,
                    "layers": {
                        layer.name: (layer.player.current.plugin if layer.player.current else None)
                        for layer in rd.runner.layers
                    },
                }
                for layer in rd.runner.layers:
                    for key, slot in layer.player.slots.items():
                        plugins[f"{name}/{layer.name}/{key}"] = slot.stats.as_dict(slot.budget)
                for task in rd.runner.sensors:
                    plugins[f"{name}/sensor/{task.slot.name}"] = {
                        **task.slot.stats.as_dict(task.slot.budget),
                        "ticks": task.ticks,
                    }
            if self.sensor_runner is not None:
                for task in self.sensor_runner.tasks:
                    plugins[f"sensors/{task.slot.name}"] = {
                        **task.slot.stats.as_dict(task.slot.budget),
                        "ticks": task.ticks,
                    }
        return {
            "uptime_s": time.monotonic() - self.started_at,
            "fuel_per_ms": self._fuel_per_ms,
            "calibration": self._calibration.as_dict() if self._calibration is not None else None,
            "reloads": self.reloads,
            "displays": displays,
            "plugins": plugins,
            "problems": [{"where": p.where, "message": p.message, "t": p.t} for p in self.problems],
            "mqtt": self.mqtt_state() if self.mqtt_state is not None else None,
        }


def _kind(path: Path) -> str:
    """The ``edged.kind`` a plugin's manifest declares (``animation`` when it declares none or is bare wasm)."""
    if path.suffix != ".json":
        return "animation"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return "animation"
    edged = doc.get("edged") if isinstance(doc, dict) else None
    kind = edged.get("kind") if isinstance(edged, dict) else None
    return kind if isinstance(kind, str) else "animation"
