"""``edged plugin new`` and ``edged plugin check``: scaffolds that build and pass, and a failure per kind of bad
plugin, manifest or usage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest
import wasmtime

from edged.cli import main
from edged.tooling import build_hint, default_templates_dir

ROOT = Path(__file__).resolve().parents[2]
GALLERY = ROOT / "plugins" / "gallery"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plugin", *args])
    out, err = capsys.readouterr()
    return code, out, err


def gallery_manifest(tmp_path: Path, name: str, **edits: object) -> Path:
    """A copy of a gallery plugin's manifest pointing at its built module, with edits to the edged block."""
    doc = json.loads((GALLERY / name / "manifest.json").read_text())
    doc["wasm"] = [{"path": str(GALLERY / name / f"{name}.wasm")}]
    doc["edged"].update(edits)
    path = tmp_path / f"{name}.manifest.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("lang", ["as", "c", "zig"])
def test_new_plugin_builds_and_passes_check(tmp_path: Path, capsys: pytest.CaptureFixture[str], lang: str) -> None:
    name = f"hello_{lang}"
    code, out, _ = run(capsys, "new", name, "--lang", lang, "--dir", str(tmp_path))
    assert code == 0
    folder = tmp_path / name
    source = folder / f"{name}.{ {'as': 'ts', 'c': 'c', 'zig': 'zig'}[lang] }"
    assert source.is_file() and (folder / "manifest.json").is_file()
    assert str(source) in out
    assert (
        "__NAME__" not in source.read_text()
        and json.loads((folder / "manifest.json").read_text())["edged"]["name"] == name
    )
    build = subprocess.run(
        [sys.executable, str(ROOT / "plugins" / "build"), str(folder)], capture_output=True, text=True, cwd=tmp_path
    )
    assert build.returncode == 0, build.stderr
    assert (folder / f"{name}.wasm").is_file()
    for size in ("16x16", "64x64", "256x256"):  # the templates' budgets cover the largest display the SDKs draw
        code, out, _ = run(capsys, "check", str(folder), "--frames", "30", "--size", size)
        assert code == 0, out
        assert out.rstrip().endswith("PASS")
        assert "fuel p50" in out and "ms p50" in out and "budget" in out
    # and it previews without edits, through edged preview
    png = tmp_path / f"{name}.png"
    assert main(["preview", str(folder / "manifest.json"), "--png", str(png), "--frames", "5", "--size", "16x16"]) == 0
    assert png.stat().st_size > 0


def test_new_refuses_to_overwrite_and_bad_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "new", "one", "--lang", "c", "--dir", str(tmp_path))[0] == 0
    code, _, err = run(capsys, "new", "one", "--lang", "c", "--dir", str(tmp_path))
    assert code == 2 and "already exists" in err
    code, _, err = run(capsys, "new", "Bad-Name", "--lang", "c", "--dir", str(tmp_path))
    assert code == 2 and "invalid plugin name" in err
    code, _, err = run(capsys, "new", "two\n", "--lang", "c", "--dir", str(tmp_path))  # a full match, not `$`
    assert code == 2 and "invalid plugin name" in err and not (tmp_path / "two\n").exists()
    with pytest.raises(SystemExit) as exc:
        main(["plugin", "new", "two", "--lang", "rust", "--dir", str(tmp_path)])
    assert exc.value.code == 2


GALLERY_NAMES = sorted(p.name for p in GALLERY.iterdir() if (p / "manifest.json").is_file())


def test_the_gallery_has_twelve_plugins() -> None:
    assert len(GALLERY_NAMES) == 12, GALLERY_NAMES


@pytest.mark.parametrize("size", ["16x16", "256x256"])
@pytest.mark.parametrize("name", GALLERY_NAMES)
def test_gallery_plugins_pass(capsys: pytest.CaptureFixture[str], name: str, size: str) -> None:
    """Every gallery plugin passes check, at the smallest display and at the largest the SDKs draw."""
    code, out, _ = run(capsys, "check", str(GALLERY / name), "--frames", "10", "--size", size)
    assert code == 0, out
    assert f"plugin:   {name}" in out
    assert out.rstrip().endswith("PASS")


def test_a_wasm_checked_against_a_given_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    wasm = GALLERY / "clock" / "clock.wasm"
    code, out, _ = run(capsys, "check", str(wasm), "--manifest", str(GALLERY / "clock" / "manifest.json"))
    assert code == 0, out


# --- failures: exit 1, with a message that names the problem ----------------------------------------------------


def test_manifest_with_an_unknown_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = gallery_manifest(tmp_path, "rainbow", colour="red")
    code, out, _ = run(capsys, "check", str(path))
    assert code == 1 and "colour" in out and "FAIL" in out


def test_bad_capabilities_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = gallery_manifest(tmp_path, "rainbow", capabilities={"led": True, "gpio": {"write": [99]}})
    code, out, _ = run(capsys, "check", str(path))
    assert code == 1 and "edged.capabilities.gpio.write" in out


def test_import_without_its_capability(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = gallery_manifest(tmp_path, "bar_graph", capabilities={"led": True})
    code, out, _ = run(capsys, "check", str(path))
    assert code == 1
    assert "edged_value_get" in out and "'subscribe' capability" in out


def test_wasi_import_without_wasi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = gallery_manifest(tmp_path, "clock", capabilities={"led": True})
    code, out, _ = run(capsys, "check", str(path))
    assert code == 1 and "clock_time_get" in out and "'wasi'" in out


def test_kind_without_its_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = gallery_manifest(tmp_path, "rainbow", kind="sensor")
    code, out, _ = run(capsys, "check", str(path))
    assert code == 1 and "kind 'sensor' needs the export 'tick'" in out


def test_over_the_fuel_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = gallery_manifest(tmp_path, "plasma", budget={"frame_ms": 4, "fuel": 1000})
    code, out, _ = run(capsys, "check", str(path), "--frames", "3")
    assert code == 1 and "the budget is 1,000" in out


def test_frame_budget_longer_than_the_frame_period(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = gallery_manifest(tmp_path, "rainbow", budget={"frame_ms": 50})
    code, out, _ = run(capsys, "check", str(path), "--fps", "60")
    assert code == 1 and "does not fit the frame period at 60 fps" in out
    assert run(capsys, "check", str(path), "--fps", "10")[0] == 0


def test_a_reserved_pin_cannot_run_on_a_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = gallery_manifest(tmp_path, "button_modes", capabilities={"led": True, "gpio": {"events": [18]}})
    code, out, _ = run(capsys, "check", str(path))
    assert code == 1 and "reserved" in out


def test_a_plugin_that_traps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wasm = tmp_path / "trap.wasm"
    wasm.write_bytes(wasmtime.wat2wasm('(module (func (export "frame") (result i32) unreachable))'))
    code, out, _ = run(capsys, "check", str(wasm))
    assert code == 1 and "frame 0 failed" in out
    assert "no 'edged' block" in out


def test_a_frame_of_the_wrong_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wasm = tmp_path / "short.wasm"
    wasm.write_bytes(
        wasmtime.wat2wasm(
            """(module
              (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
              (import "extism:host/env" "output_set" (func $out (param i64 i64)))
              (func (export "frame") (result i32)
                (call $out (call $alloc (i64.const 5)) (i64.const 5))
                (i32.const 0)))"""
        )
    )
    code, out, _ = run(capsys, "check", str(wasm))
    assert code == 1 and "frame has 5 bytes" in out


def test_not_a_wasm_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wasm = tmp_path / "junk.wasm"
    wasm.write_bytes(b"\0asm but not really")
    code, out, _ = run(capsys, "check", str(wasm))
    assert code == 1 and "does not load" in out


def test_an_unknown_host_function(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wasm = tmp_path / "odd.wasm"
    wasm.write_bytes(
        wasmtime.wat2wasm(
            """(module (import "extism:host/user" "edged_teleport" (func))
              (func (export "frame") (result i32) (i32.const 0)))"""
        )
    )
    code, out, _ = run(capsys, "check", str(wasm))
    assert code == 1 and "edged_teleport, which is not an edged host function" in out


def test_module_missing_before_a_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "new", "unbuilt", "--lang", "c", "--dir", str(tmp_path))[0] == 0
    code, out, _ = run(capsys, "check", str(tmp_path / "unbuilt"))
    assert code == 1 and "build the plugin first" in out


# --- usage: exit 2 ------------------------------------------------------------------------------------------------


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", str(tmp_path / "nope.wasm"))
    assert code == 2 and "no such plugin" in err
    rainbow = str(GALLERY / "rainbow")
    code, _, err = run(capsys, "check", rainbow, "--size", "16")
    assert code == 2 and "WxH" in err
    code, _, err = run(capsys, "check", rainbow, "--config", "novalue")
    assert code == 2 and "K=V" in err
    code, _, err = run(capsys, "check", rainbow, "--frames", "0")
    assert code == 2 and "frames" in err
    code, _, err = run(capsys, "check", rainbow, "--manifest", str(tmp_path / "missing.json"))
    assert code == 2 and "no such manifest" in err


def test_dry_run_reports_published_values_and_gpio_events(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", str(GALLERY / "distance_sensor"), "--frames", "3")
    assert code == 0 and "published: distance_m = '0.500'" in out
    code, out, _ = run(capsys, "check", str(GALLERY / "button_modes"), "--frames", "3")
    assert code == 0 and "on_gpio:  2 edge events delivered" in out


def test_an_on_gpio_handler_that_traps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wasm = tmp_path / "bad_button.wasm"
    wasm.write_bytes(
        wasmtime.wat2wasm(
            """(module
              (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
              (import "extism:host/env" "output_set" (func $out (param i64 i64)))
              (import "extism:host/user" "edged_gpio_watch_i" (func $watch (param i32 i32)))
              (func (export "frame") (result i32)
                (call $watch (i32.const 17) (i32.const 3))
                (call $out (call $alloc (i64.const 768)) (i64.const 768))
                (i32.const 0))
              (func (export "on_gpio") (result i32) unreachable))"""
        )
    )
    manifest = tmp_path / "manifest.json"
    caps = {"led": True, "gpio": {"events": [17]}}
    manifest.write_text(
        json.dumps({"wasm": [{"path": wasm.name}], "edged": {"name": "bad_button", "capabilities": caps}})
    )
    code, out, _ = run(capsys, "check", str(manifest), "--frames", "3")
    assert code == 1 and "after GPIO edge events" in out


def test_events_asked_for_but_never_watched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = gallery_manifest(tmp_path, "rainbow", capabilities={"led": True, "gpio": {"events": [17]}})
    code, out, _ = run(capsys, "check", str(path), "--frames", "3")
    assert code == 0 and "never called edged_gpio_watch" in out and "exports no 'on_gpio'" in out


# --- templates: package data, resolved through importlib.resources ---------------------------------------------


@pytest.mark.parametrize("lang", ["as", "c", "zig"])
def test_templates_resolve_via_importlib_resources(lang: str) -> None:
    shipped = resources.files("edged.tooling") / "templates" / lang
    suffix = {"as": ".ts", "c": ".c", "zig": ".zig"}[lang]
    assert (shipped / "manifest.json").is_file() and (shipped / f"__NAME__{suffix}").is_file()
    assert str(default_templates_dir() / lang) == str(shipped)
    assert not (ROOT / "plugins" / "templates").exists(), "one copy of the templates: edged/tooling/templates"


def package_data_globs() -> dict[str, list[str]]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return doc["tool"]["setuptools"]["package-data"]


def test_every_template_file_is_declared_package_data() -> None:
    tooling = ROOT / "edged" / "tooling"
    declared = {p for pattern in package_data_globs()["edged.tooling"] for p in tooling.glob(pattern) if p.is_file()}
    templates = {p for p in (tooling / "templates").rglob("*") if p.is_file()}
    assert templates and templates <= declared, sorted(str(p) for p in templates - declared)


def installed_copy(site: Path) -> None:
    """What a wheel of edged holds: its Python modules and the declared package data, nothing else of the tree."""
    for module in (ROOT / "edged").rglob("*.py"):
        target = site / module.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(module, target)
    for package, patterns in package_data_globs().items():
        folder = ROOT.joinpath(*package.split("."))
        for pattern in patterns:
            for path in folder.glob(pattern):
                if path.is_file():
                    target = site / path.relative_to(ROOT)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)


def test_new_from_an_installed_package_says_what_the_build_needs(tmp_path: Path) -> None:
    site, work = tmp_path / "site", tmp_path / "work"
    installed_copy(site)
    work.mkdir()
    code = "import sys; from edged.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "plugin", "new", "from_wheel", "--lang", "c", "--dir", "."],
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr
    folder = work / "from_wheel"
    assert (folder / "from_wheel.c").is_file() and (folder / "manifest.json").is_file()
    # no checkout beside this copy: the hint says what building needs instead of naming a script that is not there
    assert "checkout of the edged repository" in result.stderr and "ziglang" in result.stderr, result.stderr
    assert "EDGED_CHECKOUT/plugins/build" in result.stderr
    # and with a checkout's plugins/build, the scaffold builds where it is and passes check
    build = subprocess.run(
        [sys.executable, str(ROOT / "plugins" / "build"), str(folder)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    assert main(["plugin", "check", str(folder), "--frames", "5"]) == 0


def test_new_in_a_checkout_names_its_build_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "new", "here", "--lang", "zig", "--dir", str(tmp_path))
    assert code == 0
    assert f"next: {ROOT / 'plugins' / 'build'} {tmp_path / 'here'}" in err
    assert build_hint(tmp_path, None).startswith("next: build it with plugins/build from a checkout")


# --- initialisation under a device's limits (issue 10, point 2) -------------------------------------------------

_SPIN_INIT = (
    '(module (memory (export "memory") 1) (func (export "_initialize") (loop $l (br $l))) '
    '(func (export "frame") (result i32) (i32.const 0)))'
)
#: initialisation spins a million rounds of a small loop (a few million fuel), then every frame says "done" at once
_SLOW_INIT_DONE = (
    '(module (memory (export "memory") 1) (func (export "_initialize") (local $i i64) '
    "(loop $l (local.set $i (i64.add (local.get $i) (i64.const 1))) "
    "(br_if $l (i64.lt_u (local.get $i) (i64.const 1000000))))) "
    '(func (export "frame") (result i32) (i32.const 0)))'
)


def test_a_spinning_initialisation_fails_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wasm = tmp_path / "spin.wasm"
    wasm.write_bytes(wasmtime.wat2wasm(_SPIN_INIT))
    code, out, _ = run(capsys, "check", str(wasm))
    assert code == 1 and "initialisation failed: plugin initialisation (_initialize) failed" in out


def test_a_slow_initialisation_then_done_at_once_fails_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wasm = tmp_path / "slow_done.wasm"
    wasm.write_bytes(wasmtime.wat2wasm(_SLOW_INIT_DONE))
    manifest = tmp_path / "manifest.json"
    edged = {"name": "slow_done", "capabilities": {"led": True}, "budget": {"fuel": 100_000}}  # machine-independent
    manifest.write_text(json.dumps({"wasm": [{"path": str(wasm)}], "edged": edged}))
    code, out, _ = run(capsys, "check", str(manifest))
    assert code == 1 and "said done on its first frame without drawing" in out
    assert "initialisation takes" in out and "more than a frame's budget" in out
    assert "init:     fuel" in out
