"""GPIO inputs, outputs and sensors on gpiozero, real or emulated: the board plugins reach through host functions.

:class:`GpioConfig` is what a hardware profile declares (``[gpio.NAME]`` and ``[sensors.NAME]`` tables, each with a
``type``); :class:`GpioBoard` builds gpiozero devices from it on a pin factory (a real one on a Pi, gpiozero's
``MockFactory`` in emulation) and implements :class:`edged.host.functions.DeviceIO`. Plugins see electrical levels:
``gpio_read`` returns 1 for a high pin, ``gpio_write(pin, 1)`` drives it high, and edges are named by the level's
change, so pressing a pulled-up button (wired to GND) is a *falling* edge. See docs/gpio.md.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from gpiozero import Button, Device, DigitalInputDevice, DigitalOutputDevice, PWMOutputDevice
from gpiozero.exc import GPIOZeroError
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import (
    BackendUnavailable,
    GpioError,
    InvalidValue,
    NotEmulated,
    PinNotConfigured,
    UnknownSensor,
    WrongPinUse,
)
from .access import device_problem
from .sensors import EmulatedMcp3008, Mcp3008Config, MotionConfig, SensorConfig, SensorHandle

log = logging.getLogger(__name__)

_MODEL = ConfigDict(extra="forbid", frozen=True)
Pin = Annotated[int, Field(ge=0, le=27, description="BCM GPIO number")]
EdgeCallback = Callable[[int, str, float], None]


# --- config ------------------------------------------------------------------------------------------------------


class DigitalInConfig(BaseModel):
    """A digital input with a pull resistor and edge events."""

    model_config = _MODEL
    type: Literal["digital_in"]
    pin: Pin
    pull: Literal["up", "down", "none"] = "down"
    #: seconds of debounce (applied by real pin factories; gpiozero's mock pins ignore it)
    bounce_time: float | None = Field(default=None, gt=0, le=1)

    @property
    def active_high(self) -> bool:
        return self.pull != "up"


class ButtonConfig(BaseModel):
    """A push button; with ``pull_up`` (the default) it is wired from the pin to GND and reads 0 while pressed."""

    model_config = _MODEL
    type: Literal["button"]
    pin: Pin
    pull_up: bool = True
    bounce_time: float | None = Field(default=None, gt=0, le=1)

    @property
    def active_high(self) -> bool:
        return not self.pull_up


class DigitalOutConfig(BaseModel):
    """A digital output. ``initial`` is on/off in gpiozero's sense: on drives the pin low when not active_high."""

    model_config = _MODEL
    type: Literal["digital_out"]
    pin: Pin
    active_high: bool = True
    initial: bool = False


class PwmOutConfig(BaseModel):
    """A PWM output (software or hardware PWM, as the pin factory provides); duty 0..1."""

    model_config = _MODEL
    type: Literal["pwm_out"]
    pin: Pin
    frequency: float = Field(default=100.0, gt=0, le=100_000)


GpioDeviceConfig = Annotated[
    DigitalInConfig | ButtonConfig | DigitalOutConfig | PwmOutConfig,
    Field(discriminator="type"),
]
_INPUTS = (DigitalInConfig, ButtonConfig)


class GpioConfig(BaseModel):
    """The GPIO devices and sensors of a hardware profile, by name. Pins are BCM numbers 0-27, each used once
    (MCP3008 channels on the same chip share the SPI pins)."""

    model_config = _MODEL
    gpio: dict[str, GpioDeviceConfig] = Field(default_factory=dict)
    sensors: dict[str, SensorConfig] = Field(default_factory=dict)
    #: real boards only: a gpiozero pin factory name (``lgpio``, ``rpigpio``, ``pigpio``, ``native``); by default
    #: gpiozero picks (``GPIOZERO_PIN_FACTORY`` or its own order; a Pi 5 needs ``lgpio``)
    pin_factory: Literal["lgpio", "rpigpio", "pigpio", "native"] | None = None

    @model_validator(mode="after")
    def _pins_used_once(self) -> GpioConfig:
        users: dict[int, list[str]] = {}
        for pin, who in self.pin_users():
            users.setdefault(pin, []).append(who)
        clashes = [f"pin {pin} is used by {' and '.join(who)}" for pin, who in sorted(users.items()) if len(who) > 1]
        if clashes:
            raise ValueError("; ".join(clashes))
        return self

    def pin_users(self) -> list[tuple[int, str]]:
        """Every (pin, "section.name (type role)") this config uses; MCP3008 chips are listed once per chip."""
        out: list[tuple[int, str]] = []
        for name, dev in self.gpio.items():
            out.append((dev.pin, f"gpio.{name} ({dev.type})"))
        chips: set[int] = set()
        for name, sensor in self.sensors.items():
            if isinstance(sensor, Mcp3008Config):
                if sensor.device in chips:
                    continue  # another channel of the same chip: same pins
                chips.add(sensor.device)
                pins = sensor.pins()
                if chips == {0, 1}:  # the second chip shares the bus, only its select pin is its own
                    pins = [(sensor.select, "spi0 select")]
            else:
                pins = sensor.pins()
            out.extend((pin, f"sensors.{name} ({sensor.type} {role})") for pin, role in pins)
        return out

    def pins(self) -> set[int]:
        """Every BCM pin the config uses (for checks against the LED data pin and the device policy)."""
        return {pin for pin, _ in self.pin_users()}


# --- the board ---------------------------------------------------------------------------------------------------

_factory_lock = threading.RLock()


class GpioBoard:
    """gpiozero devices built from a :class:`GpioConfig`, reachable by pin (host functions) and by name.

    ``emulated=True`` uses a fresh ``MockFactory``; ``factory=`` uses the given one (emulated if it is a
    ``MockFactory``); otherwise gpiozero's real factory for this Pi (``BackendUnavailable`` if none loads). The factory
    is always passed to devices explicitly; gpiozero's global ``Device.pin_factory`` is left alone. ``clock`` stamps
    edge events (``time.monotonic`` by default). Close the board (or use it as a context manager) to release every
    pin.
    """

    def __init__(
        self,
        config: GpioConfig,
        *,
        emulated: bool = False,
        factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        if factory is None:
            factory = MockFactory() if emulated else _real_factory(config.pin_factory)
        self.factory = factory
        self.emulated = isinstance(factory, MockFactory)
        self._stamp = threading.local()
        self._lock = threading.Lock()
        self._watchers: dict[int, list[EdgeCallback]] = {}
        self._devices: dict[str, Any] = {}
        self._by_pin: dict[int, tuple[str, GpioDeviceConfig]] = {}
        self._sensor_pins: dict[int, str] = {}
        self._motion_pins: set[int] = set()
        self._pin_handlers: list[Callable[[float, bool], None]] = []  # gpiozero keeps only weak references
        self.sensors: dict[str, SensorHandle] = {}
        self._chips: dict[int, EmulatedMcp3008] = {}
        self._closed = False
        try:
            for name, dev in config.gpio.items():
                with _naming(f"gpio.{name} ({dev.type})"):
                    self._devices[name] = self._build(name, dev)
                self._by_pin[dev.pin] = (name, dev)
            for name, sensor in config.sensors.items():
                with _naming(f"sensors.{name} ({sensor.type})"):
                    self.sensors[name] = SensorHandle(name, sensor, factory, self.emulated, self)
                for pin, _ in sensor.pins():
                    self._sensor_pins[pin] = name
                if isinstance(sensor, MotionConfig):
                    self._watch_motion(sensor.pin, self.sensors[name].device)
        except BaseException:
            self.close()
            raise
        log.info(
            "gpio board ready",
            extra={"emulated": self.emulated, "gpio": sorted(config.gpio), "sensors": sorted(config.sensors)},
        )

    # --- construction ----------------------------------------------------------------------------------------

    def _build(self, name: str, dev: GpioDeviceConfig) -> Any:
        f = self.factory
        if isinstance(dev, DigitalInConfig):
            pull = {"up": True, "down": False, "none": None}[dev.pull]
            active = True if dev.pull == "none" else None
            device = DigitalInputDevice(
                dev.pin, pull_up=pull, active_state=active, bounce_time=dev.bounce_time, pin_factory=f
            )
        elif isinstance(dev, ButtonConfig):
            device = Button(dev.pin, pull_up=dev.pull_up, bounce_time=dev.bounce_time, pin_factory=f)
        elif isinstance(dev, DigitalOutConfig):
            device = DigitalOutputDevice(dev.pin, active_high=dev.active_high, initial_value=dev.initial, pin_factory=f)
        else:
            if self.emulated:
                self._mock_pin_for(dev.pin, MockPWMPin)
            with self._pin_class(MockPWMPin):
                device = PWMOutputDevice(dev.pin, frequency=dev.frequency, initial_value=0, pin_factory=f)
        if isinstance(dev, _INPUTS):
            device.when_activated = self._edge_handler(dev.pin, "rising" if dev.active_high else "falling")
            device.when_deactivated = self._edge_handler(dev.pin, "falling" if dev.active_high else "rising")
        return device

    def _mock_pin_for(self, pin: int, pin_class: type[MockPin] = MockPin, **kwargs: Any) -> MockPin:
        """Create the mock pin with the class a device needs before gpiozero asks the factory for it."""
        with self._pin_class(pin_class):
            return self.factory.pin(pin, **kwargs)

    @contextmanager
    def _pin_class(self, pin_class: type[MockPin]) -> Iterator[None]:
        # MockFactory.pin() refuses to hand out an existing pin of another PWM-ness than its default class, so a
        # PWM device must be built while the default is MockPWMPin.
        if not self.emulated:
            yield
            return
        with _factory_lock:
            saved = self.factory.pin_class
            self.factory.pin_class = pin_class
            try:
                yield
            finally:
                self.factory.pin_class = saved

    @contextmanager
    def _spi_factory(self) -> Iterator[None]:
        # gpiozero 2.0.1's software SPI bus is a Device built without the pin_factory it was given, so it falls
        # back to the global Device.pin_factory (and fails off a Pi). Point the global at our factory only while
        # the SPI device is built, then restore it.
        with _factory_lock:
            saved = Device.pin_factory
            Device.pin_factory = self.factory
            try:
                yield
            finally:
                Device.pin_factory = saved

    def _mcp3008_chip(self, select: int) -> EmulatedMcp3008:
        chip = self._chips.get(select)
        if chip is None:
            with self._pin_class(MockPin):
                chip = self._chips[select] = EmulatedMcp3008(select, pin_factory=self.factory)
        return chip

    # --- edges -----------------------------------------------------------------------------------------------

    def _edge_handler(self, pin: int, edge: str) -> Callable[[], None]:
        def fire() -> None:
            t = getattr(self._stamp, "t", None)
            t = self.clock() if t is None else t
            with self._lock:
                callbacks = list(self._watchers.get(pin, ()))
            for cb in callbacks:
                try:
                    cb(pin, edge, t)
                except Exception:
                    log.exception("gpio edge callback failed", extra={"pin": pin, "edge": edge})

        return fire

    def _watch_motion(self, pin: int, device: Any) -> None:
        # gpiozero's MotionSensor samples its pin on a thread (smoothed, lagging); edges come from the pin itself,
        # which the sensor leaves free
        rising, falling = self._edge_handler(pin, "rising"), self._edge_handler(pin, "falling")

        def changed(ticks: float, state: bool) -> None:
            (rising if state else falling)()

        self._pin_handlers.append(changed)
        device.pin.edges = "both"
        device.pin.when_changed = changed
        self._motion_pins.add(pin)

    @contextmanager
    def stamp_edges(self, t: float) -> Iterator[None]:
        """Edges fired on this thread inside the block are stamped ``t`` instead of ``clock()`` (emulation
        drivers use it so scripted edges carry their scripted time)."""
        self._stamp.t = t
        try:
            yield
        finally:
            self._stamp.t = None

    # --- DeviceIO --------------------------------------------------------------------------------------------

    def _gpio(self, pin: int, fn: str) -> tuple[str, GpioDeviceConfig]:
        self._check_open()
        found = self._by_pin.get(pin)
        if found is None:
            if pin in self._sensor_pins:
                name = self._sensor_pins[pin]
                raise WrongPinUse(f"{fn}: pin {pin} belongs to sensor '{name}'; read it with sensor_read('{name}')")
            raise PinNotConfigured(f"{fn}: pin {pin} is not configured in the hardware profile's [gpio] section")
        return found

    def gpio_read(self, pin: int) -> int:
        """The pin's electrical level (0 or 1): inputs, buttons and digital outputs."""
        name, dev = self._gpio(pin, "gpio_read")
        if isinstance(dev, PwmOutConfig):
            raise WrongPinUse(f"gpio_read: pin {pin} is the PWM output '{name}'; it has a duty, not a level")
        return int(bool(self._devices[name].pin.state))

    def gpio_write(self, pin: int, value: int) -> None:
        """Drive a digital output's pin high (1) or low (0)."""
        name, dev = self._gpio(pin, "gpio_write")
        if not isinstance(dev, DigitalOutConfig):
            raise WrongPinUse(f"gpio_write: pin {pin} is '{name}' ({dev.type}), not a digital_out")
        device = self._devices[name]
        device.value = bool(value) == dev.active_high

    def gpio_pwm(self, pin: int, duty: float) -> None:
        """Set a PWM output's duty cycle, 0..1 of the period high."""
        name, dev = self._gpio(pin, "gpio_pwm")
        if not isinstance(dev, PwmOutConfig):
            raise WrongPinUse(f"gpio_pwm: pin {pin} is '{name}' ({dev.type}), not a pwm_out")
        if not 0.0 <= duty <= 1.0:
            raise InvalidValue(f"gpio_pwm: duty must be 0..1, not {duty}")
        self._devices[name].value = duty

    def gpio_watch(self, pin: int, callback: EdgeCallback) -> None:
        """Call ``callback(pin, "rising" | "falling", t)`` on every level change of an input, button or PIR pin."""
        self._check_open()
        if pin not in self._motion_pins:
            name, dev = self._gpio(pin, "gpio_watch")
            if not isinstance(dev, _INPUTS):
                raise WrongPinUse(
                    f"gpio_watch: pin {pin} is '{name}' ({dev.type}); only inputs, buttons and PIRs have edges"
                )
        with self._lock:
            self._watchers.setdefault(pin, []).append(callback)

    def sensor_read(self, name: str) -> tuple[float, str]:
        """(value, unit) of a declared sensor."""
        self._check_open()
        handle = self.sensors.get(name)
        if handle is None:
            raise UnknownSensor(f"sensor_read: no sensor named '{name}' (sensors: {sorted(self.sensors)})")
        return handle.read(), handle.unit

    # --- by name, and emulation --------------------------------------------------------------------------------

    def device(self, name: str) -> Any:
        """The gpiozero device behind a [gpio] or [sensors] entry."""
        if name in self._devices:
            return self._devices[name]
        if name in self.sensors:
            return self.sensors[name].device
        raise LookupError(f"no device named '{name}'")

    def mock_pin(self, pin: int) -> MockPin:
        """The MockFactory pin for a BCM number (emulation only), to drive or inspect it in tests."""
        self._require_emulated("mock_pin")
        for _, info in self.factory.board_info.find_pin(pin):
            if info in self.factory.pins:
                return self.factory.pins[info]
        return self.factory.pin(pin)

    def drive(self, name: str, level: int, *, at: float | None = None) -> None:
        """Emulation: drive a digital_in or button pin high (1) or low (0); edges are stamped ``at`` if given."""
        self._require_emulated("drive")
        dev = self.config.gpio.get(name)
        if not isinstance(dev, _INPUTS):
            raise WrongPinUse(f"drive: '{name}' is not a digital_in or button")
        pin = self.mock_pin(dev.pin)
        with self.stamp_edges(at) if at is not None else _nothing():
            pin.drive_high() if level else pin.drive_low()

    def press(self, name: str, *, at: float | None = None) -> None:
        """Emulation: press a button (drives its pin to GND for a pulled-up button)."""
        dev = self._button(name)
        self.drive(name, 0 if dev.pull_up else 1, at=at)

    def release(self, name: str, *, at: float | None = None) -> None:
        """Emulation: release a button."""
        dev = self._button(name)
        self.drive(name, 1 if dev.pull_up else 0, at=at)

    def _button(self, name: str) -> ButtonConfig:
        dev = self.config.gpio.get(name)
        if not isinstance(dev, ButtonConfig):
            raise WrongPinUse(f"'{name}' is not a button (buttons: {self.names(ButtonConfig)})")
        return dev

    def set_sensor(self, name: str, value: float) -> None:
        """Emulation: make a sensor read ``value`` from now on (see :mod:`edged.hardware.sensors`)."""
        self._require_emulated("set_sensor")
        handle = self.sensors.get(name)
        if handle is None:
            raise UnknownSensor(f"set_sensor: no sensor named '{name}' (sensors: {sorted(self.sensors)})")
        handle.set(value)

    def names(self, kind: type[BaseModel]) -> list[str]:
        """Names of the [gpio] entries of one config type."""
        return sorted(n for n, d in self.config.gpio.items() if isinstance(d, kind))

    def _require_emulated(self, what: str) -> None:
        self._check_open()
        if not self.emulated:
            raise NotEmulated(f"{what}: only an emulated board (MockFactory) can do this")

    def _check_open(self) -> None:
        if self._closed:
            raise GpioError("the GPIO board is closed")

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every device and release its pins; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._watchers.clear()
        self._pin_handlers.clear()
        spi = bool(self._chips) or any(h.config.type == "mcp3008" for h in self.sensors.values())
        for device in self._devices.values():
            device.close()
        for handle in self.sensors.values():
            handle.close()
        for chip in self._chips.values():
            chip.close()
        if spi:
            # gpiozero keys its shared software SPI buses by pin names only, across factories, and a closed bus
            # leaves that key when the bus object is finalized: collect it now, or a later collection would drop
            # the key of the next board's bus on the same pins (and its second device then finds the pins taken)
            gc.collect()
        if self.emulated:
            # forget our mock pins (some have special classes), so the next board on this factory can make them
            # again with whatever class it needs
            for pin in self.config.pins():
                for _, info in self.factory.board_info.find_pin(pin):
                    if not self.factory._reservations.get(info):  # unless another device still holds it
                        self.factory.pins.pop(info, None)
        log.info("gpio board closed", extra={"emulated": self.emulated})

    def __enter__(self) -> GpioBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _naming(what: str) -> Iterator[None]:
    try:
        yield
    except GPIOZeroError as exc:
        raise GpioError(f"{what}: {exc}") from exc


def _gpiochip_problem() -> str | None:
    """Why the GPIO character devices cannot be used, when they exist but none may be opened (lgpio only says
    "can not open gpiochip")."""
    chips = sorted(Path("/dev").glob("gpiochip*"))
    problems = [device_problem(c) for c in chips]
    if chips and all(problems):
        return problems[0]
    return None


def _real_factory(name: str | None) -> Any:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if name is None:
                factory = Device._default_pin_factory()  # gpiozero's own choice: GPIOZERO_PIN_FACTORY or its order
            else:
                from importlib.metadata import entry_points

                factory = entry_points(group="gpiozero_pin_factories")[name].load()()
    except Exception as exc:  # lgpio raises its own lgpio.error (an Exception) for a chip it cannot open
        tried = "; ".join(str(w.message) for w in caught) if "caught" in locals() else ""
        if problem := _gpiochip_problem():
            raise BackendUnavailable(f"no GPIO: {problem}") from exc
        raise BackendUnavailable(
            f"no GPIO pin factory could be loaded ({exc}{'; ' + tried if tried else ''}); "
            "on a machine that is not a Pi use the emulated board"
        ) from exc
    for w in caught:
        log.warning("gpio pin factory fallback: %s", w.message)
    return factory
