"""Scenario files driving an emulated GpioBoard, and through it real wasm plugins' host functions."""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from edged.errors import CapabilityDenied, ConfigError, HardwareError, PluginError
from edged.hardware.gpio import GpioBoard, GpioConfig
from edged.hardware.scenario import Scenario, ScenarioCurve, ScenarioPlayer, load_scenario
from edged.host import DevicePolicy
from edged.host.functions import DisplayInfo, SharedValues
from edged.host.plugin import DevicePlugin
from tests.host.test_functions import ALL, probe

HERE = Path(__file__).parent / "scenarios"
EXAMPLES = Path(__file__).resolve().parents[2] / "hardware" / "scenarios"

KIT = GpioConfig.model_validate(
    {
        "gpio": {
            "mode": {"type": "button", "pin": 17},
            "door": {"type": "digital_in", "pin": 27, "pull": "up"},
            "relay": {"type": "digital_out", "pin": 22},
            "fan": {"type": "pwm_out", "pin": 12},
        },
        "sensors": {
            "distance": {"type": "distance", "echo": 24, "trigger": 23, "max_distance": 4.0},
            "pir": {"type": "motion", "pin": 4},
            "ldr": {"type": "light", "pin": 5},
            "cpu_temperature": {"type": "cpu_temperature"},
        },
    }
)


@pytest.fixture
def board() -> Any:
    with GpioBoard(KIT, emulated=True) as b:
        yield b


def test_a_scripted_press_fires_a_falling_edge_at_its_scenario_time(board: GpioBoard) -> None:
    player = ScenarioPlayer(load_scenario(HERE / "press-and-ramp.toml", config=KIT), board, start=1000.0)
    edges: list[tuple[int, str, float]] = []
    board.gpio_watch(17, lambda *e: edges.append(e))
    board.gpio_watch(27, lambda *e: edges.append(e))
    assert player.advance(0.0) == 0
    assert player.advance(1.99) == 0 and edges == []
    assert player.advance(2.0) == 1
    assert edges == [(17, "falling", 1002.0)]
    assert board.gpio_read(17) == 0
    # one big step still applies the release (at 2.1) before the door (at 3.0), each with its own time
    assert player.advance(9.0) == 2
    assert edges == [(17, "falling", 1002.0), (17, "rising", 1002.1), (27, "falling", 1003.0)]
    assert board.gpio_read(17) == 1 and board.gpio_read(27) == 0


def test_the_distance_curve_interpolates_and_clamps(board: GpioBoard) -> None:
    player = ScenarioPlayer(load_scenario(HERE / "press-and-ramp.toml", config=KIT), board)
    expected = {0.0: 1.2, 2.5: 0.65, 5.0: 0.1, 7.5: 0.65, 10.0: 1.2, 60.0: 1.2}
    for t, metres in expected.items():
        player.advance(t)
        value, unit = board.sensor_read("distance")
        assert unit == "m" and value == pytest.approx(metres)
    assert board.mock_pin(23).echo_time == pytest.approx(2 * 1.2 / 343.26)


def test_the_temperature_ramp_reaches_the_cpu_temperature_device(board: GpioBoard) -> None:
    player = ScenarioPlayer(load_scenario(HERE / "press-and-ramp.toml", config=KIT), board)
    for t, celsius in {0.0: 45.0, 15.0: 62.5, 30.0: 80.0, 100.0: 80.0}.items():
        player.advance(t)
        assert board.sensor_read("cpu_temperature") == (pytest.approx(celsius), "°C")
        assert board.device("cpu_temperature").temperature == pytest.approx(celsius, abs=0.001)
    assert player.finished


def test_loop_mode_starts_over_and_ramps_can_start_late() -> None:
    loop = ScenarioCurve(sensor="ldr", points=[(2.0, 0.0), (4.0, 1.0)], mode="loop")
    assert [loop.value_at(t) for t in (0.0, 2.0, 3.0, 3.5, 4.0, 5.0, 7.5)] == [0.0, 0.0, 0.5, 0.75, 0.0, 0.5, 0.75]
    ramp = ScenarioCurve.model_validate({"sensor": "x", "ramp": {"from": 10, "to": 20, "over": 4, "start": 6}})
    assert [ramp.value_at(t) for t in (0.0, 6.0, 7.0, 10.0, 99.0)] == [10.0, 10.0, 12.5, 20.0, 20.0]


def test_sensor_events_set_values_and_motion_drives_the_pir_pin(board: GpioBoard) -> None:
    text = '[[events]]\nat = 1\nsensor = "pir"\nvalue = 1\n[[events]]\nat = 2\nsensor = "ldr"\nvalue = 0.8\n'
    player = ScenarioPlayer(load_scenario(text=text, config=KIT), board, start=50.0)
    edges: list[tuple[int, str, float]] = []
    board.gpio_watch(4, lambda *e: edges.append(e))
    player.advance(1.5)
    assert board.sensor_read("pir") == (1.0, "") and board.mock_pin(4).state == 1
    assert edges == [(4, "rising", 51.0)]  # the PIR's edge carries its scripted time
    assert board.sensor_read("ldr") == (0.5, "")  # the emulated default until the event
    player.advance(2.0)
    assert board.sensor_read("ldr") == (0.8, "")


def test_time_cannot_go_backwards(board: GpioBoard) -> None:
    player = ScenarioPlayer(Scenario(), board)
    player.advance(3.0)
    with pytest.raises(ValueError, match="cannot go backwards"):
        player.advance(2.0)


def test_run_realtime_plays_to_the_end_on_the_boards_clock() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 0.05  # every look at the clock moves it on, so the run ends without sleeping long
        return now[0]

    with GpioBoard(KIT, emulated=True, clock=clock) as board:
        player = ScenarioPlayer(load_scenario(HERE / "press-and-ramp.toml", config=KIT), board, start=0.0)
        edges: list[tuple[int, str, float]] = []
        board.gpio_watch(17, lambda *e: edges.append(e))
        player.run_realtime(threading.Event(), interval=0.0)
    assert player.finished
    assert edges == [(17, "falling", 2.0), (17, "rising", pytest.approx(2.1))]


def test_the_example_scenarios_load_and_play() -> None:
    files = sorted(EXAMPLES.glob("*.toml"))
    assert {f.name for f in files} >= {"sensor-kit-demo.toml", "doorbell-loop.toml"}
    for path in files:
        edges = _play(load_scenario(path, config=KIT), seconds=60.0)
        assert edges and edges[0] == "falling" and len(edges) % 2 == 0, path.name


def _play(scenario: Scenario, seconds: float) -> list[str]:
    edges: list[str] = []
    with GpioBoard(KIT, emulated=True) as b:
        player = ScenarioPlayer(scenario, b)
        b.gpio_watch(17, lambda pin, edge, t: edges.append(edge))
        for step in range(int(seconds * 10) + 1):
            player.advance(step / 10)
    return edges


# --- bad scenarios -----------------------------------------------------------------------------------------------


def test_an_unknown_button_is_named_with_its_line() -> None:
    with pytest.raises(ConfigError, match=r"bad-unknown-button.toml:5: events.0.button: no button named 'mdoe' "):
        load_scenario(HERE / "bad-unknown-button.toml", config=KIT)
    scenario = load_scenario(HERE / "bad-unknown-button.toml")  # without a config it only checks the format
    with GpioBoard(KIT, emulated=True) as b, pytest.raises(ConfigError, match=r"buttons: \['mode'\]"):
        ScenarioPlayer(scenario, b)


def test_non_monotonic_points_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"bad-points.toml:1: curves.0: .*point 2 \(t=3\) does not come after"):
        load_scenario(HERE / "bad-points.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[events]]\nat = 1\nbutton = "mode"\nsensor = "pir"\nvalue = 1\n', "exactly one of 'button', 'input'"),
        ('[[events]]\nat = 1\nbutton = "mode"\naction = "release"\nhold = 1\n', "'hold' only goes with action"),
        ('[[events]]\nat = 1\nbutton = "mode"\naction = "high"\n', "a button's action is 'press' or 'release'"),
        ('[[events]]\nat = 1\ninput = "door"\n', "an input event needs action = 'high' or 'low'"),
        ('[[events]]\nat = 1\nsensor = "pir"\n', "a sensor event needs a 'value'"),
        ('[[events]]\nat = -1\nbutton = "mode"\n', r"<config>:2: events.0.at: .*greater than or equal to 0"),
        ('[[events]]\nat = 1\nbuton = "mode"\n', r"<config>:3: events.0.buton: unknown key"),
        ('[[curves]]\nsensor = "ldr"\n', "exactly one of 'points' or 'ramp'"),
        ('[[curves]]\nsensor = "ldr"\npoints = []\n', "'points' is empty"),
        ('[[curves]]\nsensor = "ldr"\npoints = [[0, 1]]\nmode = "loop"\n', "a looping curve needs at least two"),
        ('[[curves]]\nsensor = "ldr"\nramp = { from = 0, to = 1, over = 0 }\n', r"curves.0.ramp.over"),
        ('[[curves]]\nsensor = "ldr"\nramp = { from = 0, to = 1 }\n', r"curves.0.ramp.over: Field required"),
        (
            '[[curves]]\nsensor = "ldr"\npoints = [[0, 1]]\n[[curves]]\nsensor = "ldr"\npoints = [[0, 0]]\n',
            "curves 0 and 1 both drive sensor 'ldr'",
        ),
    ],
)
def test_malformed_scenarios_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_scenario(text=text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[events]]\nat = 1\ninput = "mode"\naction = "low"\n', r"<scenario>:3: events.0.input: no digital_in"),
        ('[[events]]\nat = 1\nsensor = "sonar"\nvalue = 1\n', r"<scenario>:3: events.0.sensor: no sensor named"),
        ('[[curves]]\nsensor = "pir"\npoints = [[0, 1]]\n', r"'pir' is a motion sensor \(0 or 1\): script it"),
        ('[[curves]]\nsensor = "ldr"\npoints = [[0, 1], [1, 1.5]]\n', r"<scenario>:3: curves.0.points: .*0..1; 1.5"),
        ('[[events]]\nat = 1\nsensor = "distance"\nvalue = 9\n', r"reads 0..4; 9 is out of range"),
    ],
)
def test_scenarios_that_do_not_fit_the_board_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_scenario(text=text, config=KIT)


# --- end to end through real host functions ------------------------------------------------------------------------

CAPS = {
    "led": True,
    "subscribe": ["edge"],
    "gpio": {"read": [17, 27], "write": [22], "pwm": [12], "events": [17]},
    "sensors": ["distance", "cpu_temperature"],
    "publish": ["edge"],
}
POLICY = DevicePolicy(
    gpio_read=[17, 26, 27], gpio_write=[22, 26], gpio_pwm=[12], gpio_events=[17], sensors=["*"], values=["*"]
)


def _plugin(board: GpioBoard, caps: dict[str, Any] = CAPS, wasm: bytes = ALL) -> DevicePlugin:
    manifest = {"wasm": [{"data": wasm}], "edged": {"name": "probe", "capabilities": caps}}
    return DevicePlugin(manifest, policy=POLICY, io=board, values=SharedValues(), display=DisplayInfo(8, 8))


def test_a_wasm_plugin_drives_the_emulated_board_through_host_functions(board: GpioBoard) -> None:
    p = _plugin(board).plugin
    board.mock_pin(27).drive_low()
    assert json.loads(p.call("gpio_read", '{"pin": 27}')) == {"pin": 27, "value": 0}
    assert struct.unpack("<q", p.call("gpio_read_i", bytes([17])))[0] == 1
    p.call("gpio_write", '{"pin": 22, "value": 1}')
    assert board.mock_pin(22).state == 1
    p.call("gpio_write_i", bytes([22, 0, 0]))
    assert board.mock_pin(22).state == 0
    p.call("gpio_pwm", '{"pin": 12, "duty": 0.25}')
    assert board.mock_pin(12).state == 0.25
    p.call("gpio_pwm_i", bytes([12]) + struct.pack("<H", 600))
    assert board.mock_pin(12).state == pytest.approx(0.6)
    board.set_sensor("distance", 0.42)
    reading = json.loads(p.call("sensor_read", "distance"))
    assert (reading["name"], reading["value"], reading["unit"]) == ("distance", 0.42, "m")
    board.set_sensor("cpu_temperature", 58.25)
    assert struct.unpack("<d", p.call("sensor_read_f", "cpu_temperature"))[0] == 58.25


def test_scripted_presses_reach_the_plugins_on_gpio_export_with_scenario_times(board: GpioBoard) -> None:
    wasm = probe(["edged_gpio_watch", "edged_value_set"], on_gpio=True)
    dp = _plugin(board, caps={"gpio": {"events": [17]}, "publish": ["edge"]}, wasm=wasm)
    player = ScenarioPlayer(load_scenario(HERE / "press-and-ramp.toml", config=KIT), board, start=dp.ctx.started)
    dp.plugin.call("gpio_watch", '{"pin": 17, "edges": "falling"}')
    player.advance(1.0)
    assert dp.deliver_events() == 0
    player.advance(2.5)  # press at 2.0 and release at 2.1; the plugin asked for falling edges only
    assert dp.deliver_events() == 1
    assert json.loads(dp.ctx.values.get("edge") or b"") == {"pin": 17, "edge": "falling", "t": 2.0}


def test_an_ungranted_pin_never_reaches_the_board(board: GpioBoard) -> None:
    p = _plugin(board).plugin
    with pytest.raises(CapabilityDenied, match="pin 27 is not granted for gpio.write"):
        p.call("gpio_write", '{"pin": 27, "value": 0}')
    assert board.gpio_read(27) == 1


def test_a_granted_pin_the_board_lacks_fails_the_call_with_the_boards_message(board: GpioBoard) -> None:
    p = _plugin(board, caps={**CAPS, "gpio": {"read": [26], "write": [26], "pwm": [12], "events": [17]}}).plugin
    # the plugin's call fails (a strike in the engine) with the board's message; the HardwareError is its cause
    with pytest.raises(PluginError, match="gpio_read: pin 26 is not configured in the hardware profile") as err:
        p.call("gpio_read", '{"pin": 26}')
    assert isinstance(err.value.__cause__, HardwareError)
    with pytest.raises(PluginError, match="gpio_write: pin 26 is not configured"):
        p.call("gpio_write", '{"pin": 26, "value": 1}')
    assert json.loads(p.call("display_info"))["width"] == 8  # the plugin keeps working


def _presses(n: int, every: float = 0.01) -> str:
    """A scenario pressing the button ``n`` times: 2n edges, falling at ``i * every``, rising half a step later."""
    return "".join(
        f'[[events]]\nat = {i * every:.3f}\nbutton = "mode"\naction = "press"\nhold = {every / 2:.3f}\n'
        for i in range(n)
    )


def _edge_plugin(board: GpioBoard) -> DevicePlugin:
    wasm = probe(["edged_gpio_watch", "edged_value_set"], on_gpio=True)  # on_gpio publishes each event as "edge"
    dp = _plugin(board, caps={"gpio": {"events": [17]}, "publish": ["edge"]}, wasm=wasm)
    dp.plugin.call("gpio_watch", '{"pin": 17, "edges": "both"}')
    return dp


def test_an_edge_flood_is_delivered_at_most_16_per_frame_in_order(board: GpioBoard) -> None:
    from edged.host.functions import EVENTS_PER_DELIVERY

    dp = _edge_plugin(board)
    player = ScenarioPlayer(load_scenario(text=_presses(250), config=KIT), board, start=dp.ctx.started)
    player.advance(10.0)
    assert len(dp.ctx.events) == 500 and dp.events_dropped == 0  # a burst of 500 scripted edges
    expected = [t for i in range(250) for t in (round(i * 0.01, 6), round(i * 0.01 + 0.005, 6))]
    delivered = 0
    while dp.ctx.events:
        n = dp.deliver_events()
        assert n == min(EVENTS_PER_DELIVERY, 500 - delivered)
        delivered += n
        last = json.loads(dp.ctx.values.get("edge") or b"")
        # the last one delivered is the next one in order, and the rest are still queued behind it
        assert (last["t"], last["edge"]) == (expected[delivered - 1], "falling" if delivered % 2 else "rising")
        assert len(dp.ctx.events) == 500 - delivered
    assert delivered == 500 and dp.deliver_events() == 0 and EVENTS_PER_DELIVERY == 16


def test_an_overflowing_event_queue_drops_the_oldest_and_counts_them(
    board: GpioBoard, caplog: pytest.LogCaptureFixture
) -> None:
    from edged.host.functions import EVENT_QUEUE_SIZE

    dp = _edge_plugin(board)
    player = ScenarioPlayer(load_scenario(text=_presses(600, 0.002), config=KIT), board, start=dp.ctx.started)
    player.advance(10.0)  # 1200 edges into a queue of 1024
    assert len(dp.ctx.events) == EVENT_QUEUE_SIZE == 1024 and dp.events_dropped == 1200 - 1024
    assert dp.ctx.events[0].t == round(88 * 0.002, 6)  # edges 0..175 (presses 0..87) went first
    with caplog.at_level("WARNING", logger="edged.plugin.probe"):
        assert dp.deliver_events() == 16
        assert dp.deliver_events() == 16
    assert [r.getMessage() for r in caplog.records] == ["176 GPIO events dropped: the queue of 1024 was full"]
    assert json.loads(dp.ctx.values.get("edge") or b"")["t"] == round((88 + 15) * 0.002 + 0.001, 6)


def test_frames_deliver_a_bounded_batch_of_events_first(board: GpioBoard) -> None:
    """frame() is the engine's frame path: it hands on_gpio one batch, never the whole flood."""
    from edged.host.frames import Tick

    wasm = probe(["edged_gpio_watch", "edged_value_set"], on_gpio=True)
    caps = {"led": True, "gpio": {"events": [17]}, "publish": ["edge"]}
    manifest = {"wasm": [{"data": wasm}], "edged": {"name": "probe", "kind": "animation", "capabilities": caps}}
    dp = DevicePlugin(manifest, policy=POLICY, io=board, values=SharedValues(), display=DisplayInfo(8, 8))
    dp.plugin.call("gpio_watch", '{"pin": 17, "edges": "both"}')
    player = ScenarioPlayer(load_scenario(text=_presses(250), config=KIT), board, start=dp.ctx.started)
    player.advance(10.0)
    with pytest.raises(PluginError, match="frame"):  # declared an animation, but the probe exports no frame
        dp.frame(Tick(0, 0, 0, 8, 8))
    assert len(dp.ctx.events) == 500 - 16
