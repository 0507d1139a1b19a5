"""``edged call``: output to stdout, --loop lines, and exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edged.cli import main
from tests.runtime.wats import KITCHEN


@pytest.fixture
def kitchen(tmp_path: Path) -> Path:
    path = tmp_path / "kitchen.wasm"
    path.write_bytes(KITCHEN)
    return path


def test_output_goes_to_stdout(kitchen: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["call", str(kitchen), "echo", "--input", "hello"]) == 0
    assert capsysbinary.readouterr().out == b"hello"


def test_input_file_and_loop(kitchen: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    f = tmp_path / "in.txt"
    f.write_bytes(b"abc")
    assert main(["call", str(kitchen), "counter", "--loop", "3"]) == 0
    assert capsysbinary.readouterr().out == b"1\n2\n3\n"
    assert main(["call", str(kitchen), "echo", "--input-file", str(f)]) == 0
    assert capsysbinary.readouterr().out == b"abc"


def test_plugin_failure_exits_1_with_message(kitchen: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", str(kitchen), "fail"]) == 1
    assert "edged call: boom" in capsys.readouterr().err
    assert main(["call", str(kitchen), "nope"]) == 1
    assert "Function not found: nope" in capsys.readouterr().err
    assert main(["call", str(kitchen), "spin", "--fuel", "10000"]) == 1
    assert "plugin ran out of fuel" in capsys.readouterr().err
    assert main(["call", str(kitchen), "spin", "--timeout-ms", "20"]) == 1
    assert "timeout" in capsys.readouterr().err


def test_load_errors_and_bad_usage_exit_2(kitchen: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.wasm"
    garbage.write_bytes(b"garbage")
    assert main(["call", str(garbage), "echo"]) == 2
    assert "not a WebAssembly module" in capsys.readouterr().err
    assert main(["call", str(tmp_path / "missing.wasm"), "echo"]) == 2
    capsys.readouterr()
    assert main(["call", str(kitchen), "echo", "--set-config", "{not json"]) == 2  # (a bare --config KEY is ""
    assert "invalid value for --set-config flag" in capsys.readouterr().err  # as in extism call: test_cli_flags)
    assert main(["call", str(kitchen), "echo", "--set-config", '{"n": 5}']) == 2
    assert "expected a JSON object of strings" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ei:
        main(["call", str(kitchen)])
    assert ei.value.code == 2


def test_manifest_config_and_allow_host(
    kitchen: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    m = tmp_path / "plugin.json"
    m.write_text(json.dumps({"wasm": [{"path": kitchen.name}], "memory": {"max_var_bytes": 0}}))
    assert main(["call", str(m), "var_set_input", "--input", "x"]) == 1  # the manifest's limits apply
    assert main(["call", str(m), "--manifest", "echo", "--input", "via manifest"]) == 0
    assert capsysbinary.readouterr().out.endswith(b"via manifest")
    req = json.dumps({"url": "http://127.0.0.1:9/", "headers": {}, "method": "GET"})
    assert main(["call", str(kitchen), "http", "--input", req]) == 1
    assert b"is not allowed" in capsysbinary.readouterr().err
    # allowed now: the connection fails instead (nothing listens on port 9), which is a different error
    assert main(["call", str(kitchen), "http", "--input", req, "--allow-host", "127.0.0.1"]) == 1
    assert b"failed" in capsysbinary.readouterr().err


def test_console_script_runs(kitchen: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edged.cli", "call", str(kitchen), "echo", "--input", "via subprocess"],
        capture_output=True,
        check=True,
    )
    assert out.stdout == b"via subprocess"


def test_a_module_that_cannot_instantiate_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.json"
    wasm = tmp_path / "k.wasm"
    wasm.write_bytes(KITCHEN)
    manifest.write_text(json.dumps({"wasm": [{"path": str(wasm)}], "allowed_paths": {"/nonexistent-dir": "/d"}}))
    assert main(["call", str(manifest), "echo", "--wasi", "--input", "x"]) == 2
    assert "allowed_paths: /nonexistent-dir is not a directory" in capsys.readouterr().err


def test_a_wasi_call_that_opens_files_never_aborts_at_exit(built_plugin: object, tmp_path: Path) -> None:
    """Issue 10, point 7 (and issue 14, point 2): WASI output went through Python callbacks run on wasmtime's I/O
    threads; one entered while the interpreter shut down aborted the process (exit 134) in about one run in ten."""
    from concurrent.futures import ThreadPoolExecutor

    (tmp_path / "in.txt").write_text("calibration")
    manifest = tmp_path / "m.json"
    wasm = built_plugin("wasi_files")  # type: ignore[operator]
    manifest.write_text(json.dumps({"wasm": [{"path": str(wasm)}], "allowed_paths": {str(tmp_path): "/data"}}))
    cmd = [sys.executable, "-m", "edged", "call", str(manifest), "read_file", "--input", "/data/in.txt", "--wasi"]

    def once(_: int) -> tuple[int, bytes]:
        r = subprocess.run(cmd, capture_output=True, timeout=120)
        return r.returncode, r.stdout

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(once, range(24)))
    assert results == [(0, b"calibration")] * 24


def test_plugin_log_lines_cannot_forge_lines_or_drive_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from edged.runtime import log_text

    forged = b"ok\nERROR edged.daemon: all plugins stopped\r\x1b[2J\x1b[31mred\x07 \xe2\x80\xa8 \xff"
    line = log_text(forged)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x07" not in line
    assert "\u2028" not in line
    assert line.startswith("ok\\nERROR edged.daemon: all plugins stopped\\r\\x1b[2J")
    assert len(log_text(b"x" * 100_000)) < 2100


def test_a_plugin_flooding_its_log_is_rate_limited_and_the_drops_counted(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from edged.runtime import LogLimiter
    from edged.runtime._env import LOG_BURST, LOG_LINES_PER_S

    now = [0.0]
    logger = logging.getLogger("edged.plugin.flood")
    limiter = LogLimiter(logger, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="edged.plugin.flood"):
        for i in range(10_000):  # all at one instant: the burst passes, the rest is dropped
            limiter.log(logging.INFO, f"line {i}".encode())
        assert len(caplog.records) == LOG_BURST and limiter.dropped == 10_000 - LOG_BURST
        now[0] = 1.0  # a second later the rate has refilled; the next line reports the drops first
        limiter.log(logging.INFO, b"after")
    assert [r.getMessage() for r in caplog.records[-2:]] == [
        f"{10_000 - int(LOG_BURST)} log lines of this plugin were dropped (more than {LOG_LINES_PER_S:g} a second)",
        "after",
    ]


def test_a_flood_of_output_lines_costs_one_pass_not_one_call_per_line(caplog: pytest.LogCaptureFixture) -> None:
    """Found by a hostile review: 64 KiB of newlines on WASI stdout went through the limiter one line at a time
    (~130k Python calls a frame, after the deadline)."""
    import logging

    from edged.runtime import LogLimiter
    from edged.runtime._env import LOG_BURST

    emitted: list[bytes] = []
    limiter = LogLimiter(logging.getLogger("edged.plugin.newlines"), clock=lambda: 0.0)
    limiter._emit = lambda level, raw: emitted.append(raw)  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="edged.plugin.newlines"):
        limiter.log_lines(logging.INFO, [b""] * 131_072)
    assert len(emitted) == LOG_BURST and limiter.dropped == 131_072 - LOG_BURST


def test_call_says_which_host_folders_a_manifest_opens(
    built_plugin: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edged call` trusts the manifest as `extism call` does (a device never does); it says what that opens."""
    (tmp_path / "in.txt").write_text("x")
    manifest = tmp_path / "m.json"
    wasm = built_plugin("wasi_files")  # type: ignore[operator]
    manifest.write_text(json.dumps({"wasm": [{"path": str(wasm)}], "allowed_paths": {f"ro:{tmp_path}": "/data"}}))
    assert main(["call", str(manifest), "read_file", "--input", "/data/in.txt", "--wasi"]) == 0
    err = capsys.readouterr().err
    assert f"opens host folders to the plugin: {tmp_path} as /data (read-only)" in err
