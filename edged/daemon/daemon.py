"""The daemon: displays driven by their own threads on fixed frame grids, plugins supervised under budgets,
live reload, a control interface, and a clean stop that blanks the LEDs.

Everything slow (reading config, compiling and instantiating plugins) happens off the frame threads: a reload or a
playlist switch builds the new display state on the caller's thread, then swaps it in between two frames. The parts:
:mod:`.assembly` builds displays from the config, :mod:`.overlay` places deployed plugins, :mod:`.gc_pacer` paces
the collector, :mod:`.reporting` lists what runs; this module runs, reloads and controls them.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.clock import Clock, RealClock
from ..engine.display import DisplayRunner, SensorRunner
from ..engine.supervisor import Supervised
from ..errors import ConfigError, EdgedError
from ..host.functions import SharedValues
from ..host.plugin import DevicePlugin, Kind
from .assembly import DisplayAssembler, DisplayGeometry, Hardware, RunningDisplay, Sink
from .config import DaemonConfig, PluginConfig
from .gc_pacer import GcPacer
from .levels import LEVELS_FILE, led_output, save_levels
from .overlay import DeployedPlugin, deploy_display, overlay
from .reporting import PluginRow, Problem, plugin_rows

log = logging.getLogger("edged.daemon")

__all__ = [
    "LEVELS_FILE",
    "Activation",
    "Daemon",
    "DisplayGeometry",
    "GcPacer",
    "Hardware",
    "PluginRow",
    "Problem",
    "RunningDisplay",
    "Sink",
]


@dataclass(frozen=True)
class Activation:
    """What :meth:`Daemon.deploy` did: the reload report, and the problems of the deployed plugin itself (it did
    not load, as a whole or in some slot). Problems of other plugins are never counted as its failures."""

    report: dict[str, list[str]]
    failures: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


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
        #: True once :meth:`start` began (then :meth:`stop` releases the hardware, even after a failed start)
        self.started = False
        self.reloads = 0
        self._t0 = 0.0
        self.gc = GcPacer(self.clock)
        self.assembler = DisplayAssembler(config, hardware, self.values, self.clock, self._problem, self.gc.idle)
        #: sensor plugins of a device without displays, on a thread of their own
        self.sensor_runner: SensorRunner | None = None
        self._sensor_stop = threading.Event()
        self._sensor_thread: threading.Thread | None = None
        self._sensor_done = threading.Event()
        #: plugins installed over MQTT (name -> entry and kind), overriding plugins_dir, kept across reloads
        self._deployed: dict[str, DeployedPlugin] = {}
        #: a playlist the marketplace set for this device (plugin names), played where ``[deploy]`` puts plugins
        self._remote_playlist: list[str] | None = None
        #: the config as read from the file, before deployed plugins are overlaid
        self._base_config = config
        #: the problems of one plugin collected while it is being deployed (see :meth:`deploy`)
        self._collecting: tuple[str, list[Problem]] | None = None
        #: the MQTT connection's state (``edged run`` sets it when the config has ``[mqtt]``): in stats and health
        self.mqtt_state: Callable[[], dict[str, Any]] | None = None

    def _problem(self, where: str, message: str, plugin: str | None = None) -> None:
        log.error("%s: %s", where, message, extra={"where": where})
        problem = Problem(where, message, plugin=plugin)
        self.problems.append(problem)
        del self.problems[:-100]
        if self._collecting is not None and plugin == self._collecting[0]:
            self._collecting[1].append(problem)

    def _set_config(self, config: DaemonConfig) -> None:
        """Run ``config`` from now on, with the hardware profile's LED data pins reserved in its device policy
        (whatever it says), and find its plugins again."""
        reserved = getattr(self.hardware, "reserved_pins", None)
        pins = set(reserved()) if callable(reserved) else set()
        if pins - set(config.policy.reserved_pins):
            policy = config.policy.model_copy(update={"reserved_pins": sorted(pins | set(config.policy.reserved_pins))})
            config = config.model_copy(update={"policy": policy})
        self.config = self.assembler.config = config
        self.assembler.refresh_catalog({name: d.entry for name, d in self._deployed.items()})

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
        self.started = True
        sys.setswitchinterval(self.config.daemon.gil_switch_ms / 1000.0)
        with self._lock:
            self._t0 = self.clock.now()
            self._set_config(self.config)
            built = [self.assembler.build(section) for section in self.config.displays]
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
        problem = self.assembler.memory_problem(built)
        if problem is not None:
            for rd in built:
                self._stop_display(rd)
            raise ConfigError(problem)

    def _start_sensor_runner(self) -> None:
        self.sensor_runner = SensorRunner(self.assembler.sensor_tasks(self.config.sensors), self.clock)
        self._sensor_stop.clear()
        self._sensor_done.clear()

        runner = self.sensor_runner

        def run() -> None:
            try:
                runner.run(self._sensor_stop, self.frames, lambda now: self.hardware.advance(now - self._t0))
            except Exception:
                log.exception("sensor thread crashed")
                self._problem("sensors", "sensor thread crashed; see the log")
            finally:
                self._sensor_done.set()

        self._sensor_thread = threading.Thread(target=run, name="edged-sensors", daemon=True)
        self._sensor_thread.start()

    def sensor_loop_busy_s(self) -> float | None:
        """Seconds the sensor loop has spent in its current round (0.0 while it sleeps, infinity once its thread
        died); None on a device without one. systemd's watchdog stops when this grows (see ``daemon.systemd``)."""
        runner, thread = self.sensor_runner, self._sensor_thread
        if runner is None:
            return None
        if thread is None or not thread.is_alive():
            return float("inf")
        began = runner.round_started
        return 0.0 if began is None else max(0.0, time.monotonic() - began)

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
            if self._stopped.is_set():  # it waited for the lock while stop() ran: starting displays now would
                return {"error": ["the daemon has stopped"]}  # leave frame threads that keep the process alive
            self._base_config = config
            old_config = self.config
            self._set_config(self._overlay(config))
            config = self.config
            new_names = {d.name for d in config.displays}
            for name in [n for n in self.displays if n not in new_names]:
                self._stop_display(self.displays.pop(name))
                report["removed"].append(name)
            for section in config.displays:
                current = self.displays.get(section.name)
                key = self.assembler.display_key(section)
                if current is not None and current.key == key:
                    report["kept"].append(section.name)
                    continue
                hardware_same = old_config.daemon.hardware == config.daemon.hardware
                try:
                    rd = self.assembler.build(section, sink=current.sink if current and hardware_same else None)
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
            info, share = self.assembler.layer_info(rd, target.width, target.height, len(rd.runner.layers))
            player = self.assembler.player(playlist, info, share, f"display '{display}' layer '{target.name}'")
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
        return led_output(self._display(display).sink)

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
            save_levels(self.config.state_dir, {name: rd.sink for name, rd in self.displays.items()})
            return self.display_state(display)

    def set_brightness(self, display: str, brightness: int) -> dict[str, Any]:
        """Set a display's brightness (0-255, applied before gamma, as the profile's ``brightness``); kept across
        restarts."""
        with self._lock:
            self._dimmable(display).set_level(brightness=brightness)
            save_levels(self.config.state_dir, {name: rd.sink for name, rd in self.displays.items()})
            return self.display_state(display)

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
            slots = [row.slot for row in self.plugin_rows() if row.layer is None]
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

    def _overlay(self, config: DaemonConfig) -> DaemonConfig:
        """``config`` with the deployed plugins and the marketplace's playlist placed (see :mod:`.overlay`)."""
        placed = overlay(config, self._deployed, self._remote_playlist)
        for name in placed.undrawable:
            self._problem(f"deployed plugin '{name}'", "draws frames, but this device has no display", name)
        if placed.replaced is not None:
            r = placed.replaced
            log.warning(
                "deployed plugins replace the configured playlist until they are removed ([deploy] mode = "
                '"append" or "overlay" keeps it playing)',
                extra={"display": r.display, "layer": r.layer, "playlist": r.playlist, "plugins": r.plugins},
            )
        return placed.config

    def deploy(self, name: str, entry: PluginConfig) -> Activation:
        """Run ``entry`` as plugin ``name`` from now on (a new version replaces the old one): every display that
        uses it is rebuilt, so its statistics start over for the health check. A plugin that does not load at
        all is not deployed (what ran under that name runs on); its problems are the activation's failures."""
        with self._lock:
            failures: list[Problem] = []
            self._collecting = (name, failures)
            try:
                kind = self._kind_of(name, entry)
                if kind is None:
                    return Activation(
                        {"kept": list(self.displays), "rebuilt": [], "added": [], "removed": []}, failures
                    )
                self._deployed[name] = DeployedPlugin(entry, kind)
                self.assembler.forget_print(name)
                report = self._rebuild_using(name)
            finally:
                self._collecting = None
        return Activation(report, failures)

    def _kind_of(self, name: str, entry: PluginConfig) -> Kind | None:
        """The kind plugin ``entry`` loads as (the host's :func:`~edged.host.plugin.detect_kind`, from its manifest
        and its exports), or None, with a problem, when it does not load."""
        try:
            plugin = DevicePlugin(
                entry.path,
                policy=self.config.policy,
                io=self.hardware.io,
                values=SharedValues(),  # what a trial load publishes must not reach the running plugins
                config=dict(entry.config),
                name=name,
                memory_budget=self.config.daemon.plugin_memory_mb << 20,
            )
        except (EdgedError, OSError, ValueError) as exc:
            self._problem(f"deployed plugin '{name}'", f"plugin '{name}' not loaded: {exc}", name)
            return None
        try:
            return plugin.kind
        finally:
            plugin.close()

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
        entry = self.assembler.catalog.get(name)
        if entry is None:
            return None
        deployed = self._deployed.get(name)
        kind = deployed.kind if deployed is not None else self._kind_of(name, entry)
        where = f"health probe of '{name}'"
        if kind == "sensor":
            slot = self.assembler.load(name, None, {}, 5.0, where)
            return (slot, 0.5, True) if slot is not None else None
        t = deploy_display(self.config)
        if t is None or self.config.displays[t].name not in self.displays:
            return None
        rd = self.displays[self.config.displays[t].name]
        info, share = self.assembler.layer_info(rd, rd.geometry.width, rd.geometry.height, len(rd.section.layers))
        slot = self.assembler.load(name, info, {}, share, where)
        return (slot, 1.0 / rd.runner.fps, False) if slot is not None else None

    def plugin_health(self, name: str) -> tuple[int, int, str | None, bool]:
        """(frames or ticks run, strikes, last error, running) of every slot of plugin ``name`` since it started."""
        frames = strikes = 0
        last_error: str | None = None
        running = False
        with self._lock:
            slots = [row.slot for row in self.plugin_rows() if row.name == name]
        for slot in slots:
            frames += slot.stats.calls - slot.stats.failures
            strikes += slot.stats.strikes
            last_error = slot.stats.last_error or last_error
            running = running or not slot.quarantined
        return frames, strikes, last_error, running

    # --- reporting -------------------------------------------------------------------------------------------

    def plugin_rows(self) -> Iterator[PluginRow]:
        """Every plugin slot that runs now (see :func:`~edged.daemon.reporting.plugin_rows`); safe without the
        daemon's lock (a metrics scrape never waits behind a reload)."""
        return plugin_rows(list(self.displays.values()), self.sensor_runner)

    def list_plugins(self) -> list[dict[str, Any]]:
        """Every loaded plugin slot: where it runs, its state and its current stats."""
        with self._lock:
            return [row.summary() for row in self.plugin_rows()]

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
            plugins = {row.key: row.stats() for row in self.plugin_rows()}
        calibration = self.assembler.calibration
        return {
            "uptime_s": time.monotonic() - self.started_at,
            "fuel_per_ms": self.assembler.fuel_per_ms,
            "calibration": calibration.as_dict() if calibration is not None else None,
            "reloads": self.reloads,
            "displays": displays,
            "plugins": plugins,
            "problems": [p.as_dict() for p in self.problems],
            "mqtt": self.mqtt_state() if self.mqtt_state is not None else None,
        }
