"""Hardware profiles: every shipped profile loads, and bad ones name the key and the line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edged.errors import BackendUnavailable, ConfigError
from edged.hardware.backends import EmulatedBackend, EmulatedBackendConfig, SpiBackendConfig, Ws281xBackendConfig
from edged.hardware.output import open_led_output
from edged.hardware.profile import HardwareProfile, list_profiles, load_profile, open_outputs

HARDWARE = Path(__file__).resolve().parents[2] / "hardware"
SHIPPED = sorted(p.stem for p in HARDWARE.glob("*.toml"))


ROOT_DIR = Path(__file__).resolve().parents[2]


def test_the_expected_profiles_ship() -> None:
    expected = {"emulated-16x16", "pi4-ws2812b-16x16", "pi5-spi-strip-60", "pi4-ws2812b-32x8", "pi4-ws2812b-8x8"}
    assert expected <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_and_runs_emulated(name: str) -> None:
    profile = load_profile(HARDWARE / f"{name}.toml")
    assert isinstance(profile, HardwareProfile) and profile.name == name
    for dp in profile.displays.values():
        with open_led_output(dp.display, dp.backend, emulate=True) as out:
            out.show(np.full((dp.display.height, dp.display.width, 3), 255, dtype=np.uint8))
            if dp.display.max_ma:
                assert out.last_current_ma <= dp.display.max_ma


def test_load_by_name_and_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    p = load_profile("pi4-ws2812b-16x16")
    main = p.displays["main"]
    assert isinstance(main.backend, Ws281xBackendConfig) and main.backend.gpio == 18
    assert main.display.wiring == "serpentine" and main.display.max_ma == 3500
    assert "level shifter" in p.notes
    strip = load_profile("pi5-spi-strip-60").displays["strip"]
    assert isinstance(strip.backend, SpiBackendConfig) and strip.display.physical_size == (60, 1)
    # $EDGED_HARDWARE_DIR comes first
    (tmp_path / "mine.toml").write_text('name = "mine"\n[displays.a.display]\nwidth = 2\nheight = 2\n')
    monkeypatch.setenv("EDGED_HARDWARE_DIR", str(tmp_path))
    assert "mine" in list_profiles()
    mine = load_profile("mine")
    assert isinstance(mine.displays["a"].backend, EmulatedBackendConfig)


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"no hardware profile 'pi9'.*emulated-16x16"):
        load_profile("pi9")


BAD = """name = "bad"

[displays.main.display]
width = 16
height = 16
rotation = 45

[displays.main.backend]
type = "ws281x"
gpio = 18
"""


def test_bad_value_names_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert f"{path}:6: displays.main.display.rotation" in str(err.value)


def test_unknown_key_names_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD.replace("rotation = 45", "colour_order = 'GRB'"))
    with pytest.raises(ConfigError, match=r":6: displays\.main\.display\.colour_order: unknown key"):
        load_profile(path)


def test_unknown_backend_type(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD.replace("rotation = 45\n", "").replace('"ws281x"', '"neopixel"'))
    with pytest.raises(ConfigError, match=r":7: displays\.main\.backend: Input tag 'neopixel'"):
        load_profile(path)


def test_too_many_leds_for_one_pwm_string(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text(BAD.replace("rotation = 45\n", "").replace("16", "64"))
    with pytest.raises(ConfigError, match=r"4096 LEDs exceed the ~2700"):
        load_profile(path)


def test_leds0_needs_rgb_order(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "x"\n[displays.s.display]\nwidth = 60\nheight = 1\ncolor_order = "GRB"\n'
        '[displays.s.backend]\ntype = "spi"\nmode = "leds0"\n'
    )
    with pytest.raises(ConfigError, match="color_order to RGB or RGBW"):
        load_profile(path)


@pytest.mark.parametrize("line", ["gamma = 2.8\n", "gamma_table = [" + ", ".join(map(str, range(256))) + "]\n"])
def test_leds0_refuses_a_second_gamma_curve(tmp_path: Path, line: str) -> None:
    """The ws2812-pio driver gammas every byte itself (its ws2812_gamma table); the bundled Pi 5 profile used to add
    gamma = 2.8 on top, so mid-range colours came out far too dark."""
    path = tmp_path / "twice.toml"
    path.write_text(LEDS0.replace('color_order = "RGB"\n', f'color_order = "RGB"\n{line}'))
    with pytest.raises(ConfigError, match="applies its own gamma curve"):
        load_profile(path)
    assert load_profile("pi5-leds0-strip-60").displays["strip"].display.gamma == 1.0


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_profile(path)


# --- GPIO and sensors in profiles ----------------------------------------------------------------------------------


def test_sensor_kit_profile_has_gpio_and_sensors() -> None:
    p = load_profile("pi4-sensor-kit")
    board = p.gpio_config()
    assert set(board.gpio) == {"mode", "status_led", "glow_led"}
    assert set(board.sensors) == {"pir", "distance", "cpu_temperature", "ldr"}
    assert p.led_pins() == {18} and 18 not in board.pins()
    assert "divider" in p.notes


@pytest.mark.parametrize("scenario", sorted((ROOT_DIR / "hardware" / "scenarios").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_scenarios_fit_the_sensor_kit(scenario: Path) -> None:
    from edged.hardware.scenario import load_scenario

    loaded = load_scenario(scenario, config=load_profile("pi4-sensor-kit").gpio_config())
    assert loaded.events or loaded.curves


def test_gpio_on_the_led_data_pin_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "clash.toml"
    path.write_text(BAD.replace("rotation = 45\n", "") + '\n[gpio.button]\ntype = "button"\npin = 18\n')
    with pytest.raises(ConfigError, match=r"pin 18 drives LED display 'main' and gpio\.button"):
        load_profile(path)


def test_mcp3008_clashes_with_an_spi_led_strip(tmp_path: Path) -> None:
    path = tmp_path / "clash.toml"
    path.write_text(
        'name = "x"\n[displays.s.display]\nwidth = 60\nheight = 1\n[displays.s.backend]\ntype = "spi"\n'
        '[sensors.pot]\ntype = "mcp3008"\nchannel = 0\n'
    )
    with pytest.raises(ConfigError, match=r"pin 10 drives LED display 's' and sensors\.pot"):
        load_profile(path)


def test_gpio_pin_used_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.toml"
    path.write_text('name = "x"\n[gpio.a]\ntype = "button"\npin = 5\n[gpio.b]\ntype = "digital_out"\npin = 5\n')
    with pytest.raises(ConfigError, match="pin 5 is used by gpio.a"):
        load_profile(path)


def test_bad_gpio_entry_names_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n\n[gpio.a]\ntype = "button"\npin = 40\n')
    # the union's tag lands in the path, so the line is the table's (tomlconfig cannot map tagged paths yet)
    with pytest.raises(ConfigError, match=r":3: gpio\.a\.button\.pin: Input should be less than or equal to 27"):
        load_profile(path)


def test_open_outputs_per_display(tmp_path: Path) -> None:
    outs = open_outputs(load_profile("pi4-sensor-kit"), emulate=True)
    assert set(outs) == {"main"} and isinstance(outs["main"].backend, EmulatedBackend)
    outs["main"].close()
    # a real backend that cannot open here: the error propagates and the displays opened before it are blanked
    path = tmp_path / "two.toml"
    path.write_text(
        'name = "two"\n[displays.a.display]\nwidth = 2\nheight = 1\n'
        '[displays.b.display]\nwidth = 2\nheight = 1\ncolor_order = "RGB"\n'
        f'[displays.b.backend]\ntype = "spi"\nmode = "leds0"\npath = "{tmp_path / "missing"}"\n'
    )
    opened: list[EmulatedBackend] = []
    real_init = EmulatedBackend.__init__

    def spy(self: EmulatedBackend, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        opened.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EmulatedBackend, "__init__", spy)
        with pytest.raises(BackendUnavailable, match="dtoverlay=ws2812-pio"):
            open_outputs(load_profile(path))
    assert len(opened) == 1 and opened[0].closed
    latest = opened[0].latest()
    assert latest is not None and latest.data.max() == 0


LEDS0 = (
    'name = "x"\n[displays.s.display]\nwidth = 60\nheight = 1\ncolor_order = "RGB"\n'
    '[displays.s.backend]\ntype = "spi"\nmode = "leds0"\n'
)


def test_leds0_data_pin_is_reserved_like_the_other_led_pins(tmp_path: Path) -> None:
    from edged.cli.preview import _policy
    from edged.errors import CapabilityDenied
    from edged.host import Capabilities

    assert SpiBackendConfig(mode="leds0").gpio == 4  # the ws2812-pio overlay's default
    assert load_profile("pi5-leds0-strip-60").led_pins() == {4}
    path = tmp_path / "leds0.toml"
    path.write_text(LEDS0.replace('mode = "leds0"\n', 'mode = "leds0"\ngpio = 12\n'))
    profile = load_profile(path)
    assert profile.led_pins() == {12}
    policy = _policy(profile)
    assert 12 in policy.reserved_pins
    with pytest.raises(CapabilityDenied, match=r"gpio.write pin 12 \(reserved by the device\)"):
        policy.grant(Capabilities.model_validate({"gpio": {"write": [12]}}), "p")


@pytest.mark.parametrize(("pin_line", "pin"), [("", 4), ("gpio = 21\n", 21)])
def test_gpio_device_on_the_leds0_data_pin_is_refused(tmp_path: Path, pin_line: str, pin: int) -> None:
    path = tmp_path / "clash.toml"
    path.write_text(
        LEDS0.replace('mode = "leds0"\n', f'mode = "leds0"\n{pin_line}') + f'[gpio.b]\ntype = "button"\npin = {pin}\n'
    )
    with pytest.raises(ConfigError, match=rf"pin {pin} drives LED display 's' and gpio\.b"):
        load_profile(path)


def test_leds0_gpio_must_be_a_bcm_pin(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(LEDS0 + "gpio = 40\n")
    with pytest.raises(ConfigError, match="gpio"):
        load_profile(path)
