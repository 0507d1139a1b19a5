"""The three SDKs (AssemblyScript, C, Zig) agree: the same PRNG sequence for a seed, the same HSV colours, the same
tick, config, GPIO-event and shared-value handling. Probe plugins in sdk_probes/ expose each helper as an export;
they are built here with plugins/build, like any plugin outside the gallery."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import extism
import pytest

from edged.host.capabilities import DevicePolicy
from edged.host.frames import Tick
from edged.host.functions import SharedValues
from edged.host.plugin import DevicePlugin
from edged.tooling.check import DryRunIO

from .helpers import GALLERY, load, tick

ROOT = Path(__file__).resolve().parents[2]
PROBES = Path(__file__).parent / "sdk_probes"
LANGS = ["as", "c", "zig"]


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("probes")
    built = {}
    for lang in LANGS:
        folder = shutil.copytree(PROBES / f"probe_{lang}", out / f"probe_{lang}")
        result = subprocess.run(
            [sys.executable, str(ROOT / "plugins" / "build"), str(folder)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        built[lang] = folder / f"probe_{lang}.wasm"
    return built


def probe(
    path: Path, config: dict[str, str] | None = None, values: SharedValues | None = None, io: DryRunIO | None = None
) -> DevicePlugin:
    caps = {"publish": ["k"], "subscribe": ["k"], "sensors": ["distance"]}
    manifest = {"wasm": [{"path": str(path)}], "edged": {"name": "probe", "capabilities": caps}}
    policy = DevicePolicy(sensors=["distance"])
    return DevicePlugin(json.dumps(manifest), policy=policy, values=values, config=config, io=io)


def call(path: Path, fn: str, data: bytes = b"", config: dict[str, str] | None = None) -> bytes:
    with probe(path, config) as p:
        return p.plugin.call(fn, data)


@pytest.mark.parametrize("seed", ["0", "1", "12345", "-7"])
def test_same_prng_sequence_in_every_language(probes: dict[str, Path], seed: str) -> None:
    outs = {lang: call(probes[lang], "rng", config={"seed": seed}) for lang in LANGS}
    assert outs["as"] == outs["c"] == outs["zig"]
    values = struct.unpack("<16I", outs["c"])
    assert len(set(values)) == 16 and 0 not in values


def test_same_hsv_colours_in_every_language(probes: dict[str, Path]) -> None:
    outs = {lang: call(probes[lang], "hsv_table") for lang in LANGS}
    assert outs["as"] == outs["c"] == outs["zig"]
    table = outs["c"]
    assert table[0:3] == bytes([180, 38, 38])  # hue 0: red at v=180; s=200 leaves 180*55/255 of the others
    assert max(table) == 180


@pytest.mark.parametrize("lang", LANGS)
def test_tick_record(probes: dict[str, Path], lang: str) -> None:
    t = Tick(123456789012, 987654321, 16666, 64, 32, True)
    frame, time_us, dt, w, h, first = struct.unpack("<QQIHHB", call(probes[lang], "tick", t.pack()))
    assert (frame, time_us, dt, w, h, first) == (123456789012, 987654321, 16666, 64, 32, 1)
    *_, first = struct.unpack("<QQIHHB", call(probes[lang], "tick", Tick(1, 2, 3, 4, 5, False).pack()))
    assert first == 0


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(
    ("config", "number", "rgb"),
    [
        ({}, -1, (1, 2, 3)),
        ({"n": "42", "c": "#10a0ff"}, 42, (0x10, 0xA0, 0xFF)),
        ({"n": "-42", "c": "10A0FF"}, -42, (0x10, 0xA0, 0xFF)),
        ({"n": "4x2", "c": "#12345"}, -1, (1, 2, 3)),
        ({"n": "", "c": "#gg0000"}, -1, (1, 2, 3)),
    ],
)
def test_config_parsing(
    probes: dict[str, Path], lang: str, config: dict[str, str], number: int, rgb: tuple[int, int, int]
) -> None:
    n, r, g, b = struct.unpack("<qBBB", call(probes[lang], "config", config=config))
    assert n == number and (r, g, b) == rgb


@pytest.mark.parametrize("lang", ["as", "zig"])
def test_gpio_event_parsing(probes: dict[str, Path], lang: str) -> None:
    for event, expected in [
        ({"pin": 17, "edge": "rising", "t": 1.5}, (17, 1)),
        ({"pin": 4, "edge": "falling", "t": 0.25}, (4, 0)),
        ({"pin": 27, "edge": "rising", "t": 12.0}, (27, 1)),
    ]:
        out = call(probes[lang], "gpio", json.dumps(event).encode())
        assert struct.unpack("<iB", out[:5]) == expected, event
        if lang == "as":  # the AssemblyScript SDK also gives the event's time
            assert struct.unpack("<d", out[5:13])[0] == event["t"]


def test_shared_values_round_trip(probes: dict[str, Path]) -> None:
    for lang in ("c", "zig"):
        values = SharedValues()
        with probe(probes[lang], values=values) as p:
            assert p.plugin.call("value", b"1.250") == b"1.250"
        assert values.get("k") == b"1.250"
    values = SharedValues()
    with probe(probes["as"], values=values) as p:
        assert struct.unpack("<d", p.plugin.call("value", b"1.250"))[0] == 1.25
        assert struct.unpack("<d", p.plugin.call("value", b"-0.5"))[0] == -0.5
        nan = struct.unpack("<d", p.plugin.call("value", b"n/a"))[0]
        assert nan != nan, "text that is not a number reads as NaN"
    assert values.get("k") == b"n/a"


def test_assemblyscript_value_text_and_sensor(probes: dict[str, Path]) -> None:
    values = SharedValues()
    with probe(probes["as"], values=values, io=DryRunIO(sensor_value=0.625)) as p:
        assert p.plugin.call("value_text") == b"<unset>"
        values.set("k", "Grüße".encode())
        assert p.plugin.call("value_text") == "Grüße".encode()
        assert struct.unpack("<d", p.plugin.call("sensor"))[0] == 0.625


@pytest.mark.parametrize("name", ["fire", "plasma"])  # C (edged.h) and Zig (edged.zig)
def test_c_and_zig_sdks_run_under_the_official_extism_host(name: str) -> None:
    """edged.h and edged.zig declare the Extism kernel themselves; the official Extism SDK runs what they build and
    gets the same frames as edged."""
    w, h = 16, 8
    config = {"seed": "3"}
    theirs = extism.Plugin({"wasm": [{"path": str(GALLERY / name / f"{name}.wasm")}], "config": config})
    ours = load(name, (w, h), config)
    for i in range(5):
        record = tick(i, w, h)
        raw = struct.pack("<QQIHHII", record.frame, record.time_us, record.dt_us, w, h, 1 if i == 0 else 0, 0)
        frame = ours.frame(record)
        assert frame is not None
        assert theirs.call("frame", raw) == frame.tobytes(), f"{name}: frame {i} differs under Extism"
