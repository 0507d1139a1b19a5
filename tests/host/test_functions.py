"""edged's host functions through real wasm plugins: granted calls work, ungranted ones never touch hardware."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edged.errors import CapabilityDenied, PluginError
from edged.host import Capabilities, DevicePolicy
from edged.host.functions import SPECS, DisplayInfo, SharedValues
from edged.host.plugin import DevicePlugin
from tests.conftest import wat


class FakeIO:
    """Records every hardware access; the capability checks must stop ungranted calls before they get here."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.levels = {17: 1, 27: 0}
        self.watchers: dict[int, Callable[[int, str, float], None]] = {}

    def gpio_read(self, pin: int) -> int:
        self.calls.append(("read", pin))
        return self.levels.get(pin, 0)

    def gpio_write(self, pin: int, value: int) -> None:
        self.calls.append(("write", pin, value))

    def gpio_pwm(self, pin: int, duty: float) -> None:
        self.calls.append(("pwm", pin, duty))

    def gpio_watch(self, pin: int, callback: Callable[[int, str, float], None]) -> None:
        self.calls.append(("watch", pin))
        self.watchers[pin] = callback

    def sensor_read(self, name: str) -> tuple[float, str]:
        self.calls.append(("sensor", name))
        return {"distance": (0.42, "m"), "cpu_temperature": (51.5, "°C")}[name]


# Probes: a plugin that calls one host function per export, with its input as the (JSON or string) argument.
_ENV = """
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
"""
_HELPERS = r"""
  (memory (export "memory") 1)
  (func $out (param $h i64) (call $output_set (local.get $h) (call $length (local.get $h))))
  (func $out_i64 (param $v i64) (local $h i64)
    (local.set $h (call $alloc (i64.const 8))) (call $store_u64 (local.get $h) (local.get $v))
    (call $output_set (local.get $h) (i64.const 8)))
  ;; a copy of the input in a new block, for functions that take a handle
  (func $arg (result i64) (local $h i64) (local $i i64) (local $n i64)
    (local.set $n (call $input_length)) (local.set $h (call $alloc (local.get $n)))
    (block $d (loop $l (br_if $d (i64.ge_u (local.get $i) (local.get $n)))
      (call $store_u8 (i64.add (local.get $h) (local.get $i)) (call $input_load_u8 (local.get $i)))
      (local.set $i (i64.add (local.get $i) (i64.const 1))) (br $l)))
    (local.get $h))
  ;; raw-integer forms read their ints from the input: byte 0, then a u16 at byte 1
  (func $int0 (result i32) (call $input_load_u8 (i64.const 0)))
  (func $int1 (result i32)
    (i32.or (call $input_load_u8 (i64.const 1)) (i32.shl (call $input_load_u8 (i64.const 2)) (i32.const 8))))
"""
_EXPORTS = {
    "edged_display_info": "(call $out (call $edged_display_info))",
    "edged_time_us": "(call $out_i64 (call $edged_time_us))",
    "edged_gpio_read": "(call $out (call $edged_gpio_read (call $arg)))",
    "edged_gpio_read_i": "(call $out_i64 (i64.extend_i32_u (call $edged_gpio_read_i (call $int0))))",
    "edged_gpio_write": "(call $edged_gpio_write (call $arg))",
    "edged_gpio_write_i": "(call $edged_gpio_write_i (call $int0) (call $int1))",
    "edged_gpio_pwm": "(call $edged_gpio_pwm (call $arg))",
    "edged_gpio_pwm_i": "(call $edged_gpio_pwm_i (call $int0) (call $int1))",
    "edged_gpio_watch": "(call $edged_gpio_watch (call $arg))",
    "edged_gpio_watch_i": "(call $edged_gpio_watch_i (call $int0) (call $int1))",
    "edged_sensor_read": "(call $out (call $edged_sensor_read (call $arg)))",
    "edged_sensor_read_f": "(call $out_i64 (i64.reinterpret_f64 (call $edged_sensor_read_f (call $arg))))",
    "edged_value_set": "(call $edged_value_set (call $arg) (call $arg))",
    "edged_value_get": """(local.set $h (call $edged_value_get (call $arg)))
      (if (i64.ne (local.get $h) (i64.const 0)) (then (call $out (local.get $h))))""",
}


def probe(names: list[str], on_gpio: bool = False) -> bytes:
    """A plugin importing exactly ``names``; export X calls host function edged_X."""
    specs = {s.name: s for s in SPECS}
    imports = "\n".join(
        f'(import "extism:host/user" "{n}" (func ${n} (param {" ".join(specs[n].params)}) '
        f"{'(result ' + ' '.join(specs[n].results) + ')' if specs[n].results else ''}))"
        for n in names
    )
    exports = "\n".join(
        f'(func (export "{n.removeprefix("edged_")}") (result i32) (local $h i64) {_EXPORTS[n]} (i32.const 0))'
        for n in names
    )
    if on_gpio:  # publishes each event under the key "edge"
        exports += """
  (func (export "on_gpio") (result i32) (local $k i64) (local.set $k (call $alloc (i64.const 4)))
    (call $store_u8 (local.get $k) (i32.const 101))
    (call $store_u8 (i64.add (local.get $k) (i64.const 1)) (i32.const 100))
    (call $store_u8 (i64.add (local.get $k) (i64.const 2)) (i32.const 103))
    (call $store_u8 (i64.add (local.get $k) (i64.const 3)) (i32.const 101))
    (call $edged_value_set (local.get $k) (call $arg)) (i32.const 0))"""
    return wat("(module" + _ENV + imports + _HELPERS + exports + ")")


ALL = probe([s.name for s in SPECS if not s.name.startswith("matricks_")])

FULL = {
    "led": True,
    "gpio": {"read": [17, 27], "write": [22], "pwm": [12], "events": [17]},
    "sensors": ["distance"],
    "publish": ["distance"],
    "subscribe": ["distance"],
}
POLICY = DevicePolicy(gpio_read=[17, 27], gpio_write=[22], gpio_pwm=[12], gpio_events=[17], sensors=["*"])


def device(
    caps: dict[str, Any],
    io: FakeIO,
    values: SharedValues | None = None,
    policy: DevicePolicy = POLICY,
    wasm: bytes = ALL,
) -> DevicePlugin:
    manifest = {"wasm": [{"data": wasm}], "edged": {"name": "probe", "capabilities": caps}}
    return DevicePlugin(manifest, policy=policy, io=io, values=values, display=DisplayInfo(16, 8, fps=60))


def test_granted_calls_reach_the_hardware() -> None:
    io = FakeIO()
    p = device(FULL, io).plugin
    assert json.loads(p.call("display_info")) == {
        "width": 16,
        "height": 8,
        "fps": 60,
        "serpentine": False,
        "brightness": 255,
    }
    assert json.loads(p.call("gpio_read", '{"pin": 17}')) == {"pin": 17, "value": 1}
    assert struct.unpack("<q", p.call("gpio_read_i", bytes([27])))[0] == 0
    p.call("gpio_write", '{"pin": 22, "value": 1}')
    p.call("gpio_write_i", bytes([22, 0, 0]))
    p.call("gpio_pwm", '{"pin": 12, "duty": 0.25}')
    p.call("gpio_pwm_i", bytes([12]) + struct.pack("<H", 750))
    p.call("gpio_watch", '{"pin": 17, "edges": "rising"}')
    reading = json.loads(p.call("sensor_read", "distance"))
    assert (reading["name"], reading["value"], reading["unit"]) == ("distance", 0.42, "m")
    assert struct.unpack("<d", p.call("sensor_read_f", "distance"))[0] == 0.42
    assert struct.unpack("<q", p.call("time_us"))[0] >= 0
    assert io.calls == [
        ("read", 17),
        ("read", 27),
        ("write", 22, 1),
        ("write", 22, 0),
        ("pwm", 12, 0.25),
        ("pwm", 12, 0.75),
        ("watch", 17),
        ("sensor", "distance"),
        ("sensor", "distance"),
    ]


@pytest.mark.parametrize(
    ("export", "arg", "message"),
    [
        ("gpio_read", '{"pin": 22}', r"pin 22 is not granted for gpio.read \(granted: \[17, 27\]\)"),
        ("gpio_read_i", bytes([5]), "pin 5 is not granted for gpio.read"),
        ("gpio_write", '{"pin": 17, "value": 1}', "pin 17 is not granted for gpio.write"),
        ("gpio_write_i", bytes([18, 1, 0]), "pin 18 is not granted for gpio.write"),
        ("gpio_pwm", '{"pin": 22, "duty": 0.5}', "pin 22 is not granted for gpio.pwm"),
        ("gpio_pwm_i", bytes([13, 1, 0]), "pin 13 is not granted for gpio.pwm"),
        ("gpio_watch", '{"pin": 27}', "pin 27 is not granted for gpio.events"),
        ("sensor_read", "cpu_temperature", "sensor 'cpu_temperature' is not granted"),
        ("value_set", "other", "value 'other' is not granted for publish"),
        ("value_get", "other", "value 'other' is not granted for subscribe"),
    ],
)
def test_ungranted_pins_and_names_fail_the_call_and_touch_nothing(export: str, arg: Any, message: str) -> None:
    io = FakeIO()
    dp = device(FULL, io)
    with pytest.raises(CapabilityDenied, match=message):
        dp.plugin.call(export, arg)
    assert io.calls == []
    assert dp.plugin.call("display_info")  # the plugin keeps working


@pytest.mark.parametrize(
    ("export", "arg", "message"),
    [
        ("gpio_write", "not json", "argument is not JSON"),
        ("gpio_write", "[1, 2]", "must be a JSON object"),
        ("gpio_write", '{"pin": "22", "value": 1}', "'pin' must be an integer"),
        ("gpio_pwm", '{"pin": 12, "duty": 1.5}', "duty must be a number from 0 to 1"),
        ("gpio_pwm", '{"pin": 12, "duty": -0.1}', "duty must be a number from 0 to 1"),
        ("gpio_pwm_i", bytes([12]) + struct.pack("<H", 1001), "duty must be 0-1000"),
        ("gpio_watch", '{"pin": 17, "edges": "sideways"}', "edges must be"),
        ("gpio_watch_i", bytes([17, 9, 0]), "edges must be 1"),
    ],
)
def test_malformed_arguments_are_plugin_errors(export: str, arg: Any, message: str) -> None:
    io = FakeIO()
    with pytest.raises(PluginError, match=message):
        device(FULL, io).plugin.call(export, arg)
    assert io.calls == []


GATED = [s for s in SPECS if s.capability is not None]


def _all_but(capability: str) -> dict[str, Any]:
    """FULL without one capability (``led``, ``gpio.read``, ``sensors``, ...)."""
    caps = json.loads(json.dumps(FULL))
    group, _, direction = capability.partition(".")
    if direction:
        caps[group][direction] = []
    else:
        caps[group] = False if group == "led" else []
    return caps


def test_every_host_function_but_the_clock_and_logs_is_gated() -> None:
    assert len(GATED) == 13  # the 14 edged_* functions but edged_time_us
    assert {s.name for s in SPECS if s.capability is None} == {
        "edged_time_us",
        "matricks_debug",
        "matricks_info",
        "matricks_warn",
        "matricks_error",
    }


@pytest.mark.parametrize("spec", GATED, ids=lambda s: s.name)
def test_importing_an_ungranted_function_fails_to_load_naming_both(spec: Any) -> None:
    """For every capability-gated host function: granted everything but its capability, importing it fails."""
    wasm = probe([spec.name])
    with pytest.raises(
        CapabilityDenied,
        match=f"^probe: imports extism:host/user::{spec.name}, which needs the '{spec.capability}' capability",
    ):
        device(_all_but(spec.capability), FakeIO(), wasm=wasm)
    assert device(FULL, FakeIO(), wasm=wasm).plugin.function_exists(spec.name.removeprefix("edged_"))


def test_asking_for_more_than_the_policy_allows_fails_to_load() -> None:
    caps = {**FULL, "gpio": {"read": [17], "write": [18]}}
    with pytest.raises(CapabilityDenied, match=r"does not allow: gpio.write pin 18 \(reserved by the device\)"):
        device(caps, FakeIO())
    with pytest.raises(CapabilityDenied, match="does not allow: .*sensor 'distance'"):
        device(
            FULL, FakeIO(), policy=DevicePolicy(gpio_read=[17, 27], gpio_write=[22], gpio_pwm=[12], gpio_events=[17])
        )


def test_wasi_and_http_stay_off_unless_granted() -> None:
    wasi = wat(
        '(module (import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32)))'
        ' (memory (export "memory") 1) (func (export "frame") (result i32) (i32.const 0)))'
    )
    manifest = {"wasm": [{"data": wasi}], "edged": {"name": "w", "capabilities": {"led": True}}}
    with pytest.raises(PluginError, match="WASI is not enabled"):
        DevicePlugin(manifest, policy=DevicePolicy(wasi=True))
    with pytest.raises(CapabilityDenied, match="does not allow: wasi"):
        DevicePlugin({**manifest, "edged": {"name": "w", "capabilities": {"led": True, "wasi": True}}})
    ok = DevicePlugin(
        {**manifest, "edged": {"name": "w", "capabilities": {"led": True, "wasi": True}}},
        policy=DevicePolicy(wasi=True),
    )
    assert ok.grant.wasi
    http = {"wasm": [{"data": ALL}], "allowed_hosts": ["*"], "edged": {"name": "h", "capabilities": FULL}}
    assert DevicePlugin(http, policy=POLICY, io=FakeIO()).plugin.compiled.manifest.allowed_hosts is None


def test_shared_values_flow_from_a_sensor_plugin_to_an_animation() -> None:
    values = SharedValues()
    sensor = device({"publish": ["distance"]}, FakeIO(), values, wasm=probe(["edged_value_set"]))
    display = device({"led": True, "subscribe": ["distance"]}, FakeIO(), values, wasm=probe(["edged_value_get"]))
    assert display.plugin.call("value_get", "distance") == b""
    sensor.plugin.call("value_set", "distance")  # key and value are both the input
    assert display.plugin.call("value_get", "distance") == b"distance"


def test_gpio_events_are_queued_and_delivered_on_the_callers_thread() -> None:
    io = FakeIO()
    values = SharedValues()
    wasm = probe(["edged_gpio_watch", "edged_value_set"], on_gpio=True)
    dp = device({"gpio": {"events": [17]}, "publish": ["edge"]}, io, values, wasm=wasm)
    dp.plugin.call("gpio_watch", '{"pin": 17, "edges": "rising"}')
    io.watchers[17](17, "rising", dp.ctx.started + 1.5)
    io.watchers[17](17, "falling", dp.ctx.started + 1.6)  # filtered: only rising edges were asked for
    assert len(dp.ctx.events) == 1 and values.get("edge") is None  # queued, not delivered on the io thread
    assert dp.deliver_events() == 1
    assert json.loads(values.get("edge") or b"") == {"pin": 17, "edge": "rising", "t": 1.5}
    assert dp.deliver_events() == 0
    # watching again replaces the edges: now falling only, with one board callback still
    dp.plugin.call("gpio_watch", '{"pin": 17, "edges": "falling"}')
    io.watchers[17](17, "rising", dp.ctx.started + 2.0)
    io.watchers[17](17, "falling", dp.ctx.started + 2.1)
    assert [e.edge for e in dp.ctx.events] == ["falling"]


def test_legacy_grant_for_plugins_without_a_manifest() -> None:
    dp = DevicePlugin(probe(["edged_display_info"]), io=FakeIO(), display=DisplayInfo(4, 4))
    assert dp.grant == Capabilities(led=True, wasi=True)
    assert json.loads(dp.plugin.call("display_info"))["width"] == 4
    with pytest.raises(CapabilityDenied, match="edged_gpio_read, which needs the 'gpio.read' capability"):
        DevicePlugin(probe(["edged_gpio_read"]), io=FakeIO())


def test_hardware_errors_fail_the_call_not_the_caller() -> None:
    """A pin the policy grants but the board does not have is the plugin call's failure (a strike in the engine),
    never an exception that escapes the frame loop."""
    from edged.hardware.gpio import GpioBoard, GpioConfig

    board = GpioBoard(GpioConfig.model_validate({"gpio": {"led": {"type": "digital_out", "pin": 22}}}), emulated=True)
    with board:
        p = DevicePlugin(
            {"wasm": [{"data": ALL}], "edged": {"name": "probe", "capabilities": FULL}},
            policy=POLICY,
            io=board,
            display=DisplayInfo(16, 8),
        ).plugin
        with pytest.raises(PluginError, match="^edged_gpio_read: ") as err:
            p.call("gpio_read", '{"pin": 17}')
        assert not isinstance(err.value, CapabilityDenied)
        p.call("gpio_write", '{"pin": 22, "value": 1}')
        assert board.gpio_read(22) == 1


# kitchen.wasm imports three test host functions (extism:host/user reflect, hello, add); DevicePlugin offers only
# edged's, so a linked module under that name provides them
_KITCHEN_USER = wat(
    """(module
  (func (export "reflect") (param i64) (result i64) (local.get 0))
  (func (export "hello") (param i64) (result i64) (local.get 0))
  (func (export "add") (param i64 i64) (result i64) (i64.add (local.get 0) (local.get 1))))"""
)


@pytest.mark.parametrize("max_var_bytes", [None, 64 * 1024 * 1024], ids=["kernel-vars", "host-vars"])
def test_restart_starts_a_fresh_instance_without_vars(built_plugin, max_var_bytes: int | None) -> None:
    """Each playlist play and each quarantine restart calls restart(): state kept in a var must not survive it
    (whether the kernel or, for a budget too big to reserve in wasm, the host serves the vars)."""
    manifest = {
        "wasm": [{"data": _KITCHEN_USER, "name": "extism:host/user"}, {"path": str(built_plugin("kitchen"))}],
        "memory": {"max_var_bytes": max_var_bytes},
        "edged": {"name": "kitchen", "capabilities": {}},
    }
    with DevicePlugin(manifest) as dp:
        assert [dp.plugin.call("counter") for _ in range(3)] == [b"1", b"2", b"3"]
        dp.plugin.close()  # a plain close keeps the vars (the runtime's contract)
        assert dp.plugin.call("counter") == b"4"
        dp.restart()
        assert dp.plugin.vars == {}
        assert [dp.plugin.call("counter") for _ in range(2)] == [b"1", b"2"]
        dp.restart()
        dp.restart()  # twice in a row, with no instance in between
        assert dp.plugin.call("counter") == b"1"


_FRAME = '(func (export "frame") (result i32) (i32.const 0))'
_UPDATE = '(func (export "update") (result i32) (i32.const 0))'
_TICK = '(func (export "tick") (result i32) (i32.const 0))'


def _module(*exports: str) -> bytes:
    return wat('(module (memory (export "memory") 1) ' + " ".join(exports) + ")")


@pytest.mark.parametrize(
    ("kind", "exports", "drawing"),
    [
        ("animation", [_FRAME], "animation"),
        ("matricks", [_UPDATE], "matricks"),
        (None, [_FRAME], "animation"),  # not declared: the exports say it draws
        (None, [_UPDATE], "matricks"),
        ("animation", [_TICK], "animation"),  # declared: the declaration counts
    ],
)
def test_a_drawing_plugin_without_the_led_capability_fails_to_load(
    kind: str | None, exports: list[str], drawing: str
) -> None:
    edged: dict[str, Any] = {"name": "painter", "capabilities": {"gpio": {"read": [17]}}}
    if kind:
        edged["kind"] = kind
    manifest = {"wasm": [{"data": _module(*exports)}], "edged": edged}
    with pytest.raises(
        CapabilityDenied, match=f"^painter: {drawing} plugins draw on the display, which needs the 'led'"
    ):
        DevicePlugin(manifest, policy=POLICY, io=FakeIO(), display=DisplayInfo(2, 2))
    # asking for it is enough (the policy allows drawing by default)
    edged["capabilities"] = {"led": True, "gpio": {"read": [17]}}
    assert DevicePlugin(manifest, policy=POLICY, io=FakeIO(), display=DisplayInfo(2, 2)).grant.led


def test_the_led_gate_spares_plugins_that_do_not_draw_and_legacy_plugins() -> None:
    sensor = {"wasm": [{"data": _module(_TICK)}], "edged": {"name": "s", "capabilities": {"publish": ["x"]}}}
    assert not DevicePlugin(sensor, policy=POLICY).grant.led  # its exports say it does not draw
    declared = {**sensor, "edged": {"name": "s", "kind": "sensor", "capabilities": {}}}
    assert DevicePlugin(declared, policy=POLICY).kind == "sensor"
    service = {"wasm": [{"data": _module(_FRAME)}], "edged": {"name": "s", "kind": "service"}}
    assert not DevicePlugin(service, policy=POLICY).grant.led
    # without an edged block: the policy's legacy grant, which includes drawing
    legacy = DevicePlugin({"wasm": [{"data": _module(_FRAME)}]}, display=DisplayInfo(2, 2))
    assert legacy.grant.led and legacy.kind == "animation"
    with pytest.raises(CapabilityDenied, match="the device policy does not allow: led"):
        DevicePlugin(
            {"wasm": [{"data": _module(_FRAME)}], "edged": {"name": "p", "capabilities": {"led": True}}},
            policy=DevicePolicy(led=False),
        )


def _manifests() -> list[Path]:
    root = Path(__file__).resolve().parents[2]
    found = [*(root / "plugins" / "gallery").glob("*/manifest.json")]
    found += [p for p in (root / "tests").rglob("*.json") if "node_modules" not in p.parts]
    return sorted(p for p in found if "edged" in json.loads(p.read_text()))


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_manifest_passes_the_led_gate(path: Path) -> None:
    """Gallery and test manifests: a drawing plugin asks for 'led' (checked without instantiating; the templates
    are checked by `edged plugin new` + `check` in tests/cli)."""
    from edged.host.plugin import drawing_kind
    from edged.runtime import Manifest, default_cache, read_module

    manifest = Manifest.model_validate(json.loads(path.read_text()))
    caps = Capabilities.from_manifest_block(manifest.edged.capabilities if manifest.edged else None)
    src = dict(manifest.modules())["main"]
    module = default_cache().load(read_module(src, path.parent, allow_urls=False))
    exports = {e.name for e in module.exports}
    assert drawing_kind(manifest.edged, exports) is None or caps.led


def test_plugin_check_reports_the_missing_led_capability_as_a_problem(tmp_path: Path) -> None:
    """`edged plugin check` agrees with the device: a drawing plugin without 'led' would not load, so it fails."""
    from edged.tooling.check import check_plugin

    gallery = Path(__file__).resolve().parents[2] / "plugins" / "gallery" / "rainbow"
    doc = json.loads((gallery / "manifest.json").read_text())
    doc["wasm"] = [{"path": str(gallery / "rainbow.wasm")}]
    doc["edged"]["capabilities"] = {}
    path = tmp_path / "rainbow.manifest.json"
    path.write_text(json.dumps(doc))
    report = check_plugin(path)
    assert report.problems == [
        "animation plugins draw on the display, which needs the 'led' capability; the manifest does not ask for it "
        '(add "led": true to edged.capabilities)'
    ]
    doc["edged"]["capabilities"] = {"led": True}
    path.write_text(json.dumps(doc))
    assert check_plugin(path).problems == []


def _matricks_logger(namespace: str) -> bytes:
    """Export ``log`` calls matricks_debug/info/warn/error (imported from ``namespace``) with "<level> from wasm"."""
    levels = ("debug", "info", "warn", "error")
    imports = "\n".join(f'(import "{namespace}" "matricks_{lvl}" (func $m_{lvl} (param i64)))' for lvl in levels)
    data = "\n".join(f'(data (i32.const {i * 32}) "{lvl} from wasm")' for i, lvl in enumerate(levels))
    calls = "\n".join(
        f"(call $m_{lvl} (call $text (i32.const {i * 32}) (i32.const {len(lvl) + 10})))" for i, lvl in enumerate(levels)
    )
    return wat(
        f"""(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  {imports}
  (memory (export "memory") 1)
  {data}
  ;; copy n bytes of this module's memory at p into a new Extism block
  (func $text (param $p i32) (param $n i32) (result i64) (local $h i64) (local $i i32)
    (local.set $h (call $alloc (i64.extend_i32_u (local.get $n))))
    (block $d (loop $l (br_if $d (i32.ge_u (local.get $i) (local.get $n)))
      (call $store_u8 (i64.add (local.get $h) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $p) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l)))
    (local.get $h))
  (func (export "log") (result i32) {calls} (i32.const 0)))"""
    )


@pytest.mark.parametrize("namespace", ["env", "extism:host/user"])
@pytest.mark.parametrize("with_manifest", [False, True], ids=["legacy", "edged-block"])
def test_matricks_log_functions_reach_the_plugins_logger(
    namespace: str, with_manifest: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The four matricks_* functions, in both namespaces, need no capability and log at their own levels."""
    wasm = _matricks_logger(namespace)
    source: Any = {"wasm": [{"data": wasm}], "edged": {"name": "mlog", "kind": "service"}} if with_manifest else wasm
    dp = DevicePlugin(source, name="mlog")
    with caplog.at_level("DEBUG", logger="edged.plugin.mlog"):
        dp.plugin.call("log")
    got = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name == "edged.plugin.mlog"]
    assert got == [
        ("edged.plugin.mlog", "DEBUG", "debug from wasm"),
        ("edged.plugin.mlog", "INFO", "info from wasm"),
        ("edged.plugin.mlog", "WARNING", "warn from wasm"),
        ("edged.plugin.mlog", "ERROR", "error from wasm"),
    ]


@pytest.fixture
def http_server() -> Any:
    """A local HTTP server that answers GET with "hello edged" and records every request it receives."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append(self.path)
            body = b"hello edged"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _kitchen(built_plugin: Any, caps: dict[str, Any], allowed_hosts: list[str] | None) -> dict[str, Any]:
    return {
        "wasm": [{"data": _KITCHEN_USER, "name": "extism:host/user"}, {"path": str(built_plugin("kitchen"))}],
        "allowed_hosts": allowed_hosts,
        "edged": {"name": "kitchen", "kind": "service", "capabilities": caps},
    }


def test_http_request_needs_the_http_capability(built_plugin: Any, http_server: Any) -> None:
    """Extism's http_request (kitchen's http_get) is refused without 'http', even with allowed_hosts in the manifest;
    the server never hears of it. With 'http' granted it reaches the manifest's allowed_hosts, and only those."""
    url, received = http_server
    open_policy = DevicePolicy(http=True)
    for caps, policy in (({}, open_policy), ({}, DevicePolicy())):
        dp = DevicePlugin(_kitchen(built_plugin, caps, ["127.0.0.1"]), policy=policy)
        with pytest.raises(PluginError, match=f"HTTP request to {url}/denied is not allowed"):
            dp.plugin.call("http_get", f"{url}/denied")
    assert received == []
    with pytest.raises(CapabilityDenied, match="does not allow: http"):  # the policy decides what may be granted
        DevicePlugin(_kitchen(built_plugin, {"http": True}, ["127.0.0.1"]), policy=DevicePolicy())
    granted = DevicePlugin(_kitchen(built_plugin, {"http": True}, ["127.0.0.1"]), policy=open_policy)
    assert granted.plugin.call("http_get", f"{url}/granted") == b"hello edged"
    assert received == ["/granted"]
    elsewhere = DevicePlugin(_kitchen(built_plugin, {"http": True}, ["example.invalid"]), policy=open_policy)
    with pytest.raises(PluginError, match="is not allowed"):
        elsewhere.plugin.call("http_get", f"{url}/elsewhere")
    assert received == ["/granted"]


_BUSY_ON_GPIO = """(module
  (import "extism:host/env" "input_load_u64" (func $in64 (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  ;; each edge event costs a fixed amount of work
  (func (export "on_gpio") (result i32) (local $i i32)
    (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 20000))))
    (i32.const 0))
  (func (export "frame") (result i32) (local $n i64)
    (local.set $n (i64.mul (i64.mul (i64.and (i64.shr_u (call $in64 (i64.const 16)) (i64.const 32)) (i64.const 0xffff))
                                    (i64.shr_u (call $in64 (i64.const 16)) (i64.const 48))) (i64.const 3)))
    (call $output_set (call $alloc (local.get $n)) (local.get $n))
    (i32.const 0)))"""


def test_gpio_deliveries_share_the_frames_fuel_budget() -> None:
    """A flood of edges cannot buy a frame more than one budget: on_gpio calls and the frame draw from one fuel
    budget, and a frame whose events used it up fails (a strike in the engine) instead of running on."""
    from edged.engine.clock import FakeClock
    from edged.engine.supervisor import Budget, Supervised
    from edged.host.frames import Tick
    from edged.host.functions import GpioEvent

    manifest = {
        "wasm": [{"data": wat(_BUSY_ON_GPIO)}],
        "edged": {"name": "busy", "capabilities": {"led": True, "gpio": {"events": [17]}}},
    }
    plugin = DevicePlugin(manifest, policy=POLICY, display=DisplayInfo(4, 4))
    slot = Supervised(plugin, Budget(ms=1.0, fuel=500_000, deadline_ms=1000), FakeClock())
    tick = Tick(0, 0, 0, 4, 4, True)
    assert slot.frame(tick) is not None  # no events: the frame alone is cheap
    for _ in range(3):
        plugin.ctx.queue_event(GpioEvent(17, "rising", 0.0))
    assert slot.frame(tick) is not None
    few = plugin.last_fuel_used
    assert few is not None and 3 * 20_000 < few < 500_000  # the three deliveries are counted in the frame's fuel
    for _ in range(16):
        plugin.ctx.queue_event(GpioEvent(17, "rising", 0.0))
    slot.frame(tick)  # 16 deliveries at ~60-80k fuel each exceed one budget of 500k
    assert slot.stats.errors == {"OutOfFuel": 1}
    assert plugin.plugin.fuel == 500_000  # the per-call limit is back for the next frame


def test_restart_drops_edges_queued_for_the_old_instance() -> None:
    from edged.host.functions import GpioEvent

    manifest = {
        "wasm": [{"data": wat(_BUSY_ON_GPIO)}],
        "edged": {"name": "busy", "capabilities": {"led": True, "gpio": {"events": [17]}}},
    }
    plugin = DevicePlugin(manifest, policy=POLICY, display=DisplayInfo(4, 4))
    for _ in range(5):
        plugin.ctx.queue_event(GpioEvent(17, "falling", 0.0))
    plugin.restart()
    assert plugin.deliver_events() == 0  # a new play does not get the previous play's button presses
    plugin.ctx.queue_event(GpioEvent(17, "rising", 1.0))
    assert plugin.deliver_events() == 1


@pytest.mark.parametrize(
    ("exports", "kind"), [([_UPDATE], "matricks"), ([_TICK], "sensor"), ([_FRAME], "animation"), ([], "service")]
)
def test_an_undeclared_kind_comes_from_the_exports(exports: list[str], kind: str) -> None:
    caps = {"led": True} if kind in ("animation", "matricks") else {}
    manifest = {"wasm": [{"data": _module(*exports)}], "edged": {"name": "k", "capabilities": caps}}
    assert DevicePlugin(manifest, policy=POLICY, display=DisplayInfo(2, 2)).kind == kind
