"""GpioBoard on gpiozero's MockFactory: every GPIO device type through the DeviceIO calls, edges, errors, cleanup."""

from __future__ import annotations

from typing import Any

import pytest
from gpiozero import Device, DigitalOutputDevice
from gpiozero.pins.mock import MockFactory, MockPWMPin

from edged.errors import BackendUnavailable, ConfigError, HardwareError
from edged.hardware.gpio import (
    GpioBoard,
    GpioConfig,
    GpioError,
    InvalidValue,
    PinNotConfigured,
    UnknownSensor,
    WrongPinUse,
)
from edged.tomlconfig import load_toml

IO = {
    "gpio": {
        "mode": {"type": "button", "pin": 17},
        "door": {"type": "digital_in", "pin": 27, "pull": "up"},
        "reed": {"type": "digital_in", "pin": 5},
        "relay": {"type": "digital_out", "pin": 22},
        "siren": {"type": "digital_out", "pin": 6, "active_high": False},
        "fan": {"type": "pwm_out", "pin": 12, "frequency": 250},
    },
    "sensors": {"cpu": {"type": "cpu_temperature"}, "pir": {"type": "motion", "pin": 4}},
}


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory()


@pytest.fixture
def board(factory: MockFactory) -> Any:
    with GpioBoard(GpioConfig.model_validate(IO), factory=factory) as b:
        yield b


def test_inputs_read_their_electrical_level(board: GpioBoard) -> None:
    assert board.emulated
    assert board.gpio_read(27) == 1  # pulled up, nothing connected
    assert board.gpio_read(5) == 0  # pulled down
    assert board.gpio_read(17) == 1  # a pulled-up button, released
    board.mock_pin(27).drive_low()
    board.mock_pin(5).drive_high()
    assert (board.gpio_read(27), board.gpio_read(5)) == (0, 1)
    board.press("mode")
    assert board.gpio_read(17) == 0
    assert board.device("mode").is_pressed


def test_button_press_is_a_falling_edge_and_release_a_rising_one(board: GpioBoard) -> None:
    edges: list[tuple[int, str, float]] = []
    board.gpio_watch(17, lambda pin, edge, t: edges.append((pin, edge, t)))
    board.press("mode", at=10.0)
    board.release("mode", at=10.25)
    assert edges == [(17, "falling", 10.0), (17, "rising", 10.25)]


def test_edges_follow_the_level_for_pull_down_inputs_and_use_the_clock(factory: MockFactory) -> None:
    ticks = iter([1.0, 2.0])
    with GpioBoard(GpioConfig.model_validate(IO), factory=factory, clock=lambda: next(ticks)) as board:
        edges: list[tuple[int, str, float]] = []
        board.gpio_watch(5, lambda *e: edges.append(e))
        board.gpio_watch(5, lambda *e: edges.append(("second watcher", *e)))
        board.mock_pin(5).drive_high()
        board.mock_pin(5).drive_low()
    assert edges == [
        (5, "rising", 1.0),
        ("second watcher", 5, "rising", 1.0),
        (5, "falling", 2.0),
        ("second watcher", 5, "falling", 2.0),
    ]


def test_a_pir_pin_reports_edges_by_level(factory: MockFactory) -> None:
    io = {"sensors": {"pir": {"type": "motion", "pin": 4}, "pir_oc": {"type": "motion", "pin": 25, "pull_up": True}}}
    with GpioBoard(GpioConfig.model_validate(io), factory=factory) as board:
        edges: list[tuple[int, str, float]] = []
        board.gpio_watch(4, lambda *e: edges.append(e))
        board.gpio_watch(25, lambda *e: edges.append(e))
        with board.stamp_edges(3.0):
            board.set_sensor("pir", 1)
            board.set_sensor("pir_oc", 1)  # an open-collector PIR on a pull-up pulls the pin low on motion
        with board.stamp_edges(4.0):
            board.set_sensor("pir", 0)
        assert edges == [(4, "rising", 3.0), (25, "falling", 3.0), (4, "falling", 4.0)]


def test_a_failing_watcher_does_not_stop_the_others(board: GpioBoard, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def bad(pin: int, edge: str, t: float) -> None:
        raise RuntimeError("boom")

    board.gpio_watch(27, bad)
    board.gpio_watch(27, lambda pin, edge, t: seen.append(edge))
    board.mock_pin(27).drive_low()
    assert seen == ["falling"]
    assert "gpio edge callback failed" in caplog.text


def test_digital_outputs_are_written_and_read_as_levels(board: GpioBoard) -> None:
    assert board.mock_pin(22).state == 0  # initial off, active high
    assert board.mock_pin(6).state == 1  # initial off, active low: high
    board.gpio_write(22, 1)
    board.gpio_write(6, 0)
    assert (board.mock_pin(22).state, board.mock_pin(6).state) == (1, 0)
    assert (board.gpio_read(22), board.gpio_read(6)) == (1, 0)
    assert board.device("siren").is_active  # driving an active-low output low switches it on


def test_pwm_duty_lands_on_the_mock_pwm_pin(board: GpioBoard) -> None:
    pin = board.mock_pin(12)
    assert isinstance(pin, MockPWMPin)
    assert pin.frequency == 250
    board.gpio_pwm(12, 0.25)
    assert pin.state == 0.25
    board.gpio_pwm(12, 1.0)
    assert pin.state == 1.0


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda b: b.gpio_read(3), PinNotConfigured, "gpio_read: pin 3 is not configured"),
        (lambda b: b.gpio_write(26, 1), PinNotConfigured, "gpio_write: pin 26 is not configured"),
        (lambda b: b.gpio_write(17, 1), WrongPinUse, r"pin 17 is 'mode' \(button\), not a digital_out"),
        (lambda b: b.gpio_write(12, 1), WrongPinUse, r"pin 12 is 'fan' \(pwm_out\), not a digital_out"),
        (lambda b: b.gpio_pwm(12, 1.5), InvalidValue, r"gpio_pwm: duty must be 0..1, not 1.5"),
        (lambda b: b.gpio_pwm(22, 0.5), WrongPinUse, r"pin 22 is 'relay' \(digital_out\), not a pwm_out"),
        (lambda b: b.gpio_read(12), WrongPinUse, "pin 12 is the PWM output 'fan'"),
        (lambda b: b.gpio_watch(22, print), WrongPinUse, "only inputs, buttons and PIRs have edges"),
        (lambda b: b.gpio_read(4), WrongPinUse, r"pin 4 belongs to sensor 'pir'; read it with sensor_read\('pir'\)"),
        (lambda b: b.sensor_read("sonar"), UnknownSensor, r"no sensor named 'sonar' \(sensors: \['cpu', 'pir'\]\)"),
        (lambda b: b.set_sensor("sonar", 1), UnknownSensor, "no sensor named 'sonar'"),
        (lambda b: b.press("relay"), WrongPinUse, r"'relay' is not a button \(buttons: \['mode'\]\)"),
        (lambda b: b.drive("relay", 1), WrongPinUse, "'relay' is not a digital_in or button"),
    ],
)
def test_misuse_raises_hardware_errors_and_touches_nothing(call: Any, error: type, message: str) -> None:
    factory = MockFactory()
    with GpioBoard(GpioConfig.model_validate(IO), factory=factory) as board:
        before = {p: board.mock_pin(p).state for p in (17, 22, 6, 12, 27)}
        with pytest.raises(error, match=message) as info:
            call(board)
        assert isinstance(info.value, HardwareError)
        assert {p: board.mock_pin(p).state for p in before} == before


def test_close_releases_every_pin_so_another_board_can_take_them(factory: MockFactory) -> None:
    first = GpioBoard(GpioConfig.model_validate(IO), factory=factory)
    first.close()
    first.close()  # safe twice
    with pytest.raises(GpioError, match="closed"):
        first.gpio_read(17)
    # the same pins, now with other roles (12 was PWM, 17 an input)
    swapped = {"gpio": {"led": {"type": "digital_out", "pin": 17}, "knob": {"type": "button", "pin": 12}}}
    with GpioBoard(GpioConfig.model_validate(swapped), factory=factory) as second:
        second.gpio_write(17, 1)
        assert second.mock_pin(17).state == 1
        second.press("knob")
        assert second.gpio_read(12) == 0
    with GpioBoard(GpioConfig.model_validate(IO), factory=factory) as third:
        assert third.gpio_read(17) == 1


def test_a_failed_build_closes_what_it_opened(factory: MockFactory) -> None:
    other = DigitalOutputDevice(22, initial_value=True, pin_factory=factory)  # someone else holds pin 22
    taken = {"gpio": {"mode": {"type": "button", "pin": 17}, "x": {"type": "button", "pin": 22}}}
    with pytest.raises(GpioError, match=r"gpio.x \(button\): pin GPIO22 is already in use"):
        GpioBoard(GpioConfig.model_validate(taken), factory=factory)
    assert other.value == 1 and factory.pin(22).state == 1  # the other device's pin is untouched
    with GpioBoard(GpioConfig.model_validate({"gpio": {"b": {"type": "button", "pin": 17}}}), factory=factory) as b:
        assert b.gpio_read(17) == 1  # pin 17 was released by the failed build
    other.close()


def test_the_global_pin_factory_is_left_alone(factory: MockFactory) -> None:
    before = Device.pin_factory
    spi = {"sensors": {"pot": {"type": "mcp3008", "channel": 0}}, "gpio": {"b": {"type": "button", "pin": 17}}}
    with GpioBoard(GpioConfig.model_validate(spi), factory=factory) as board:
        assert Device.pin_factory is before
        assert board.device("b").pin_factory is factory
        assert board.device("pot").pin_factory is factory
    assert Device.pin_factory is before


def test_emulated_true_makes_its_own_mock_factory() -> None:
    with GpioBoard(GpioConfig.model_validate(IO), emulated=True) as board:
        assert isinstance(board.factory, MockFactory)
        assert board.gpio_read(17) == 1


def test_a_real_board_off_a_pi_is_unavailable_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    with pytest.raises(BackendUnavailable, match="no GPIO pin factory could be loaded.*use the emulated board"):
        GpioBoard(GpioConfig.model_validate(IO))
    with pytest.raises(BackendUnavailable, match="no GPIO pin factory"):
        GpioBoard(GpioConfig.model_validate({**IO, "pin_factory": "lgpio"}))


# --- config ------------------------------------------------------------------------------------------------------


def _config(text: str) -> GpioConfig:
    return load_toml(GpioConfig, text=text)


def test_a_pin_used_twice_names_both_users() -> None:
    with pytest.raises(ConfigError, match=r"pin 17 is used by gpio.mode \(button\) and sensors.pir \(motion pin\)"):
        _config('[gpio.mode]\ntype = "button"\npin = 17\n[sensors.pir]\ntype = "motion"\npin = 17\n')
    clash = (
        r"pin 24 is used by gpio.b \(button\) and sensors.sonar \(distance echo\)"
        r" and sensors.sonar \(distance trigger\)"
    )
    with pytest.raises(ValueError, match=clash):
        GpioConfig.model_validate(
            {
                "gpio": {"b": {"type": "button", "pin": 24}},
                "sensors": {"sonar": {"type": "distance", "echo": 24, "trigger": 24}},
            }
        )


def test_mcp3008_channels_share_the_bus_but_the_spi_pins_are_taken() -> None:
    ok = GpioConfig.model_validate(
        {
            "sensors": {
                "a": {"type": "mcp3008", "channel": 0},
                "b": {"type": "mcp3008", "channel": 1},
                "c": {"type": "mcp3008", "channel": 0, "device": 1},
            }
        }
    )
    assert ok.pins() == {7, 8, 9, 10, 11}
    with pytest.raises(ConfigError, match=r"pin 9 is used by gpio.b \(button\) and sensors.a \(mcp3008 spi0 miso\)"):
        _config('[gpio.b]\ntype = "button"\npin = 9\n[sensors.a]\ntype = "mcp3008"\nchannel = 0\n')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[gpio.mode]\ntype = "button"\npin = 40\n', r"<config>:1: gpio.mode.button.pin: .*less than or equal to 27"),
        ('[gpio.mode]\ntype = "servo"\npin = 4\n', r"<config>:1: gpio.mode: .*'servo' .* expected tags"),
        ('[gpio.mode]\ntype = "button"\npin = 4\nbounce = 0.1\n', r"<config>:1: gpio.mode.button.bounce: unknown key"),
        (
            '[gpio.x]\ntype = "digital_in"\npin = 4\npull = "sideways"\n',
            r"<config>:1: gpio.x.digital_in.pull: Input should be 'up', 'down' or 'none'",
        ),
        (
            '[sensors.a]\ntype = "mcp3008"\nchannel = 8\n',
            r"<config>:1: sensors.a.mcp3008.channel: .*less than or equal to 7",
        ),
        ('[sensors.d]\ntype = "distance"\necho = 24\n', r"sensors.d.distance.trigger: Field required"),
        (
            '[gpio.f]\ntype = "pwm_out"\npin = 12\nfrequency = 0\n',
            r"<config>:1: gpio.f.pwm_out.frequency: .*greater than 0",
        ),
        ('pin_factory = "wiringpi"\n', r"<config>:1: pin_factory"),
    ],
)
def test_bad_configs_name_the_key_and_line(text: str, message: str) -> None:
    # a discriminated union's error location includes the type tag, so the line given is the device's table
    with pytest.raises(ConfigError, match=message):
        _config(text)
