"""Host functions through a plugin built with a real toolchain: tests/plugins/c/device_c.c (freestanding C with
plugins/sdk/c/edged.h, built by plugins/build with zig cc) on an emulated GpioBoard (gpiozero's MockFactory),
granted and denied."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from edged.errors import CapabilityDenied
from edged.hardware.gpio import GpioBoard, GpioConfig
from edged.host import DevicePolicy
from edged.host.frames import Tick
from edged.host.functions import DisplayInfo, SharedValues
from edged.host.plugin import DevicePlugin

BOARD = GpioConfig.model_validate(
    {
        "gpio": {
            "mode": {"type": "button", "pin": 17},
            "door": {"type": "digital_in", "pin": 27, "pull": "up"},
            "relay": {"type": "digital_out", "pin": 22},
            "spare": {"type": "digital_out", "pin": 5},
            "fan": {"type": "pwm_out", "pin": 12},
            "glow": {"type": "pwm_out", "pin": 13},
        },
        "sensors": {
            "distance": {"type": "distance", "echo": 24, "trigger": 23, "max_distance": 4.0},
            "cpu_temperature": {"type": "cpu_temperature"},
        },
    }
)
# the device would allow more than the plugin asks for: the grant, not the policy, bounds each call
POLICY = DevicePolicy(
    gpio_read=[17, 27],
    gpio_write=[5, 22],
    gpio_pwm=[12, 13],
    gpio_events=[17, 27],
    sensors=["*"],
    values=["*"],
)
CAPS: dict[str, Any] = {
    "led": True,
    "gpio": {"read": [17], "write": [22], "pwm": [12], "events": [17]},
    "sensors": ["distance"],
    "publish": ["edge", "colour"],
    "subscribe": ["colour", "never_set"],
}


@pytest.fixture
def board() -> Any:
    with GpioBoard(BOARD, emulated=True) as b:
        yield b


def load(built_plugin: Any, board: GpioBoard, caps: dict[str, Any] = CAPS, values: SharedValues | None = None):
    manifest = {"wasm": [{"path": str(built_plugin("device_c"))}], "edged": {"name": "device_c", "capabilities": caps}}
    return DevicePlugin(manifest, policy=POLICY, io=board, values=values, display=DisplayInfo(2, 1, fps=25))


def test_granted_calls_drive_the_emulated_board(built_plugin: Any, board: GpioBoard) -> None:
    values = SharedValues()
    dp = load(built_plugin, board, values=values)
    p = dp.plugin
    assert p.call("read", bytes([17])) == b"\x01"  # the button is pulled up
    board.press("mode")
    assert p.call("read", bytes([17])) == b"\x00"
    board.release("mode")
    p.call("write", bytes([22, 1]))
    assert board.mock_pin(22).state == 1
    p.call("write", bytes([22, 0]))
    assert board.mock_pin(22).state == 0
    p.call("pwm", bytes([12]) + struct.pack("<H", 600))
    assert board.mock_pin(12).state == pytest.approx(0.6)
    board.set_sensor("distance", 0.42)
    assert struct.unpack("<d", p.call("sensor", "distance"))[0] == pytest.approx(0.42)
    p.call("publish", "colour=teal")
    assert values.get("colour") == b"teal"
    assert p.call("subscribe", "colour") == b"teal"
    assert p.call("subscribe", "never_set") == b"<unset>"
    assert json.loads(p.call("display")) == {
        "width": 2,
        "height": 1,
        "fps": 25,
        "serpentine": False,
        "brightness": 255,
    }


def test_frames_read_gpio_and_sensors(built_plugin: Any, board: GpioBoard) -> None:
    dp = load(built_plugin, board)
    board.set_sensor("distance", 0.5)
    frame = dp.frame(Tick(0, 0, 0, 2, 1, True))
    assert frame is not None and frame.tolist() == [[[255, 0, 0], [0, 50, 0]]]
    board.press("mode")
    board.set_sensor("distance", 3.9)
    frame = dp.frame(Tick(1, 40_000, 40_000, 2, 1))
    assert frame is not None and frame.tolist() == [[[0, 0, 0], [0, 255, 0]]]


def test_watched_edges_reach_on_gpio(built_plugin: Any, board: GpioBoard) -> None:
    values = SharedValues()
    dp = load(built_plugin, board, values=values)
    dp.plugin.call("watch", bytes([17, 2]))  # falling edges only
    board.press("mode", at=dp.ctx.started + 1.25)
    board.release("mode", at=dp.ctx.started + 1.5)
    assert dp.deliver_events() == 1
    assert json.loads(values.get("edge") or b"") == {"pin": 17, "edge": "falling", "t": 1.25}


@pytest.mark.parametrize(
    ("export", "arg", "message"),
    [
        ("read", bytes([27]), r"edged_gpio_read_i: pin 27 is not granted for gpio.read \(granted: \[17\]\)"),
        ("write", bytes([5, 1]), r"edged_gpio_write_i: pin 5 is not granted for gpio.write \(granted: \[22\]\)"),
        ("pwm", bytes([13]) + struct.pack("<H", 500), "edged_gpio_pwm_i: pin 13 is not granted for gpio.pwm"),
        ("watch", bytes([27, 3]), "edged_gpio_watch_i: pin 27 is not granted for gpio.events"),
        ("sensor", "cpu_temperature", "edged_sensor_read_f: sensor 'cpu_temperature' is not granted"),
        ("publish", "other=1", "edged_value_set: value 'other' is not granted for publish"),
        ("subscribe", "edge", "edged_value_get: value 'edge' is not granted for subscribe"),
    ],
)
def test_ungranted_pins_and_names_fail_the_call_and_touch_nothing(
    built_plugin: Any, board: GpioBoard, export: str, arg: Any, message: str
) -> None:
    values = SharedValues()
    dp = load(built_plugin, board, values=values)
    before = {pin: board.mock_pin(pin).state for pin in (5, 13, 17, 22, 27)}
    with pytest.raises(CapabilityDenied, match=message):
        dp.plugin.call(export, arg)
    assert {pin: board.mock_pin(pin).state for pin in before} == before
    assert values.snapshot() == {} and dp.ctx.watched == {}
    assert dp.plugin.call("read", bytes([17])) == b"\x01"  # the plugin keeps working


def _without(capability: str) -> dict[str, Any]:
    caps = json.loads(json.dumps(CAPS))
    group, _, direction = capability.partition(".")
    if direction:
        caps[group][direction] = []
    else:
        caps[group] = False if group == "led" else []
    return caps


@pytest.mark.parametrize(
    ("capability", "function"),
    [
        ("gpio.read", "edged_gpio_read_i"),
        ("gpio.write", "edged_gpio_write_i"),
        ("gpio.pwm", "edged_gpio_pwm_i"),
        ("gpio.events", "edged_gpio_watch_i"),
        ("sensors", "edged_sensor_read_f"),
        ("publish", "edged_value_set"),
        ("subscribe", "edged_value_get"),
    ],
)
def test_a_missing_capability_refuses_the_load_naming_the_import(
    built_plugin: Any, board: GpioBoard, capability: str, function: str
) -> None:
    with pytest.raises(
        CapabilityDenied, match=f"device_c: imports extism:host/user::{function}, which needs the '{capability}'"
    ):
        load(built_plugin, board, _without(capability))


def test_without_led_the_drawing_plugin_does_not_load(built_plugin: Any, board: GpioBoard) -> None:
    with pytest.raises(
        CapabilityDenied, match="device_c: animation plugins draw on the display, which needs the 'led'"
    ):
        load(built_plugin, board, _without("led"))


# --- the handle (JSON) forms, the clock and the Matricks logs, from C: tests/plugins/c/device_json_c.c -----------


def load_json(built_plugin: Any, board: GpioBoard, caps: dict[str, Any] = CAPS) -> DevicePlugin:
    path = str(built_plugin("device_json_c"))
    manifest = {"wasm": [{"path": path}], "edged": {"name": "device_json_c", "kind": "service", "capabilities": caps}}
    return DevicePlugin(manifest, policy=POLICY, io=board, display=DisplayInfo(16, 8, fps=50))


def test_json_host_functions_from_c_drive_the_emulated_board(
    built_plugin: Any, board: GpioBoard, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    p = load_json(built_plugin, board).plugin
    assert json.loads(p.call("gpio_read", '{"pin": 17}')) == {"pin": 17, "value": 1}
    board.press("mode")
    assert json.loads(p.call("gpio_read", '{"pin": 17}')) == {"pin": 17, "value": 0}
    board.release("mode")
    p.call("gpio_write", '{"pin": 22, "value": 1}')
    assert board.mock_pin(22).state == 1
    p.call("gpio_pwm", '{"pin": 12, "duty": 0.25}')
    assert board.mock_pin(12).state == 0.25
    p.call("gpio_watch", '{"pin": 17, "edges": "falling"}')
    board.press("mode")
    board.release("mode")
    reading = json.loads(p.call("sensor_read", "distance"))
    assert reading["name"] == "distance" and reading["unit"] == "m" and 0 <= reading["value"] <= 4.0
    info = json.loads(p.call("display_info"))
    assert (info["width"], info["height"], info["fps"]) == (16, 8, 50)
    assert struct.unpack("<q", p.call("time_us"))[0] >= 0
    with caplog.at_level(logging.DEBUG, logger="edged.plugin.device_json_c"):
        p.call("log_user", "hello from user")
        p.call("log_env", "hello from env")
    got = {(r.levelno, r.getMessage()) for r in caplog.records if r.name == "edged.plugin.device_json_c"}
    assert got == {(logging.INFO, "hello from user"), (logging.WARNING, "hello from env")}


def test_json_host_functions_from_c_refuse_ungranted_pins_and_touch_nothing(
    built_plugin: Any, board: GpioBoard
) -> None:
    from edged.errors import PluginError

    p = load_json(built_plugin, board).plugin
    for export, arg, message in (
        ("gpio_read", '{"pin": 27}', "pin 27 is not granted for gpio.read"),
        ("gpio_write", '{"pin": 5, "value": 1}', "pin 5 is not granted for gpio.write"),
        ("gpio_pwm", '{"pin": 13, "duty": 0.5}', "pin 13 is not granted for gpio.pwm"),
        ("gpio_watch", '{"pin": 27, "edges": "both"}', "pin 27 is not granted for gpio.events"),
        ("sensor_read", "cpu_temperature", "sensor 'cpu_temperature' is not granted"),
    ):
        with pytest.raises(PluginError, match=message):
            p.call(export, arg)
    assert board.mock_pin(5).state == 0 and board.mock_pin(13).state == 0


@pytest.mark.parametrize(
    ("drop", "function", "capability"),
    [
        ("gpio.read", "edged_gpio_read", "gpio.read"),
        ("gpio.write", "edged_gpio_write", "gpio.write"),
        ("gpio.pwm", "edged_gpio_pwm", "gpio.pwm"),
        ("gpio.events", "edged_gpio_watch", "gpio.events"),
        ("sensors", "edged_sensor_read", "sensors"),
        ("led", "edged_display_info", "led"),
    ],
)
def test_json_host_functions_from_c_need_their_capability_to_load(
    built_plugin: Any, board: GpioBoard, drop: str, function: str, capability: str
) -> None:
    caps = json.loads(json.dumps(CAPS))
    if drop.startswith("gpio."):
        caps["gpio"][drop.split(".")[1]] = []
    elif drop == "led":
        caps["led"] = False
    else:
        caps[drop] = []
    with pytest.raises(CapabilityDenied, match=f"{function}.*'{capability}'"):
        load_json(built_plugin, board, caps)


# --- file access is the device's decision, never the plugin's (issue 10, point 3) ------------------------------


def _wasi_device(built_plugin: Any, paths: dict[str, str], policy: DevicePolicy, edged: bool) -> DevicePlugin:
    manifest: dict[str, Any] = {"wasm": [{"path": str(built_plugin("wasi_files"))}], "allowed_paths": paths}
    if edged:
        manifest["edged"] = {"name": "files", "kind": "service", "capabilities": {"wasi": True}}
    return DevicePlugin(manifest, policy=policy)


@pytest.mark.parametrize("device_wasi", [False, True])
@pytest.mark.parametrize("edged", [False, True])
def test_a_manifest_cannot_open_host_folders_the_device_does_not_offer(
    built_plugin: Any, tmp_path: Path, device_wasi: bool, edged: bool
) -> None:
    (tmp_path / "secret.txt").write_text("the device's secret")
    policy = DevicePolicy(wasi=device_wasi)
    if edged and not device_wasi:
        with pytest.raises(CapabilityDenied, match="wasi"):
            _wasi_device(built_plugin, {str(tmp_path): "/data"}, policy, edged)
    else:  # a manifest without an edged block gets the legacy grant, WASI included: still no files
        with pytest.raises(CapabilityDenied, match=r"not offered by the device's allowed_paths"):
            _wasi_device(built_plugin, {str(tmp_path): "/data"}, policy, edged)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt"]


def test_the_device_offers_folders_and_decides_read_only(built_plugin: Any, tmp_path: Path) -> None:
    data, fonts = tmp_path / "data", tmp_path / "fonts"
    data.mkdir()
    fonts.mkdir()
    (fonts / "f.txt").write_text("font")
    policy = DevicePolicy(wasi=True, allowed_paths={str(data): "/data", f"ro:{fonts}": "/fonts"})
    dp = _wasi_device(built_plugin, {str(data): "/data", f"ro:{fonts}": "/fonts"}, policy, edged=True)
    dp.plugin.call("write_file", "/data/out.txt\nhello")
    assert (data / "out.txt").read_text() == "hello"
    assert dp.plugin.call("read_file", "/fonts/f.txt") == b"font"
    # asking for more than the device offers is refused as a whole, naming each excess
    with pytest.raises(CapabilityDenied, match="read-write .*read-only"):
        _wasi_device(built_plugin, {str(fonts): "/fonts"}, policy, edged=True)
    with pytest.raises(CapabilityDenied, match="not offered"):
        _wasi_device(built_plugin, {str(data): "/elsewhere"}, policy, edged=True)
    with pytest.raises(CapabilityDenied, match="not offered"):  # ".." does not reach a parent the device did not offer
        _wasi_device(built_plugin, {str(data / ".."): "/data"}, policy, edged=True)
