"""Issue 15, a new user's first hour: each complaint reproduced with the command from the issue. Every failure is one
clear line on stderr with the documented exit code, never a traceback."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from edged.cli import build_parser, main
from tests.cli.test_run import PATIENCE, site, socket_of, start, wait_for
from tests.conftest import ROOT

__all__ = ["site"]  # the fixture, imported for these tests

FIRE = ROOT / "plugins" / "gallery" / "fire"
ANSI = "\x1b["


def edged(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        env={**os.environ, **(env or {})},
    )


def one_clear_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# --- 2. text logs carry their context; --log-level keeps a configured json format ---------------------------------


def test_text_log_lines_carry_the_context_the_code_attaches(tmp_path: Path) -> None:
    """The store's rollback line, through the CLI's own logging setup: plugin, from and to are on the line."""
    script = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from edged.cli import _setup_logging
_setup_logging("info")
from edged.deploy.bundle import build_bundle
from edged.deploy.store import PluginStore
from edged.deploy.trust import generate_key
from tests.deploy.test_store import base_wasm, with_custom_section
key = generate_key()
store = PluginStore({str(tmp_path / "store")!r})
for v in ("1.1.0", "1.2.0"):
    b = build_bundle("glow", v, with_custom_section(base_wasm(), v.encode()), {{}}, key)
    store.install(b.meta, b.manifest, b.wasm, activate=True)
store.rollback("glow")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=PATIENCE)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stderr.splitlines() if "plugin rolled back" in x)
    assert line.endswith("edged.deploy.store: plugin rolled back plugin=glow from=1.2.0 to=1.1.0"), line


def test_a_context_value_with_spaces_stays_one_quoted_field() -> None:
    from edged.daemon.logs import TextFormatter

    record = logging.LogRecord("edged.deploy.agent", logging.WARNING, __file__, 1, "rolled back", None, None)
    record.__dict__.update({"plugin": "glow", "version": "1.2.0", "reason": "health check failed", "n": [1, 2]})
    text = TextFormatter().format(record)
    assert text.endswith('rolled back plugin=glow version=1.2.0 reason="health check failed" n=[1,2]')


def test_edged_log_level_run_keeps_the_configured_json_format(site: Path) -> None:
    with (site / "edged.toml").open("a") as f:
        f.write('\n[logging]\nformat = "json"\n')
    out = edged("--log-level", "info", "run", "--config", "edged.toml", "--emulate", "--frames", "3", cwd=site)
    assert out.returncode == 0, out.stderr
    docs = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    running = next(d for d in docs if d["msg"] == "edged running")
    assert running["displays"] == ["main"] and running["logger"] == "edged.daemon"


def test_json_logs_stay_json_when_a_problem_is_reported(site: Path) -> None:
    """A problem (here: the web page's port is taken) was also printed as a plain line, so a JSON log consumer
    choked on stderr (and this file's JSON test failed whenever port 8080 was busy)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (site / "edged.toml").open("a") as f:
            f.write(f'\n[logging]\nformat = "json"\n\n[http]\nport = {port}\n')
        out = edged("run", "--config", "edged.toml", "--emulate", "--frames", "3", cwd=site)
    assert out.returncode == 0, out.stderr
    docs = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    problem = next(d for d in docs if "cannot serve the web page" in d["msg"])
    assert problem["level"] == "error" and problem["where"] == "http"


def test_edged_log_level_run_text_lines_show_context(site: Path) -> None:
    out = edged("--log-level", "info", "run", "--config", "edged.toml", "--emulate", "--frames", "3", cwd=site)
    assert out.returncode == 0, out.stderr
    assert re.search(r'INFO edged\.daemon: edged running displays=\["main"\]$', out.stderr, re.M), out.stderr


# --- 3. no tracebacks on simple mistakes -----------------------------------------------------------------------------


def test_preview_gif_into_a_missing_folder(tmp_path: Path) -> None:
    out = edged("preview", str(FIRE), "--gif", "nodir/x.gif", cwd=tmp_path)
    assert out.returncode == 2
    assert one_clear_line(out.stderr) == "edged preview: --gif nodir/x.gif: the folder nodir does not exist"
    assert not (tmp_path / "nodir").exists()


@pytest.mark.parametrize(("option", "path"), [("--snapshot", "/nodir/s.png"), ("--stats", "/nodir/s.json")])
def test_run_output_into_a_missing_folder(tmp_path: Path, option: str, path: str) -> None:
    assert not Path("/nodir").exists()
    out = edged("run", "--emulate", option, path, "--frames", "3", cwd=tmp_path, env={"EDGED_STATE_DIR": str(tmp_path)})
    assert out.returncode == 2
    assert one_clear_line(out.stderr) == f"edged run: {option} {path}: the folder /nodir does not exist"
    assert not Path("/nodir").exists()  # and nothing created on the way


def test_ctl_stats_into_a_closed_pipe(site: Path) -> None:
    proc = start(site)
    try:
        wait_for(lambda: Path(socket_of(site)).exists(), "the control socket")
        cmd = f"{sys.executable} -m edged ctl --socket {socket_of(site)} stats"
        # the command from the issue (whether it breaks the pipe depends on timing) ...
        exact = subprocess.run(["bash", "-c", f"{cmd} | head -c 800"], capture_output=True, timeout=PATIENCE)
        assert exact.returncode == 0 and b"Traceback" not in exact.stderr, exact.stderr
        assert exact.stdout.startswith(b"{") and len(exact.stdout) <= 800
        # ... and the same with the reader gone before edged writes: always a broken pipe
        gone = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {cmd} | head -c 0"], capture_output=True, text=True, timeout=PATIENCE
        )
        assert gone.stderr == "" and gone.returncode == 141  # quiet, with the shell's SIGPIPE status
    finally:
        proc.terminate()
        proc.communicate(timeout=PATIENCE)


# --- 4. ctl reload on a broken config ---------------------------------------------------------------------------


def test_ctl_reload_of_a_broken_config_exits_1_with_the_error(site: Path) -> None:
    proc = start(site)
    try:
        wait_for(lambda: Path(socket_of(site)).exists(), "the control socket")
        text = (site / "edged.toml").read_text()
        (site / "edged.toml").write_text(text.replace('name = "main"', 'name = "main"\nfsp = 60', 1))
        out = edged("ctl", "--socket", socket_of(site), "reload")
        assert out.returncode == 1 and out.stdout == ""
        line = one_clear_line(out.stderr)
        assert line.startswith("edged ctl: reload refused, the daemon runs on: ") and "fsp" in line, line
        listed = edged("ctl", "--socket", socket_of(site), "list")
        assert listed.returncode == 0 and "red" in listed.stdout  # still running the old config
    finally:
        proc.terminate()
        proc.communicate(timeout=PATIENCE)


# --- 5. plugin new writes ./NAME ------------------------------------------------------------------------------------


def test_plugin_new_writes_into_the_current_folder(tmp_path: Path) -> None:
    out = edged("plugin", "new", "sparkle", "--lang", "c", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "sparkle" / "sparkle.c").is_file() and (tmp_path / "sparkle" / "manifest.json").is_file()
    assert not (tmp_path / "plugins").exists()
    assert not (ROOT / "plugins" / "gallery" / "sparkle").exists()
    assert "plugins/build sparkle  then  edged plugin check sparkle" in out.stderr  # how to build it, from here


def test_plugin_new_default_is_not_the_projects_gallery() -> None:
    parser = build_parser()
    args = parser.parse_args(["plugin", "new", "x", "--lang", "c"])
    assert args.dir == Path(".")


# --- 9. GIF timing, no escapes into a pipe, a terminal view that fits -------------------------------------------------


def test_a_30_fps_gif_plays_at_30_fps(tmp_path: Path) -> None:
    out = edged("preview", str(FIRE), "--gif", "x.gif", "--frames", "90", "--fps", "30", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    with Image.open(tmp_path / "x.gif") as im:
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(im)]
    assert sum(durations) == 3000  # 90 frames at 30 fps: 3 s, where rounding each to 30 ms gave 2.7 s


def test_preview_into_a_pipe_writes_no_escape_codes(tmp_path: Path) -> None:
    out = edged("preview", str(FIRE), cwd=tmp_path)
    assert out.returncode == 2 and ANSI not in out.stdout and out.stdout == ""
    assert "stdout is not a terminal: pass --gif OUT or --png OUT" in one_clear_line(out.stderr)


def test_the_terminal_view_fits_80x24_and_says_what_plays(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")
    rc = main(["preview", str(FIRE), "--profile", "emulated-64x64", "--frames", "2", "--terminal"])
    assert rc == 0
    text = capsys.readouterr().out
    frame = text.split("\x1b[H")[-1]  # the last redraw
    lines = frame.rstrip("\n").split("\n")
    header, picture = lines[0], lines[1:]
    assert "fire" in header and "Ctrl-C to stop" in header and "1/2" in header
    assert len(lines) <= 23  # the prompt line stays free
    cells = [len(re.findall("\u2580", line)) for line in picture]
    assert max(cells) <= 80 and cells[0] == 32  # 64 wide shrunk to 32 columns


def test_the_terminal_renderer_keeps_the_scale_when_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    from edged.hardware.render import TerminalRenderer

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("LINES", "60")
    stream = io.StringIO()
    TerminalRenderer(stream, scale=2, title="main").draw(np.zeros((16, 16, 3), np.uint8))
    lines = stream.getvalue().split("\n")
    assert "main" in lines[0] and "1/" not in lines[0]
    assert len(re.findall("\u2580", lines[1])) == 32


# --- 10. smaller: help texts, plugin check on a bare folder, completion -------------------------------------------


def _parsers(parser: argparse.ArgumentParser, path: str = "edged") -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += _parsers(child, f"{path} {name}")
    return out


def test_help_texts_have_no_rest_double_backticks() -> None:
    for path, parser in _parsers(build_parser()):
        assert "``" not in parser.format_help(), path


def test_every_market_option_has_help() -> None:
    missing = []
    for path, parser in _parsers(build_parser()):
        if not path.startswith("edged market"):
            continue
        for action in parser._actions:
            if not action.help and not isinstance(action, argparse._SubParsersAction):
                missing.append(f"{path}: {action.option_strings or action.dest}")
    assert missing == []


def test_plugin_check_on_a_folder_holding_only_name_wasm(tmp_path: Path) -> None:
    folder = tmp_path / "fire"
    folder.mkdir()
    shutil.copy(FIRE / "fire.wasm", folder / "fire.wasm")
    out = edged("plugin", "check", str(folder))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "not a .wasm file" not in out.stdout and out.stdout.rstrip().endswith("PASS")


def test_plugin_check_on_an_empty_folder_says_what_it_looked_for(tmp_path: Path) -> None:
    folder = tmp_path / "nothing"
    folder.mkdir()
    out = edged("plugin", "check", str(folder))
    assert out.returncode == 1
    assert "expected nothing.manifest.json, manifest.json or nothing.wasm" in out.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_completes_commands_and_options(tmp_path: Path) -> None:
    out = edged("completion", "bash")
    assert out.returncode == 0 and out.stderr == ""
    script = tmp_path / "edged.bash"
    script.write_text(out.stdout)

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        probe = (
            f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; "
            f"COMP_POINT=${{#COMP_LINE}}; _shtab_edged; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        )
        result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=PATIENCE)
        return result.stdout.split()

    assert complete("edged", "mar") == ["market"]
    assert "publish" in complete("edged", "market", "pu")
    assert "--recalibrate" in complete("edged", "plugin", "check", "--re")
    assert complete("edged", "ctl", "bri") == ["brightness"]
    assert "--layer" in complete("edged", "ctl", "switch", "--la")


def test_zsh_completion_is_generated() -> None:
    out = edged("completion", "zsh")
    assert out.returncode == 0 and out.stdout.startswith("#compdef edged")


TRAPS = {
    "c": (
        "__attribute__((noinline)) static void explode(uint64_t n) {\n  if (n >= 2) __builtin_trap();\n}\n",
        "explode(t.frame);",
    ),
    "zig": ("noinline fn explode(n: u64) void {\n    if (n >= 2) @trap();\n}\n", "explode(t.frame);"),
    "as": ("@inline(never)\nfunction explode(n: u64): void {\n  if (n >= 2) unreachable();\n}\n", "explode(t.frame);"),
}


@pytest.mark.parametrize("lang", sorted(TRAPS))
def test_a_trap_in_a_template_build_names_the_function(tmp_path: Path, lang: str) -> None:
    """The scaffolded template, made to trap on its third frame, built with plugins/build as `plugin new` says."""
    assert edged("plugin", "new", "boom", "--lang", lang, cwd=tmp_path).returncode == 0
    source = next(p for p in (tmp_path / "boom").iterdir() if p.stem == "boom")
    helper, call = TRAPS[lang]
    text = source.read_text()
    anchor = {"c": 'EDGED_EXPORT("frame")', "zig": "export fn frame", "as": "export function frame"}[lang]
    text = text.replace(anchor, helper + "\n" + anchor, 1)
    tick = "edged.tick();" if lang == "zig" else ("readTick();" if lang == "as" else "edged_tick();")
    text = text.replace(tick, f"{tick}\n  {call}", 1)
    source.write_text(text)
    preview = ("preview", "boom", "--gif", "x.gif", "--frames", "5")
    build = [sys.executable, str(ROOT / "plugins" / "build")]

    stripped = subprocess.run([*build, "--no-names", "boom"], cwd=tmp_path, capture_output=True, text=True)
    assert stripped.returncode == 0, stripped.stderr
    before = edged(*preview, cwd=tmp_path)
    assert before.returncode == 1 and "<wasm function" in before.stderr  # the complaint, with names stripped

    built = subprocess.run([*build, "boom"], cwd=tmp_path, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    after = edged(*preview, cwd=tmp_path)
    line = one_clear_line(after.stderr)
    assert after.returncode == 1 and "<wasm function" not in line, line
    assert re.search(r"!(\S*[./])?frame\b", line), line  # boom.wasm!frame, boom.wasm!boom.frame, …
