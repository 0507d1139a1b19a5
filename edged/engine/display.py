"""One display's frame loop: layers composited at a fixed rate, sensor plugins on their intervals."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..host.frames import Tick
from .clock import Clock
from .compose import Canvas
from .playlist import PlaylistPlayer
from .supervisor import Supervised
from .timing import RENDER_BOUNDS, Buckets, FrameGrid, IntervalStats

log = logging.getLogger("edged.engine")


class FrameSink(Protocol):
    """Where finished frames go: the hardware pipeline and backend, or an emulated one."""

    def show(self, frame: np.ndarray) -> None: ...


@dataclass
class Layer:
    """A playlist drawn into a region of the display (x, y, width, height), bottom layers first."""

    name: str
    player: PlaylistPlayer
    x: int = 0
    y: int = 0
    width: int = 0
    height: int = 0
    opacity: float = 1.0


@dataclass
class SensorTask:
    """A sensor plugin run every ``interval_s`` between frames."""

    slot: Supervised
    interval_s: float
    next_due: float = 0.0
    ticks: int = 0


@dataclass
class DisplayStats:
    frames: int = 0
    dropped: int = 0
    intervals: IntervalStats = field(default_factory=IntervalStats)
    render_ms_max: float = 0.0
    #: render time of every frame (seconds), bucketed for ``/metrics``
    render: Buckets = field(default_factory=lambda: Buckets(RENDER_BOUNDS))


def draw_identify(rgb: np.ndarray, now: float) -> None:
    """ "Which device is this?": a white border blinking twice a second, over whatever plays."""
    if int(now * 4) % 2:
        return
    rgb[0, :] = rgb[-1, :] = 255
    rgb[:, 0] = rgb[:, -1] = 255


class DisplayRunner:
    """Drives one display. :meth:`step` renders and shows one frame; :meth:`run` loops on the frame grid until
    stopped, sleeping (never spinning) until each deadline and dropping frames that are already late."""

    def __init__(
        self,
        name: str,
        width: int,
        height: int,
        fps: float,
        layers: list[Layer],
        sink: FrameSink,
        clock: Clock,
        sensors: list[SensorTask] | None = None,
        idle: Callable[[float], Any] | None = None,
    ) -> None:
        self.name = name
        #: while set, a blinking border is drawn over every frame until this time (``identify``)
        self.identify_until: float | None = None
        #: called with the next deadline once a frame is rendered ahead: slack time for housekeeping (the
        #: daemon collects garbage there, so that Python's collector never runs in the middle of a frame)
        self.idle = idle
        self.width, self.height, self.fps = width, height, fps
        self.layers = layers
        self.sink = sink
        self.clock = clock
        self.sensors = sensors or []
        self.canvas = Canvas(width, height)
        self.stats = DisplayStats()
        self.frame_index = 0
        self.started: float | None = None
        self._last_tick: float | None = None
        self.lock = threading.Lock()  # held while rendering; the control interface takes it to change layers

    def _tick(self, now: float) -> Tick:
        assert self.started is not None
        dt = 0 if self._last_tick is None else int((now - self._last_tick) * 1e6)
        self._last_tick = now
        return Tick(
            self.frame_index, int((now - self.started) * 1e6), dt, self.width, self.height, self.frame_index == 0
        )

    def render(self, now: float) -> np.ndarray:
        """Composite every layer for the frame at ``now`` and return the display's RGB frame."""
        if self.started is None:
            self.started = now
        tick = self._tick(now)
        self.canvas.clear()
        for layer in self.layers:
            frame = layer.player.render(tick, now)
            if frame is not None:
                self.canvas.draw(frame, layer.x, layer.y, layer.opacity)
        if self.identify_until is not None:
            if now < self.identify_until:
                draw_identify(self.canvas.rgb, now)
            else:
                self.identify_until = None
        return self.canvas.rgb

    def step(self, now: float | None = None) -> np.ndarray:
        """Render and show one frame now."""
        now = self.clock.now() if now is None else now
        with self.lock:
            start = self.clock.now()
            frame = self.render(now)
            self.sink.show(frame)
            self.stats.render_ms_max = max(self.stats.render_ms_max, (self.clock.now() - start) * 1e3)
        self.stats.intervals.mark(self.clock.now())
        self.stats.frames += 1
        self.frame_index += 1
        return frame

    def run_sensors(self, now: float, until: float) -> None:
        """Run the sensor plugins that are due, while there is time before ``until``."""
        for task in self.sensors:
            if now >= task.next_due and self.clock.now() < until:
                task.slot.tick(Tick(task.ticks, int(now * 1e6), int(task.interval_s * 1e6), 0, 0, task.ticks == 0))
                task.ticks += 1
                task.next_due = now + task.interval_s

    def _render_ahead(self, deadline: float) -> np.ndarray:
        """Render the frame due at ``deadline`` now, before it is due (under the lock the control interface uses)."""
        with self.lock:
            start = self.clock.now()
            frame = self.render(deadline).copy()
            took = self.clock.now() - start
            self.stats.render_ms_max = max(self.stats.render_ms_max, took * 1e3)
            self.stats.render.observe(took)
        self.frame_index += 1
        return frame

    def run(
        self,
        stop: threading.Event,
        frames: int | None = None,
        on_frame: Callable[[DisplayRunner], Any] | None = None,
    ) -> None:
        """Loop until ``stop`` is set (or ``frames`` frames were shown).

        Each frame is rendered during the period before its deadline and shown exactly at it, so how long the
        plugins take moves nothing on the LEDs as long as it fits the period. A frame whose rendering ends after
        its deadline is dropped, not shown late, and the next deadline stays on the grid. Idle time is slept.
        """
        pending = self._render_ahead(self.clock.now())
        grid = FrameGrid.at_fps(self.fps, self.clock.now())  # the first frame is due as soon as it is ready
        shown = 0
        while not stop.is_set() and (frames is None or shown < frames):
            self.clock.sleep_until(grid.deadline(), stop)
            if stop.is_set():
                break
            self.sink.show(pending)
            self.stats.intervals.mark(self.clock.now())
            self.stats.frames += 1
            shown += 1
            if on_frame is not None:
                on_frame(self)
            if frames is not None and shown >= frames:
                break
            nxt = grid.next_after(self.clock.now())
            pending = self._render_ahead(nxt)
            if self.clock.now() > nxt:
                # rendered too late for its deadline: drop it and render once more for the next one (if that is
                # late too, it is shown as soon as it is ready: a display whose plugins never fit the period
                # still shows something, at the rate it can, with every missed deadline counted as dropped)
                nxt = grid.next_after(self.clock.now())
                pending = self._render_ahead(nxt)
            self.stats.dropped = grid.dropped
            self.run_sensors(self.clock.now(), nxt)
            if self.idle is not None:
                self.idle(nxt)

    def blank(self) -> None:
        """Show an all-black frame (on exit and on SIGTERM)."""
        self.canvas.clear()
        self.sink.show(self.canvas.rgb)

    def close(self) -> None:
        for layer in self.layers:
            for slot in layer.player.slots.values():
                slot.close()
        for task in self.sensors:
            task.slot.close()


class SensorRunner:
    """Sensor plugins on their intervals on a thread of their own, for a device with sensors and no display."""

    def __init__(self, tasks: list[SensorTask], clock: Clock) -> None:
        self.tasks = tasks
        self.clock = clock
        self.name = "sensors"
        #: when the round the loop is in began (time.monotonic), None while it sleeps: a watchdog's view of a stall
        self.round_started: float | None = None

    def run(
        self, stop: threading.Event, ticks: int | None = None, before: Callable[[float], Any] | None = None
    ) -> None:
        """Tick each sensor plugin when it is due, sleeping in between, until ``stop`` (or every plugin ticked
        ``ticks`` times). ``before(now)`` runs before each round (the daemon moves scripted inputs there)."""
        if not self.tasks:
            return
        start = self.clock.now()
        for task in self.tasks:
            task.next_due = start
        while not stop.is_set():
            self.round_started = time.monotonic()
            now = self.clock.now()
            if before is not None:
                before(now)
            for task in self.tasks:
                if now >= task.next_due and (ticks is None or task.ticks < ticks):
                    tick = Tick(task.ticks, int((now - start) * 1e6), int(task.interval_s * 1e6), 0, 0, task.ticks == 0)
                    task.slot.tick(tick)
                    task.ticks += 1
                    # on a grid from the start, like frames: no drift, and a late tick is not made up for
                    behind = max(1, int((self.clock.now() - task.next_due) / task.interval_s) + 1)
                    task.next_due += behind * task.interval_s
            self.round_started = None
            if ticks is not None and all(t.ticks >= ticks for t in self.tasks):
                return
            self.clock.sleep_until(min(t.next_due for t in self.tasks if ticks is None or t.ticks < ticks), stop)

    def close(self) -> None:
        for task in self.tasks:
            task.slot.close()
