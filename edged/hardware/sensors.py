"""Sensors a hardware profile declares by name: config models, and how each is built, read and emulated.

Every sensor is a gpiozero device on the board's pin factory. Readings (value, unit):

=================== ======================================= ==================================================
type                value                                   emulation (MockFactory)
=================== ======================================= ==================================================
``distance``        metres, 0..max_distance (HC-SR04)       the set value; the trigger is a ``MockTriggerPin``
                                                            whose echo time follows it
``motion``          PIR output level, 0 or 1                the echo pin is driven high/low
``light``           0 (dark) .. 1 (bright), LDR + capacitor the set value; the pin is a ``MockChargingPin``
                                                            whose charge time follows it
``mcp3008``         0..1 of vref, or volts (``output``)     a mock MCP3008 on the SPI pins, read bit by bit
                                                            through gpiozero's SPI code
``cpu_temperature`` °C                                      a temporary file in the kernel's millidegree
                                                            format that gpiozero's ``CPUTemperature`` reads
=================== ======================================= ==================================================

gpiozero measures distance and light by timing pulses on background threads, so under emulation those
measurements are real-time, noisy and lag behind a scripted value; emulated ``distance`` and ``light`` reads
therefore return the set value directly (exact, on the caller's clock) while the mock pins are kept consistent
so gpiozero's own device (``board.device(name)``) measures roughly the same thing.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from gpiozero import MCP3008, CPUTemperature, DistanceSensor, LightSensor, MotionSensor
from gpiozero.pins.mock import MockChargingPin, MockSPIDevice, MockTriggerPin
from pydantic import BaseModel, ConfigDict, Field

from ..errors import HardwareError, SensorReadError

_MODEL = ConfigDict(extra="forbid", frozen=True)
Pin = Annotated[int, Field(ge=0, le=27, description="BCM GPIO number")]

#: speed of sound gpiozero's DistanceSensor assumes (m/s)
SPEED_OF_SOUND = 343.26
#: SPI0's pins (BCM): clock, MOSI, MISO, and chip select by device number
SPI0_CLOCK, SPI0_MOSI, SPI0_MISO = 11, 10, 9
SPI0_SELECT = (8, 7)


class DistanceConfig(BaseModel):
    """An HC-SR04 ultrasonic distance sensor; reads metres."""

    model_config = _MODEL
    type: Literal["distance"]
    echo: Pin
    trigger: Pin
    #: readings are clamped to this (metres)
    max_distance: float = Field(default=1.0, gt=0, le=10)

    def pins(self) -> list[tuple[int, str]]:
        return [(self.echo, "echo"), (self.trigger, "trigger")]


class MotionConfig(BaseModel):
    """A PIR motion sensor's output pin; reads 1 while motion is detected."""

    model_config = _MODEL
    type: Literal["motion"]
    pin: Pin
    pull_up: bool = False

    def pins(self) -> list[tuple[int, str]]:
        return [(self.pin, "pin")]


class LightConfig(BaseModel):
    """An LDR and a capacitor on one pin (charge-time measurement); reads 0 (dark) to 1 (bright)."""

    model_config = _MODEL
    type: Literal["light"]
    pin: Pin
    #: seconds the capacitor may take to charge before it counts as dark (0.01 fits a 1 µF capacitor)
    charge_time_limit: float = Field(default=0.01, gt=0, le=1)

    def pins(self) -> list[tuple[int, str]]:
        return [(self.pin, "pin")]


class Mcp3008Config(BaseModel):
    """One channel of an MCP3008 10-bit ADC on SPI0; reads 0..1 of ``vref``, or volts with ``output = "volts"``."""

    model_config = _MODEL
    type: Literal["mcp3008"]
    channel: int = Field(ge=0, le=7)
    #: only SPI0 has hardware pins gpiozero knows (clock 11, MOSI 10, MISO 9)
    port: Literal[0] = 0
    #: chip select: 0 is CE0 (GPIO 8), 1 is CE1 (GPIO 7)
    device: Literal[0, 1] = 0
    vref: float = Field(default=3.3, gt=0, le=5.5)
    output: Literal["ratio", "volts"] = "ratio"

    def pins(self) -> list[tuple[int, str]]:
        return [
            (SPI0_CLOCK, "spi0 clock"),
            (SPI0_MOSI, "spi0 mosi"),
            (SPI0_MISO, "spi0 miso"),
            (self.select, "spi0 select"),
        ]

    @property
    def select(self) -> int:
        return SPI0_SELECT[self.device]


class CpuTemperatureConfig(BaseModel):
    """The SoC temperature in °C, read from the kernel's thermal zone (no pins)."""

    model_config = _MODEL
    type: Literal["cpu_temperature"]
    sensor_file: str = "/sys/class/thermal/thermal_zone0/temp"

    def pins(self) -> list[tuple[int, str]]:
        return []


SensorConfig = Annotated[
    DistanceConfig | MotionConfig | LightConfig | Mcp3008Config | CpuTemperatureConfig,
    Field(discriminator="type"),
]

UNITS = {"distance": "m", "motion": "", "light": "", "mcp3008": "", "cpu_temperature": "°C"}
#: what an emulated sensor reads before anything sets it
EMULATED_DEFAULTS = {"motion": 0.0, "light": 0.5, "mcp3008": 0.0, "cpu_temperature": 45.0}


def unit_of(config: SensorConfig) -> str:
    if isinstance(config, Mcp3008Config) and config.output == "volts":
        return "V"
    return UNITS[config.type]


def value_range(config: SensorConfig) -> tuple[float, float]:
    """The values a sensor can read (and a scenario may set)."""
    if isinstance(config, DistanceConfig):
        return (0.0, config.max_distance)
    if isinstance(config, Mcp3008Config):
        return (0.0, config.vref if config.output == "volts" else 1.0)
    if isinstance(config, CpuTemperatureConfig):
        return (-40.0, 125.0)
    return (0.0, 1.0)


class EmulatedMcp3008(MockSPIDevice):  # type: ignore[misc]  # gpiozero ships no annotations: its classes are Any
    """The slave side of an MCP3008 on mock SPI pins: decodes the start bit, mode and channel the master clocks
    in, then clocks out a null bit and the channel's 10-bit value (as the datasheet's timing diagram shows)."""

    def __init__(self, select: int, *, pin_factory: Any) -> None:
        super().__init__(SPI0_CLOCK, SPI0_MOSI, SPI0_MISO, select, pin_factory=pin_factory)
        self.raw = [0] * 8

    def on_bit(self) -> None:
        try:
            start = self.rx_buf.index(1)
        except ValueError:
            return
        if len(self.rx_buf) == start + 5:  # start bit, single/diff bit, 3 channel bits
            d2, d1, d0 = self.rx_buf[start + 2 : start + 5]
            # one clock to sample, a null bit, then 10 bits MSB first
            self.tx_word(self.raw[d2 << 2 | d1 << 1 | d0], bits_per_word=12)


class SensorHandle:
    """One configured sensor: the gpiozero device, and its emulated inputs when the board is emulated."""

    def __init__(self, name: str, config: SensorConfig, factory: Any, emulated: bool, board: Any) -> None:
        self.name = name
        self.config = config
        self.emulated = emulated
        self.unit = unit_of(config)
        self._value = EMULATED_DEFAULTS.get(config.type, 0.0)
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.chip: EmulatedMcp3008 | None = None
        self.device: Any = None
        self._build(factory, board)
        if emulated:
            self.set(self._value if not isinstance(config, DistanceConfig) else config.max_distance)

    def _build(self, factory: Any, board: Any) -> None:
        c = self.config
        if isinstance(c, DistanceConfig):
            if self.emulated:
                echo = board._mock_pin_for(c.echo)
                board._mock_pin_for(c.trigger, MockTriggerPin, echo_pin=echo, echo_time=self._echo_time(c.max_distance))
            with warnings.catch_warnings():
                if self.emulated:  # "use pigpio for accuracy" says nothing useful about a mock
                    warnings.simplefilter("ignore")
                self.device = DistanceSensor(
                    echo=c.echo, trigger=c.trigger, max_distance=c.max_distance, pin_factory=factory
                )
        elif isinstance(c, MotionConfig):
            self.device = MotionSensor(c.pin, pull_up=c.pull_up, pin_factory=factory)
        elif isinstance(c, LightConfig):
            if self.emulated:
                board._mock_pin_for(c.pin, MockChargingPin, charge_time=c.charge_time_limit / 2)
            self.device = LightSensor(c.pin, charge_time_limit=c.charge_time_limit, pin_factory=factory)
        elif isinstance(c, Mcp3008Config):
            if self.emulated:
                self.chip = board._mcp3008_chip(c.select)
            with board._spi_factory():
                self.device = MCP3008(
                    channel=c.channel, port=c.port, device=c.device, max_voltage=c.vref, pin_factory=factory
                )
        else:
            path = c.sensor_file
            if self.emulated:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="edged-cputemp-")
                path = str(Path(self._tmpdir.name) / "temp")
                Path(path).write_text("45000\n")
            self.device = CPUTemperature(sensor_file=path, pin_factory=factory)

    @staticmethod
    def _echo_time(distance: float) -> float:
        return 2.0 * distance / SPEED_OF_SOUND

    def read(self) -> float:
        """The current reading, in the sensor's unit."""
        c = self.config
        try:
            if isinstance(c, DistanceConfig):
                return self._value if self.emulated else float(self.device.distance)
            if isinstance(c, MotionConfig):
                level = bool(self.device.pin.state)
                return float(level != c.pull_up)  # a pulled-up PIR output is active low
            if isinstance(c, LightConfig):
                return self._value if self.emulated else float(self.device.value)
            if isinstance(c, Mcp3008Config):
                return float(self.device.voltage if c.output == "volts" else self.device.value)
            return float(self.device.temperature)
        except (OSError, ValueError) as exc:
            raise SensorReadError(f"sensor '{self.name}' ({c.type}): read failed: {exc}") from exc

    def set(self, value: float) -> None:
        """Emulation: make the sensor read ``value`` (clamped to what it can read)."""
        if not self.emulated:
            raise HardwareError(f"sensor '{self.name}': values can only be set on an emulated board")
        if not math.isfinite(value):
            raise ValueError(f"sensor '{self.name}': value must be finite, not {value}")
        lo, hi = value_range(self.config)
        value = min(max(float(value), lo), hi)
        c = self.config
        if isinstance(c, DistanceConfig):
            self.device.trigger.echo_time = self._echo_time(value)
        elif isinstance(c, MotionConfig):
            pin = self.device.pin
            (pin.drive_high if (value >= 0.5) != c.pull_up else pin.drive_low)()
            value = float(value >= 0.5)
        elif isinstance(c, LightConfig):
            # dark never charges within the limit; bright charges at once
            self.device.pin.charge_time = (1.0 - value) * c.charge_time_limit if value > 0 else c.charge_time_limit * 2
        elif isinstance(c, Mcp3008Config):
            assert self.chip is not None
            ratio = value / c.vref if c.output == "volts" else value
            self.chip.raw[c.channel] = round(ratio * 1023)
        else:
            assert self._tmpdir is not None
            Path(self.device.sensor_file).write_text(f"{round(value * 1000)}\n")
        self._value = value

    def close(self) -> None:
        if self.device is not None:
            queue = getattr(self.device, "_queue", None)
            if queue is not None:
                # gpiozero's DistanceSensor.close() drops its trigger pin before it stops the thread that reads
                # the sensor, so a read in flight failed with a traceback at stop; stop the reads first
                queue.stop()
            self.device.close()
            self.device = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
