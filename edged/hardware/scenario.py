"""Scripted hardware for emulation: a TOML scenario that presses buttons, drives inputs and feeds sensor curves.

A scenario is a list of timed ``[[events]]`` (press or release a button, drive a digital input high or low, set a
sensor) and ``[[curves]]`` (a sensor's value over time: points with linear interpolation, or a ramp). A
:class:`ScenarioPlayer` applies it to an emulated :class:`~edged.hardware.gpio.GpioBoard` as the caller's clock
advances, so a test or the engine decides what time it is (simulated or real) and the result is deterministic.
Edge events a scenario causes are stamped with their scripted time (``player.start + at``). Format: docs/gpio.md.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from ..bundled import bundled_dir
from ..errors import ConfigError, HardwareError
from ..tomlconfig import key_lines, load_toml
from .gpio import ButtonConfig, DigitalInConfig, GpioBoard, GpioConfig
from .sensors import MotionConfig, value_range

log = logging.getLogger(__name__)

_MODEL = ConfigDict(extra="forbid", frozen=True)
Seconds = float


class ScenarioEvent(BaseModel):
    """One thing that happens at time ``at``: exactly one of ``button``, ``input`` or ``sensor`` names its target."""

    model_config = _MODEL
    at: Seconds = Field(ge=0, allow_inf_nan=False)
    #: a [gpio] button: ``action = "press"`` (default; released again after ``hold`` seconds if given) or "release"
    button: str | None = None
    #: a [gpio] digital_in: ``action = "high"`` or ``"low"`` drives its pin to that level
    input: str | None = None
    #: a [sensors] entry: it reads ``value`` from ``at`` on (for a motion sensor, 1 = motion)
    sensor: str | None = None
    action: Literal["press", "release", "high", "low"] | None = None
    hold: Seconds | None = Field(default=None, gt=0, allow_inf_nan=False)
    value: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_target(self) -> ScenarioEvent:
        targets = [k for k in ("button", "input", "sensor") if getattr(self, k) is not None]
        if len(targets) != 1:
            raise ValueError("an event needs exactly one of 'button', 'input' or 'sensor'")
        if self.button is not None:
            if self.action not in (None, "press", "release"):
                raise ValueError(f"a button's action is 'press' or 'release', not '{self.action}'")
            if self.hold is not None and self.action == "release":
                raise ValueError("'hold' only goes with action = 'press'")
        elif self.input is not None:
            if self.action not in ("high", "low"):
                raise ValueError("an input event needs action = 'high' or 'low'")
        elif self.value is None or self.action is not None:
            raise ValueError("a sensor event needs a 'value' (and no 'action')")
        if self.hold is not None and self.button is None:
            raise ValueError("'hold' only goes with a button")
        if self.value is not None and self.sensor is None:
            raise ValueError("'value' only goes with a sensor")
        return self


class Ramp(BaseModel):
    """A straight line from ``from`` to ``to`` over ``over`` seconds, beginning at ``start``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: float = Field(alias="from", allow_inf_nan=False)
    to: float = Field(allow_inf_nan=False)
    over: Seconds = Field(gt=0, allow_inf_nan=False)
    start: Seconds = Field(default=0.0, ge=0, allow_inf_nan=False)


class ScenarioCurve(BaseModel):
    """A sensor's value over time: ``points`` ([t, value] pairs, t strictly increasing) or a ``ramp``.

    Between points the value is interpolated linearly. Before the first point it is the first value; after the last,
    ``mode = "clamp"`` (default) holds the last value and ``mode = "loop"`` starts over from the first point.
    """

    model_config = _MODEL
    sensor: str
    points: list[tuple[Seconds, float]] | None = None
    ramp: Ramp | None = None
    mode: Literal["clamp", "loop"] = "clamp"

    @model_validator(mode="after")
    def _shape(self) -> ScenarioCurve:
        if (self.points is None) == (self.ramp is None):
            raise ValueError("a curve needs exactly one of 'points' or 'ramp'")
        pts = self.knots()
        if not pts:
            raise ValueError("'points' is empty")
        for i, (t, v) in enumerate(pts):
            if not (math.isfinite(t) and math.isfinite(v)):
                raise ValueError(f"point {i} is not finite: {[t, v]}")
            if t < 0:
                raise ValueError(f"point {i} has a negative time: {t}")
            if i and t <= pts[i - 1][0]:
                raise ValueError(
                    f"point times must increase: point {i} (t={t:g}) does not come after point {i - 1} "
                    f"(t={pts[i - 1][0]:g})"
                )
        if self.mode == "loop" and len(pts) < 2:
            raise ValueError("a looping curve needs at least two points")
        return self

    def knots(self) -> list[tuple[float, float]]:
        if self.ramp is not None:
            r = self.ramp
            return [(r.start, r.from_), (r.start + r.over, r.to)]
        return [(float(t), float(v)) for t, v in self.points or []]

    def value_at(self, t: float) -> float:
        """The curve's value at time ``t`` (seconds since the scenario started)."""
        pts = self.knots()
        t0, tn = pts[0][0], pts[-1][0]
        if t <= t0:
            return pts[0][1]
        if t >= tn:
            if self.mode == "clamp":
                return pts[-1][1]
            t = t0 + (t - t0) % (tn - t0)
        i = bisect.bisect_right([p[0] for p in pts], t)
        (ta, va), (tb, vb) = pts[i - 1], pts[i]
        return va + (vb - va) * (t - ta) / (tb - ta)

    def end(self) -> float:
        return math.inf if self.mode == "loop" else self.knots()[-1][0]


class Scenario(BaseModel):
    """A scripted emulation run (see docs/gpio.md for the TOML format)."""

    model_config = _MODEL
    description: str = ""
    #: how long ``run_realtime`` plays it (by default until its last event or curve point)
    duration: Seconds | None = Field(default=None, gt=0, allow_inf_nan=False)
    events: list[ScenarioEvent] = Field(default_factory=list)
    curves: list[ScenarioCurve] = Field(default_factory=list)

    _source: str = PrivateAttr(default="<scenario>")
    _lines: dict[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _one_curve_per_sensor(self) -> Scenario:
        seen: dict[str, int] = {}
        for i, c in enumerate(self.curves):
            if c.sensor in seen:
                raise ValueError(f"curves {seen[c.sensor]} and {i} both drive sensor '{c.sensor}'")
            seen[c.sensor] = i
        for i, e in enumerate(self.events):
            if e.sensor is not None and e.sensor in seen:
                raise ValueError(f"events {i} sets sensor '{e.sensor}', which curves {seen[e.sensor]} drives")
        return self

    def check(self, config: GpioConfig) -> None:
        """Check every name and value against a board's config; :class:`ConfigError` lists every problem."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        buttons = sorted(n for n, d in config.gpio.items() if isinstance(d, ButtonConfig))
        inputs = sorted(n for n, d in config.gpio.items() if isinstance(d, DigitalInConfig))
        sensors = sorted(config.sensors)
        for i, e in enumerate(self.events):
            if e.button is not None and e.button not in buttons:
                problems.append((("events", i, "button"), f"no button named '{e.button}' (buttons: {buttons})"))
            if e.input is not None and e.input not in inputs:
                problems.append((("events", i, "input"), f"no digital_in named '{e.input}' (inputs: {inputs})"))
            if e.sensor is not None:
                if e.sensor not in sensors:
                    problems.append((("events", i, "sensor"), f"no sensor named '{e.sensor}' (sensors: {sensors})"))
                else:
                    problems.extend(_range(("events", i, "value"), config, e.sensor, [e.value or 0.0]))
        for i, c in enumerate(self.curves):
            if c.sensor not in sensors:
                problems.append((("curves", i, "sensor"), f"no sensor named '{c.sensor}' (sensors: {sensors})"))
            elif isinstance(config.sensors[c.sensor], MotionConfig):
                problems.append(
                    (("curves", i, "sensor"), f"'{c.sensor}' is a motion sensor (0 or 1): script it with events")
                )
            else:
                key = "ramp" if c.ramp is not None else "points"
                problems.extend(_range(("curves", i, key), config, c.sensor, [v for _, v in c.knots()]))
        if problems:
            out = []
            for loc, msg in problems:
                line = next((self._lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in self._lines), None)
                where = f"{self._source}:{line}" if line else self._source
                out.append(f"{where}: {'.'.join(str(p) for p in loc)}: {msg}")
            raise ConfigError("\n".join(out))

    def end(self) -> float:
        """When the last scripted thing happens (``inf`` with a looping curve)."""
        ends = [e.at + (e.hold or 0.0) for e in self.events] + [c.end() for c in self.curves]
        return max(ends, default=0.0)


def _range(
    loc: tuple[str | int, ...], config: GpioConfig, sensor: str, values: list[float]
) -> list[tuple[tuple[str | int, ...], str]]:
    lo, hi = value_range(config.sensors[sensor])
    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        return [(loc, f"sensor '{sensor}' reads {lo:g}..{hi:g}; {bad[0]:g} is out of range")]
    return []


def _shipped(path: str | Path) -> str | Path:
    """``path`` itself, or the shipped scenario a bare name (no folder) stands for when no such file exists."""
    p = Path(path)
    if p.exists() or len(p.parts) != 1:
        return path
    for candidate in (p, p.with_name(p.name + ".toml")):
        shipped = bundled_dir("scenarios") / candidate
        if shipped.is_file():
            return shipped
    return path


def load_scenario(
    path: str | Path | None = None, *, text: str | None = None, config: GpioConfig | None = None
) -> Scenario:
    """Load a scenario TOML file (or text); with ``config``, also check its names and values against it. Every
    problem raises :class:`ConfigError` naming the key and its line. A bare name that is not a file (``doorbell-loop``)
    names one of the scenarios edged ships."""
    if path is not None and text is None:
        path = _shipped(path)
    scenario = load_toml(Scenario, path, text)
    if text is None and path is not None:
        text = Path(path).read_text(encoding="utf-8")
    scenario._source = str(path) if path is not None else "<scenario>"
    scenario._lines = key_lines(text or "")
    if config is not None:
        scenario.check(config)
    return scenario


class ScenarioPlayer:
    """Applies a scenario to an emulated board as time advances (driven by the caller's clock).

    ``advance(t)`` applies every event due at or before ``t`` (seconds since the scenario started), in time order,
    then sets every curve's sensor to its value at ``t``. Edges the events cause are stamped ``start + at``; pass the
    ``start`` your consumer measures from (for plugins, the host context's ``started``) to make their times match
    the script exactly. Time may not go backwards.
    """

    def __init__(self, scenario: Scenario, board: GpioBoard, *, start: float | None = None) -> None:
        if not board.emulated:
            raise HardwareError("a scenario can only drive an emulated board (MockFactory)")
        scenario.check(board.config)
        self.scenario = scenario
        self.board = board
        self.start = board.clock() if start is None else start
        self.t = -math.inf
        # (time, order, kind, target, detail): presses with a hold get their release as a separate step
        steps: list[tuple[float, int, str, str, float]] = []
        for i, e in enumerate(scenario.events):
            if e.button is not None:
                steps.append((e.at, i, e.action or "press", e.button, 0.0))
                if e.hold is not None:
                    steps.append((e.at + e.hold, i, "release", e.button, 0.0))
            elif e.input is not None:
                steps.append((e.at, i, e.action or "high", e.input, 0.0))
            else:
                steps.append((e.at, i, "set", e.sensor or "", e.value or 0.0))
        self._steps = sorted(steps, key=lambda s: (s[0], s[1]))
        self._next = 0

    def advance(self, t: float) -> int:
        """Apply everything due up to ``t``; returns how many events were applied."""
        if t < self.t:
            raise ValueError(f"scenario time cannot go backwards (at {self.t:g}, asked for {t:g})")
        self.t = t
        applied = 0
        while self._next < len(self._steps) and self._steps[self._next][0] <= t:
            at, _, kind, target, value = self._steps[self._next]
            self._next += 1
            stamp = self.start + at
            if kind == "press":
                self.board.press(target, at=stamp)
            elif kind == "release":
                self.board.release(target, at=stamp)
            elif kind in ("high", "low"):
                self.board.drive(target, 1 if kind == "high" else 0, at=stamp)
            else:
                with self.board.stamp_edges(stamp):
                    self.board.set_sensor(target, value)
            applied += 1
            log.debug("scenario event", extra={"at": at, "kind": kind, "target": target})
        for curve in self.scenario.curves:
            self.board.set_sensor(curve.sensor, curve.value_at(t))
        return applied

    @property
    def finished(self) -> bool:
        """Every event applied and every (non-looping) curve past its last point."""
        return self._next >= len(self._steps) and self.t >= self.scenario.end()

    def run_realtime(
        self, stop: threading.Event | None = None, *, interval: float = 0.01, until: float | None = None
    ) -> None:
        """Play on the wall clock (blocking; run it on a thread), from ``start`` until ``until`` (default: the
        scenario's ``duration``, else its end) or until ``stop`` is set."""
        stop = stop or threading.Event()
        end = until if until is not None else (self.scenario.duration or self.scenario.end())
        while not stop.is_set():
            now = max(self.board.clock() - self.start, self.t)
            self.advance(min(now, end))
            if now >= end:
                return
            stop.wait(interval)


__all__ = [
    "Ramp",
    "Scenario",
    "ScenarioCurve",
    "ScenarioEvent",
    "ScenarioPlayer",
    "load_scenario",
]
