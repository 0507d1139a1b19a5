"""`edged preview` on real wasm plugins (WAT compiled by wasmtime), checked as images."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageSequence

from edged.cli import main
from tests.conftest import wat

_HEAD = """(module
  (import "extism:host/env" "input_load_u64" (func $in64 (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (func $frame_no (result i64) (call $in64 (i64.const 0)))
  (func $pixels (result i64)
    (i64.mul (i64.and (i64.shr_u (call $in64 (i64.const 16)) (i64.const 32)) (i64.const 0xffff))
             (i64.shr_u (call $in64 (i64.const 16)) (i64.const 48))))
  ;; pixel i of frame f is (f*40 mod 256, i*16 mod 256, 255 - f*40 mod 256)
  (func $draw (local $f i32) (local $n i64) (local $h i64) (local $i i64) (local $p i64)
    (local.set $f (i32.and (i32.mul (i32.wrap_i64 (call $frame_no)) (i32.const 40)) (i32.const 255)))
    (local.set $n (call $pixels))
    (local.set $h (call $alloc (i64.mul (local.get $n) (i64.const 3))))
    (block $d (loop $l (br_if $d (i64.ge_u (local.get $i) (local.get $n)))
      (local.set $p (i64.add (local.get $h) (i64.mul (local.get $i) (i64.const 3))))
      (call $store_u8 (local.get $p) (local.get $f))
      (call $store_u8 (i64.add (local.get $p) (i64.const 1))
        (i32.and (i32.mul (i32.wrap_i64 (local.get $i)) (i32.const 16)) (i32.const 255)))
      (call $store_u8 (i64.add (local.get $p) (i64.const 2)) (i32.sub (i32.const 255) (local.get $f)))
      (local.set $i (i64.add (local.get $i) (i64.const 1))) (br $l)))
    (call $output_set (local.get $h) (i64.mul (local.get $n) (i64.const 3))))
"""

ANIMATION = _HEAD + '(func (export "frame") (result i32) (call $draw) (i32.const 0)))'
DONE_AFTER_3 = (
    _HEAD + '(func (export "frame") (result i32)'
    " (if (i64.ge_u (call $frame_no) (i64.const 3)) (then (return (i32.const 0)))) (call $draw) (i32.const 0)))"
)
TRAP_AT_2 = (
    _HEAD + '(func (export "frame") (result i32)'
    " (if (i64.eq (call $frame_no) (i64.const 2)) (then unreachable)) (call $draw) (i32.const 0)))"
)
WRONG_SIZE = (
    _HEAD + '(func (export "frame") (result i32) (local $h i64)'
    " (local.set $h (call $alloc (i64.const 7))) (call $output_set (local.get $h) (i64.const 7)) (i32.const 0)))"
)


def expected(frame: int, index: int) -> tuple[int, int, int]:
    f = frame * 40 % 256
    return (f, index * 16 % 256, 255 - f)


@pytest.fixture
def plugin(tmp_path: Path):
    def make(source: str, name: str = "anim") -> Path:
        path = tmp_path / f"{name}.wasm"
        path.write_bytes(wat(source))
        return path

    return make


def test_gif(plugin, tmp_path: Path) -> None:
    out = tmp_path / "anim.gif"
    rc = main(["preview", str(plugin(ANIMATION)), "--frames", "5", "--fps", "10", "--size", "4x3", "--gif", str(out)])
    assert rc == 0
    with Image.open(out) as im:
        assert im.size == (4 * 16, 3 * 16) and im.n_frames == 5 and im.info["loop"] == 0
        for k, fr in enumerate(ImageSequence.Iterator(im)):
            assert fr.info["duration"] == 100
            rgb = fr.convert("RGB")
            for y in range(3):
                for x in range(4):
                    assert rgb.getpixel((x * 16 + 8, y * 16 + 8)) == expected(k, y * 4 + x), (k, x, y)


def test_png_is_the_last_frame(plugin, tmp_path: Path) -> None:
    out = tmp_path / "last.png"
    rc = main(["preview", str(plugin(ANIMATION)), "--frames", "4", "--size", "2x2", "--png", str(out), "--scale", "3"])
    assert rc == 0
    with Image.open(out) as im:
        assert im.size == (6, 6)
        rgb = im.convert("RGB")
        assert [rgb.getpixel((x * 3, y * 3)) for y in range(2) for x in range(2)] == [expected(3, i) for i in range(4)]


def test_profile_display_model_shows_in_the_preview(plugin, tmp_path: Path) -> None:
    out = tmp_path / "dim.png"
    # the 16x16 Pi profile runs at brightness 160 with gamma 2.8 and a 3.5 A limiter; the preview shows the LEDs
    rc = main(["preview", str(plugin(ANIMATION)), "--frames", "1", "--profile", "pi4-ws2812b-16x16", "--png", str(out)])
    assert rc == 0
    with Image.open(out) as im:
        assert im.size == (256, 256)
        # pixel 0 of frame 0 is (0, 0, 255): gamma on the LEDs and its inverse on screen leave brightness 160
        assert im.convert("RGB").getpixel((8, 8)) == (0, 0, 160)


def test_plugin_that_finishes_early(plugin, tmp_path: Path) -> None:
    out = tmp_path / "short.gif"
    rc = main(["preview", str(plugin(DONE_AFTER_3)), "--frames", "10", "--size", "2x2", "--gif", str(out)])
    assert rc == 0
    with Image.open(out) as im:
        assert im.n_frames == 3


def test_terminal_plays_frames(plugin, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["preview", str(plugin(ANIMATION)), "--frames", "2", "--fps", "500", "--size", "2x2", "--terminal"])
    assert rc == 0
    text = capsys.readouterr().out
    frames = text.split("\x1b[H")[1:]
    assert len(frames) == 2
    cells = re.findall(r"\x1b\[38;2;(\d+);(\d+);(\d+)m\x1b\[48;2;(\d+);(\d+);(\d+)m\u2580", frames[1])
    top_left = tuple(map(int, cells[0]))
    assert top_left == (*expected(1, 0), *expected(1, 2))  # upper pixel (0,0), lower pixel (0,1)


def test_plugin_trap_exits_1(plugin, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.gif"
    rc = main(["preview", str(plugin(TRAP_AT_2, "trappy")), "--frames", "5", "--size", "2x2", "--gif", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "trappy" in err and "unreachable" in err
    assert not out.exists()


def test_wrong_frame_size_exits_1(plugin, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["preview", str(plugin(WRONG_SIZE)), "--size", "2x2", "--png", str(tmp_path / "x.png")])
    assert rc == 1
    assert "frame has 7 bytes; expected 2×2×3 = 12" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--size", "0x4"], "--size expects WxH"),
        (["--size", "big"], "--size expects WxH"),
        (["--fps", "0"], "--fps"),
        (["--frames", "0"], "--frames must be at least 1"),
        (["--config", "novalue"], "--config expects K=V"),
        (["--profile", "pi9"], "no hardware profile 'pi9'"),
        (["--profile", "emulated-16x16:side"], "has no display 'side'"),
    ],
)
def test_bad_usage_exits_2(plugin, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra, message) -> None:
    rc = main(["preview", str(plugin(ANIMATION)), "--png", str(tmp_path / "x.png"), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_unloadable_plugins_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = str(tmp_path / "x.png")
    assert main(["preview", str(tmp_path / "missing.wasm"), "--png", png]) == 2
    assert "no such plugin file" in capsys.readouterr().err
    garbage = tmp_path / "garbage.wasm"
    garbage.write_bytes(b"\x00asm garbage")
    assert main(["preview", str(garbage), "--png", png]) == 2
    assert "invalid WebAssembly module" in capsys.readouterr().err


def test_plugin_asking_for_gpio_is_refused(plugin, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wasm = plugin(ANIMATION)
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps(
            {
                "wasm": [{"path": str(wasm)}],
                "edged": {"name": "greedy", "capabilities": {"led": True, "gpio": {"write": [17]}}},
            }
        )
    )
    assert main(["preview", str(manifest), "--png", str(tmp_path / "x.png")]) == 2
    assert "gpio.write pin 17" in capsys.readouterr().err


CONFIG_ECHO = """(module
  (import "extism:host/env" "input_load_u64" (func $in64 (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "load_u8" (func $load_u8 (param i64) (result i32)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  ;; the first byte of config value `key` (a 4-letter key), or 0 when it is missing
  (func $first (param $a i32) (param $b i32) (param $c i32) (param $d i32) (result i32) (local $k i64) (local $v i64)
    (local.set $k (call $alloc (i64.const 4)))
    (call $store_u8 (local.get $k) (local.get $a))
    (call $store_u8 (i64.add (local.get $k) (i64.const 1)) (local.get $b))
    (call $store_u8 (i64.add (local.get $k) (i64.const 2)) (local.get $c))
    (call $store_u8 (i64.add (local.get $k) (i64.const 3)) (local.get $d))
    (local.set $v (call $config_get (local.get $k)))
    (if (result i32) (i64.eqz (local.get $v)) (then (i32.const 0)) (else (call $load_u8 (local.get $v)))))
  ;; a 1x1 frame: red = the first byte of config `seed`, green = that of `tint`, blue = 0
  (func (export "frame") (result i32) (local $h i64)
    (local.set $h (call $alloc (i64.const 3)))
    (call $store_u8 (local.get $h) (call $first (i32.const 115) (i32.const 101) (i32.const 101) (i32.const 100)))
    (call $store_u8 (i64.add (local.get $h) (i64.const 1))
      (call $first (i32.const 116) (i32.const 105) (i32.const 110) (i32.const 116)))
    (call $output_set (local.get $h) (i64.const 3)) (i32.const 0)))
"""


def test_seed_and_config_reach_the_plugin(plugin, tmp_path: Path) -> None:
    out = tmp_path / "s.png"
    args = ["preview", str(plugin(CONFIG_ECHO)), "--size", "1x1", "--frames", "1", "--scale", "1", "--png", str(out)]
    assert main([*args, "--seed", "7", "-c", "tint=A"]) == 0
    with Image.open(out) as im:
        assert im.convert("RGB").getpixel((0, 0)) == (ord("7"), ord("A"), 0)
    assert main(args) == 0
    with Image.open(out) as im:
        assert im.convert("RGB").getpixel((0, 0)) == (0, 0, 0)


def test_console_script_end_to_end(plugin, tmp_path: Path) -> None:
    out = tmp_path / "e2e.gif"
    proc = subprocess.run(
        [sys.executable, "-m", "edged", "preview", str(plugin(ANIMATION)), "-n", "3", "--gif", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as im:
        assert im.n_frames == 3 and im.size == (256, 256)


# --- an emulated board from the profile, scripted by a scenario -----------------------------------------------------

BUTTON_LAMP = """(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/user" "edged_gpio_read_i" (func $gpio_read (param i32) (result i32)))
  (memory (export "memory") 1)
  ;; a 1x1 frame: white while the pulled-up button on GPIO 17 reads low (pressed), black otherwise
  (func (export "frame") (result i32) (local $h i64) (local $v i32)
    (local.set $v (select (i32.const 0) (i32.const 255) (call $gpio_read (i32.const 17))))
    (local.set $h (call $alloc (i64.const 3)))
    (call $store_u8 (local.get $h) (local.get $v))
    (call $store_u8 (i64.add (local.get $h) (i64.const 1)) (local.get $v))
    (call $store_u8 (i64.add (local.get $h) (i64.const 2)) (local.get $v))
    (call $output_set (local.get $h) (i64.const 3)) (i32.const 0)))
"""

KIT = """name = "kit"
[displays.main.display]
width = 1
height = 1
color_order = "RGB"
[gpio.button]
type = "button"
pin = 17
"""


@pytest.fixture
def lamp(tmp_path: Path, plugin) -> tuple[Path, Path]:
    wasm = plugin(BUTTON_LAMP, "lamp")
    manifest = tmp_path / "lamp.json"
    manifest.write_text(
        json.dumps(
            {
                "wasm": [{"path": str(wasm)}],
                "edged": {"name": "lamp", "capabilities": {"led": True, "gpio": {"read": [17]}}},
            }
        )
    )
    profile = tmp_path / "kit.toml"
    profile.write_text(KIT)
    return manifest, profile


@pytest.mark.parametrize(("frames", "lit"), [(3, False), (4, True), (5, True), (6, False)])
def test_scenario_presses_a_button_the_plugin_reads(lamp, tmp_path: Path, frames: int, lit: bool) -> None:
    manifest, profile = lamp
    scenario = tmp_path / "press.toml"
    scenario.write_text('[[events]]\nat = 0.25\nbutton = "button"\nhold = 0.25\n')
    out = tmp_path / "lamp.png"
    args = ["preview", str(manifest), "--profile", str(profile), "--fps", "10", "--scale", "1", "--png", str(out)]
    # frame k is at k/10 s: pressed from 0.25 s (frames 3 and 4), released at 0.5 s (frame 5)
    assert main([*args, "--frames", str(frames), "--scenario", str(scenario)]) == 0
    with Image.open(out) as im:
        assert im.convert("RGB").getpixel((0, 0)) == ((255, 255, 255) if lit else (0, 0, 0))


def test_without_a_scenario_the_button_stays_up(lamp, tmp_path: Path) -> None:
    manifest, profile = lamp
    out = tmp_path / "lamp.png"
    assert main(["preview", str(manifest), "--profile", str(profile), "-n", "4", "--png", str(out)]) == 0
    with Image.open(out) as im:
        assert im.convert("RGB").getpixel((0, 0)) == (0, 0, 0)


def test_profile_grants_only_its_own_pins(lamp, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, profile = lamp
    doc = json.loads(manifest.read_text())
    doc["edged"]["capabilities"]["gpio"] = {"read": [17], "write": [17]}  # a button is not an output
    manifest.write_text(json.dumps(doc))
    assert main(["preview", str(manifest), "--profile", str(profile), "--png", str(tmp_path / "x.png")]) == 2
    assert "gpio.write pin 17" in capsys.readouterr().err


def test_scenario_errors_exit_2(lamp, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, profile = lamp
    scenario = tmp_path / "bad.toml"
    scenario.write_text('[[events]]\nat = 1\nbutton = "doorbell"\n')
    png = str(tmp_path / "x.png")
    assert main(["preview", str(manifest), "--profile", str(profile), "--scenario", str(scenario), "--png", png]) == 2
    assert "no button named 'doorbell'" in capsys.readouterr().err
    assert main(["preview", str(manifest), "--scenario", str(scenario), "--png", png]) == 2
    assert "--scenario needs a --profile" in capsys.readouterr().err


def test_long_renders_show_progress_on_stderr(plugin, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "long.png"
    assert main(["preview", str(plugin(ANIMATION)), "-n", "200", "--size", "2x2", "--png", str(out)]) == 0
    captured = capsys.readouterr()
    assert "/200 [" in captured.err and "frame" in captured.err and captured.out == ""  # a tqdm bar
    assert main(["preview", str(plugin(ANIMATION)), "-n", "20", "--size", "2x2", "--png", str(out)]) == 0
    assert "/20" not in capsys.readouterr().err  # short renders stay quiet


def _bytes_out(text: bytes) -> str:
    """WAT that copies a data segment into kernel memory and makes it the output."""
    n = len(text)
    data = "".join(f"\\{b:02x}" for b in text)
    return f"""
  (data (i32.const 0) "{data}")
  (func $out (local $h i64) (local $i i32)
    (local.set $h (call $alloc (i64.const {n})))
    (block $d (loop $l (br_if $d (i32.ge_u (local.get $i) (i32.const {n})))
      (call $store_u8 (i64.add (local.get $h) (i64.extend_i32_u (local.get $i))) (i32.load8_u (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l)))
    (call $output_set (local.get $h) (i64.const {n})))"""


MATRICKS = (
    """(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)"""
    + _bytes_out(b"[[[255,0,0,255],[0,0,255,255]]]")
    + """
  (func (export "setup") (result i32) (i32.const 0))
  (func (export "update") (result i32) (call $out) (i32.const 0)))"""
)

SENSOR_ONLY = """(module
  (memory (export "memory") 1)
  (func (export "tick") (result i32) (i32.const 0)))"""


def test_matricks_plugin_previews(plugin, tmp_path: Path) -> None:
    out = tmp_path / "m.png"
    assert main(["preview", str(plugin(MATRICKS)), "--size", "2x1", "-n", "2", "--scale", "1", "--png", str(out)]) == 0
    with Image.open(out) as im:
        # Matricks pixels are BGRA: [255,0,0,255] is blue, [0,0,255,255] red
        rgb = im.convert("RGB")
        assert rgb.getpixel((0, 0)) == (0, 0, 255) and rgb.getpixel((1, 0)) == (255, 0, 0)


def test_sensor_plugin_is_not_previewable(plugin, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preview", str(plugin(SENSOR_ONLY, "probe")), "--png", str(tmp_path / "x.png")]) == 2
    assert "probe is a sensor plugin; it does not draw frames" in capsys.readouterr().err


SERPENTINE_ECHO = """(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "load_u8" (func $load_u8 (param i64) (result i32)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "serpentine")
  ;; a 1x1 frame: green when config `serpentine` starts with 'f', red when with 't', blue when it is missing
  (func (export "frame") (result i32) (local $k i64) (local $v i64) (local $i i32) (local $h i64) (local $c i32)
    (local.set $k (call $alloc (i64.const 10)))
    (block $d (loop $l (br_if $d (i32.ge_u (local.get $i) (i32.const 10)))
      (call $store_u8 (i64.add (local.get $k) (i64.extend_i32_u (local.get $i))) (i32.load8_u (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l)))
    (local.set $v (call $config_get (local.get $k)))
    (local.set $h (call $alloc (i64.const 3)))
    (if (i64.eqz (local.get $v)) (then (call $store_u8 (i64.add (local.get $h) (i64.const 2)) (i32.const 255)))
      (else (local.set $c (call $load_u8 (local.get $v)))
        (if (i32.eq (local.get $c) (i32.const 116)) (then (call $store_u8 (local.get $h) (i32.const 255))))
        (if (i32.eq (local.get $c) (i32.const 102))
          (then (call $store_u8 (i64.add (local.get $h) (i64.const 1)) (i32.const 255))))))
    (call $output_set (local.get $h) (i64.const 3)) (i32.const 0)))
"""


@pytest.mark.parametrize("profile", [[], ["--profile", "emulated-16x16"], ["--profile", "pi4-ws2812b-16x16"]])
def test_plugins_are_told_serpentine_false_as_the_daemon_does(plugin, tmp_path: Path, profile: list[str]) -> None:
    """The pipeline maps serpentine wiring, so plugins always draw in logical coordinates: the Matricks key
    `serpentine` is "false" even on a serpentine profile (as edged/daemon/hardware.py passes it)."""
    out = tmp_path / "s.png"
    args = ["preview", str(plugin(SERPENTINE_ECHO)), "--size", "1x1", "-n", "1", "--scale", "1", "--png", str(out)]
    assert main([*args, *profile]) == 0
    with Image.open(out) as im:
        r, g, b = im.convert("RGB").getpixel((0, 0))
    assert g > 0 and r == 0 and b == 0


def test_preview_accepts_a_plugin_folder(plugin, tmp_path: Path) -> None:
    """The same lookup as the daemon's plugins_dir: NAME.manifest.json, manifest.json, then NAME.wasm."""
    folder = tmp_path / "anim"
    folder.mkdir()
    (folder / "anim.wasm").write_bytes(wat(ANIMATION))
    out = tmp_path / "f.png"
    args = ["--frames", "1", "--scale", "1", "--png", str(out)]
    assert main(["preview", str(folder), *args, "--size", "2x2"]) == 0
    with Image.open(out) as im:
        assert im.convert("RGB").getpixel((1, 0)) == expected(0, 1)
    args += ["--size", "1x1"]
    # a manifest beside it wins (and is used: its config reaches the plugin)
    (folder / "config.wasm").write_bytes(wat(CONFIG_ECHO))
    manifest = {"wasm": [{"path": "config.wasm"}], "config": {"seed": "9"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert main(["preview", str(folder), *args]) == 0
    with Image.open(out) as im:
        assert im.convert("RGB").getpixel((0, 0)) == (ord("9"), 0, 0)
    (folder / "anim.manifest.json").write_text(json.dumps({**manifest, "config": {"seed": "5"}}))
    assert main(["preview", str(folder), *args]) == 0
    with Image.open(out) as im:
        assert im.convert("RGB").getpixel((0, 0)) == (ord("5"), 0, 0)


def test_gallery_plugin_folder_previews(tmp_path: Path) -> None:
    gallery = Path(__file__).resolve().parents[2] / "plugins" / "gallery" / "rainbow"
    out = tmp_path / "r.png"
    assert main(["preview", str(gallery), "--frames", "2", "--size", "8x8", "--png", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (128, 128)


def test_folder_without_a_plugin_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "other.wasm").write_bytes(wat(ANIMATION))  # not named after the folder
    assert main(["preview", str(folder), "--png", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "no plugin in the folder" in err and "empty.manifest.json, manifest.json or empty.wasm" in err


def test_a_looping_frame_ends_the_preview_with_an_error_instead_of_hanging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 10, point 7: `edged preview` had no default limit and hung on a frame that loops."""
    looping = tmp_path / "loop.wasm"
    looping.write_bytes(
        wat(
            '(module (memory (export "memory") 1) (func (export "frame") (result i32) (loop $l (br $l)) (i32.const 0)))'
        )
    )
    assert main(["preview", str(looping), "--frames", "2", "--png", str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "edged preview: loop: timeout"
