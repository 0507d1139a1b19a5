"""Every sensor type on gpiozero's MockFactory, read through GpioBoard.sensor_read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockChargingPin, MockTriggerPin

from edged.errors import SensorReadError
from edged.hardware.gpio import GpioBoard, GpioConfig
from edged.hardware.sensors import SPEED_OF_SOUND

SENSORS = {
    "sensors": {
        "sonar": {"type": "distance", "echo": 24, "trigger": 23, "max_distance": 2.0},
        "pir": {"type": "motion", "pin": 4},
        "pir_low": {"type": "motion", "pin": 25, "pull_up": True},
        "ldr": {"type": "light", "pin": 5, "charge_time_limit": 0.02},
        "pot": {"type": "mcp3008", "channel": 2},
        "battery": {"type": "mcp3008", "channel": 5, "output": "volts", "vref": 3.3},
        "remote": {"type": "mcp3008", "channel": 2, "device": 1, "vref": 5.0, "output": "volts"},
        "cpu": {"type": "cpu_temperature"},
    }
}
LSB = 1 / 1023  # one step of the MCP3008's 10 bits


@pytest.fixture
def board() -> Any:
    with GpioBoard(GpioConfig.model_validate(SENSORS), emulated=True) as b:
        yield b


def test_distance_reads_metres_and_drives_the_mock_echo(board: GpioBoard) -> None:
    assert board.sensor_read("sonar") == (2.0, "m")  # nothing in range
    board.set_sensor("sonar", 0.5)
    assert board.sensor_read("sonar") == (0.5, "m")
    trigger = board.mock_pin(23)
    assert isinstance(trigger, MockTriggerPin) and trigger.echo_pin is board.mock_pin(24)
    assert trigger.echo_time == pytest.approx(2 * 0.5 / SPEED_OF_SOUND)
    board.set_sensor("sonar", 7.0)  # beyond max_distance: clamped like the real sensor
    assert board.sensor_read("sonar") == (2.0, "m")


def test_gpiozeros_own_distance_sensor_measures_the_emulated_echo(board: GpioBoard) -> None:
    board.set_sensor("sonar", 0.5)
    measured = board.device("sonar").distance  # gpiozero times real echo pulses on its own thread
    # a slow machine only lengthens the echo pulse, so the measurement is at least the set distance
    assert 0.49 <= measured <= 2.0


def test_motion_reads_the_pir_level_with_pull_up_inversion(board: GpioBoard) -> None:
    assert board.sensor_read("pir") == (0.0, "")
    board.set_sensor("pir", 1)
    assert board.sensor_read("pir") == (1.0, "")
    assert board.mock_pin(4).state == 1
    board.set_sensor("pir_low", 1)  # a pulled-up (open-collector) PIR pulls its pin low on motion
    assert board.mock_pin(25).state == 0
    assert board.sensor_read("pir_low") == (1.0, "")
    board.mock_pin(4).drive_low()  # the level is read from the pin itself
    assert board.sensor_read("pir") == (0.0, "")


def test_light_reads_0_to_1_and_sets_the_capacitor_charge_time(board: GpioBoard) -> None:
    board.set_sensor("ldr", 0.25)
    assert board.sensor_read("ldr") == (0.25, "")
    pin = board.mock_pin(5)
    assert isinstance(pin, MockChargingPin)
    assert pin.charge_time == pytest.approx(0.75 * 0.02)  # gpiozero reads 1 - charge_time / limit
    board.set_sensor("ldr", -3)
    assert board.sensor_read("ldr") == (0.0, "")


def test_mcp3008_channels_are_read_over_mock_spi(board: GpioBoard) -> None:
    board.set_sensor("pot", 0.5)
    board.set_sensor("battery", 1.2)
    board.set_sensor("remote", 4.0)
    value, unit = board.sensor_read("pot")
    assert unit == "" and value == pytest.approx(0.5, abs=LSB)
    value, unit = board.sensor_read("battery")
    assert unit == "V" and value == pytest.approx(1.2, abs=3.3 * LSB)
    value, unit = board.sensor_read("remote")  # channel 2 of the second chip (CE1) is independent of the first's
    assert unit == "V" and value == pytest.approx(4.0, abs=5.0 * LSB)
    assert board.sensor_read("pot")[0] == pytest.approx(0.5, abs=LSB)
    # the raw codes really crossed the bus: the gpiozero device decodes the chip's 10-bit answer
    assert board.sensors["pot"].chip is not None and board.sensors["pot"].chip.raw[2] == 512
    assert board.device("pot").raw_value == 512


def test_mcp3008_full_scale_and_zero(board: GpioBoard) -> None:
    board.set_sensor("pot", 1.0)
    assert board.device("pot").raw_value == 1023
    board.set_sensor("pot", 0.0)
    assert board.device("pot").raw_value == 0


def test_cpu_temperature_goes_through_a_kernel_style_sensor_file(board: GpioBoard) -> None:
    assert board.sensor_read("cpu") == (45.0, "°C")
    board.set_sensor("cpu", 71.5)
    assert board.sensor_read("cpu") == (71.5, "°C")
    path = Path(board.device("cpu").sensor_file)
    assert path.read_text() == "71500\n"
    board.close()
    assert not path.exists()  # the emulated sensor file goes with the board


def test_a_missing_sensor_file_is_a_clear_read_error(board: GpioBoard) -> None:
    Path(board.device("cpu").sensor_file).unlink()
    with pytest.raises(SensorReadError, match=r"sensor 'cpu' \(cpu_temperature\): read failed"):
        board.sensor_read("cpu")


def test_non_finite_values_are_refused(board: GpioBoard) -> None:
    with pytest.raises(ValueError, match="must be finite"):
        board.set_sensor("cpu", float("nan"))
    assert board.sensor_read("cpu") == (45.0, "°C")


def test_closing_during_a_distance_read_prints_no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10, point 7: gpiozero's DistanceSensor thread printed a traceback at daemon stop under load. Its close()
    drops the trigger pin before stopping its reading thread; a read waiting for the echo lock then failed. The lock
    is held here to put a read exactly there while the board closes."""
    import threading
    import time

    from gpiozero import DistanceSensor

    errors: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda a: errors.append(f"{a.exc_type.__name__}: {a.exc_value}"))
    b = GpioBoard(GpioConfig.model_validate({"sensors": {"sonar": SENSORS["sensors"]["sonar"]}}), emulated=True)
    device = b.device("sonar")
    with DistanceSensor.ECHO_LOCK:
        time.sleep(0.2)  # the reading thread reaches the lock (it reads every 60 ms)
        closer = threading.Thread(target=b.close)
        closer.start()
        deadline = time.monotonic() + 1.0
        while device._trigger is not None and time.monotonic() < deadline:
            time.sleep(0.01)
    closer.join(timeout=10)
    time.sleep(0.1)
    assert not closer.is_alive() and errors == []


def test_a_closed_boards_spi_bus_cannot_drop_the_next_boards_bus() -> None:
    """gpiozero keys shared software SPI buses by pin names across factories, and a closed bus, finalized later by
    the garbage collector, closes again and deletes whatever bus holds that key then: the next board's. A board
    built in between then found its SPI pins taken (seen as a flaky setup error in the full suite)."""
    import gc

    from gpiozero.pins.spi import SPISoftwareBus

    cfg = GpioConfig.model_validate({"sensors": {k: SENSORS["sensors"][k] for k in ("pot", "remote")}})
    gc.disable()  # a collection at a time of our choosing, as the automatic one may choose it
    try:
        first = GpioBoard(cfg, emulated=True)
        first.close()
        del first
        second = GpioBoard(cfg, emulated=True)
        gc.collect()
        assert any(ref() is not None for ref in SPISoftwareBus._instances.values())  # the second board's bus
        third_cfg = GpioConfig.model_validate({"sensors": {"pot": SENSORS["sensors"]["pot"]}})
        second.close()
        GpioBoard(third_cfg, emulated=True).close()
    finally:
        gc.enable()
