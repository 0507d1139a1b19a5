"""Issue 11.5 (and the CLI items of 11.2): ``edged --version``, ``--help`` and ``edged ctl …`` import only what they
need (before, every command imported everything: wasmtime, paho, pydantic, the daemon, ~0.8 s of CPU), ``edged ctl``
actions are subcommands with their own help, and the exit codes are defined once.

Which modules a command loads is checked in a fresh interpreter (deterministic; the time it takes is measured by
bench/startup.py, not here)."""

from __future__ import annotations

import argparse
import json
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.cli import COMMANDS, build_parser, main
from edged.cli.exitcodes import ExitCode
from edged.daemon.config import load_config
from edged.daemon.paths import control_socket
from tests.conftest import ROOT

#: run a command line as the console script does, and write the modules it loaded to $MODULES_OUT at exit
WRAPPER = """
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
from edged.cli import main
sys.exit(main(sys.argv[1:]))
"""

#: top-level packages none of these commands needs, and edged's packages that pull them in
HEAVY_PACKAGES = ("wasmtime", "paho", "pydantic", "gpiozero", "numpy", "shtab")
HEAVY_EDGED = (
    "edged.runtime",
    "edged.host",
    "edged.engine",
    "edged.hardware",
    "edged.deploy",
    "edged.market",
    "edged.web",
    "edged.daemon.daemon",
    "edged.daemon.config",
    "edged.daemon.control",
)


class _StubDaemon(socketserver.StreamRequestHandler):
    """Answers one control request per connection the way the daemon does, and records it."""

    def handle(self) -> None:
        req = json.loads(self.rfile.readline())
        self.server.requests.append(req)  # type: ignore[attr-defined]
        results: dict[str, Any] = {"list": [{"display": "main", "plugin": "fire"}], "health": {"ready": True}}
        result = results.get(req["cmd"], {"frames": 1})
        self.wfile.write(json.dumps({"ok": True, "result": result}).encode() + b"\n")


@pytest.fixture
def stub_socket(tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    path = tmp_path / "control.sock"
    server = socketserver.UnixStreamServer(str(path), _StubDaemon)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path, server.requests  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def _loaded(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    out = tmp_path / "modules.json"
    env = {**os.environ, "MODULES_OUT": str(out), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env
    )
    modules: list[str] = json.loads(out.read_text())
    return proc, modules


def _heavy(modules: list[str]) -> list[str]:
    return [
        m
        for m in modules
        if m.split(".")[0] in HEAVY_PACKAGES or any(m == h or m.startswith(h + ".") for h in HEAVY_EDGED)
    ]


@pytest.mark.parametrize(
    "args",
    [["--version"], ["--help"], ["ctl", "--help"], ["ctl", "stats", "--help"], ["ctl", "--config", "CONFIG", "stats"]],
    ids=" ".join,
)
def test_light_commands_import_no_runtime_daemon_or_broker_client(
    args: list[str], tmp_path: Path, stub_socket: tuple[Path, list[dict[str, Any]]]
) -> None:
    sock, requests = stub_socket
    config = tmp_path / "edged.toml"
    config.write_text(f'[daemon]\ncontrol_socket = "{sock}"\n')
    proc, modules = _loaded([str(config) if a == "CONFIG" else a for a in args], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout
    assert _heavy(modules) == []
    if "stats" in args and "--help" not in args:
        assert json.loads(proc.stdout) == {"frames": 1} and requests[0]["cmd"] == "stats"


def test_a_heavy_command_still_loads_what_it_needs(tmp_path: Path) -> None:
    """The check above can fail: ``plugin check`` on a missing file loads the runtime before it says so."""
    proc, modules = _loaded(["plugin", "check", "missing.wasm"], tmp_path)
    assert proc.returncode == ExitCode.USAGE
    assert "edged.tooling" in modules and "pydantic" in modules


def test_top_level_help_lists_every_command_with_its_modules_help() -> None:
    """The table ``edged --help`` reads without importing the commands says what their own parsers say."""
    light, full = build_parser(load=()), build_parser()

    def helps(parser: argparse.ArgumentParser) -> dict[str, str]:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return {c.dest: str(c.help) for c in sub._choices_actions}

    assert helps(light) == helps(full) == {name: c.help for name, c in COMMANDS.items()}
    assert light.format_help() == full.format_help()


def test_unknown_command_is_refused_before_anything_loads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["nope"])
    assert exc.value.code == ExitCode.USAGE
    assert "invalid choice: 'nope'" in capsys.readouterr().err


# --- ctl: one subcommand per action, the same command lines and wire format as before ---------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["stats"], {"cmd": "stats", "display": None, "playlist": None, "layer": None}),
        (["list", "--socket", "SOCK"], {"cmd": "list", "display": None, "playlist": None, "layer": None}),
        (["switch", "main", "night"], {"cmd": "switch", "display": "main", "playlist": "night", "layer": None}),
        (
            ["switch", "main", "alt", "--layer", "bg"],
            {"cmd": "switch", "display": "main", "playlist": "alt", "layer": "bg"},
        ),
        (["next", "main"], {"cmd": "next", "display": "main", "playlist": None, "layer": None}),
        (
            ["play", "main", "fire"],
            {"cmd": "play", "display": "main", "playlist": None, "layer": None, "plugin": "fire"},
        ),
        (["power", "main", "off"], {"cmd": "power", "display": "main", "playlist": None, "layer": None, "on": False}),
        (
            ["brightness", "main", "64"],
            {"cmd": "brightness", "display": "main", "playlist": None, "layer": None, "brightness": 64},
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_ctl_command_lines_send_the_documented_request(
    argv: list[str],
    expected: dict[str, Any],
    stub_socket: tuple[Path, list[dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sock, requests = stub_socket
    # the socket before the action (as the docs write it), or after it
    args = [str(sock) if a == "SOCK" else a for a in argv]
    if "SOCK" not in argv:
        args = ["--socket", str(sock), *args]
    assert main(["ctl", *args]) == ExitCode.OK
    assert requests == [expected]
    assert capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["switch", "main"], "the following arguments are required: PLAYLIST"),
        (["next"], "the following arguments are required: DISPLAY"),
        (["power", "main", "dim"], "power takes on or off, got 'dim'"),
        (["brightness", "main", "300"], "brightness takes 0-255, got '300'"),
        (["stats", "extra"], "unrecognized arguments: extra"),
    ],
)
def test_ctl_usage_errors_exit_2_and_send_nothing(
    argv: list[str],
    message: str,
    stub_socket: tuple[Path, list[dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sock, requests = stub_socket
    with pytest.raises(SystemExit) as exc:
        main(["ctl", "--socket", str(sock), *argv])
    assert exc.value.code == ExitCode.USAGE
    assert message in capsys.readouterr().err
    assert requests == []


def test_each_ctl_action_has_its_own_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["ctl", "switch", "--help"])
    assert exc.value.code == ExitCode.OK
    out = capsys.readouterr().out
    assert out.startswith("usage: edged ctl switch") and "DISPLAY PLAYLIST" in out and "--layer" in out
    assert "brightness" not in out


def test_ctl_exit_codes(stub_socket: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    assert main(["ctl", "--socket", str(tmp_path / "none.sock"), "stats"]) == ExitCode.USAGE
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon\n")
    assert main(["ctl", "--config", str(bad), "stats"]) == ExitCode.USAGE


# --- the socket a config names, found without loading the config ---------------------------------------------------


@pytest.mark.parametrize(
    "daemon_table",
    [
        "",
        '[daemon]\ncontrol_socket = "run/ctl.sock"\n',
        '[daemon]\ncontrol_socket = "/tmp/edged-test/ctl.sock"\n',
        '[daemon]\nstate_dir = "state"\n',
        '[daemon]\nstate_dir = "~/somewhere"\n',
        '[daemon]\nstate_dir = "state"\ncontrol_socket = "../ctl.sock"\n',
    ],
)
def test_control_socket_is_where_the_config_puts_it(daemon_table: str, tmp_path: Path) -> None:
    config = tmp_path / "conf" / "edged.toml"
    config.parent.mkdir()
    config.write_text(daemon_table)
    assert control_socket(config) == load_config(config).control_socket
    assert control_socket(None) == load_config(None).control_socket


def test_exit_codes_are_the_documented_ones() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "Every command exits 0 on success, 1 when what it ran failed" in readme
    assert "stops quietly with 141" in readme
    assert [int(c) for c in ExitCode] == [0, 1, 2, 141]
