"""Issue 14, point 7: ``edged call`` takes the flags of ``extism call`` with the same meaning: ``--stdin``,
``--allow-path``, ``--memory-max``, ``--http-response-max``, ``--var-max``, ``--set-config``, ``--log-level``,
``--timeout``, ``--enable-http-response-headers``, ``--link`` and the ``--config KEY`` forms."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.cli import main
from tests.conftest import ROOT
from tests.runtime.wats import KITCHEN
from tests.support.http import QuietHandler, loopback_server

COUNT_VOWELS = ROOT / "plugins" / "examples" / "count_vowels" / "count_vowels.wasm"


@pytest.fixture
def kitchen(tmp_path: Path) -> Path:
    path = tmp_path / "kitchen.wasm"
    path.write_bytes(KITCHEN)
    return path


def _call(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "edged", "call", *argv], input=stdin, capture_output=True, timeout=120, cwd=ROOT
    )


def test_stdin(kitchen: Path) -> None:
    r = _call(str(kitchen), "echo", "--stdin", stdin=b"from stdin \x00\xff")
    assert (r.returncode, r.stdout) == (0, b"from stdin \x00\xff")


def test_config_forms_and_set_config(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    def thing(*flags: str) -> str | None:
        assert main(["call", str(COUNT_VOWELS), "count_vowels", "--wasi", "--input", "a", *flags]) == 0
        value: str | None = json.loads(capsysbinary.readouterr().out)["thing"]
        return value

    assert thing("--config", "thing=x=y") == "x=y"  # split at the first '='
    # a bare KEY sets the empty string, which the PDK reads as no value (as under extism call)
    assert thing("--set-config", '{"thing": "x"}', "--config", "thing") is None
    assert thing("--set-config", '{"thing": "from json"}') == "from json"
    assert thing("--set-config", '{"thing": "from json"}', "--config", "thing=flag") == "flag"  # --config wins


def test_allow_path(built_plugin: object, tmp_path: Path) -> None:
    wasm = str(built_plugin("wasi_files"))  # type: ignore[operator]
    (tmp_path / "in.txt").write_text("mapped")
    r = _call(wasm, "read_file", "--wasi", "--allow-path", f"{tmp_path}:/data", "--input", "/data/in.txt")
    assert (r.returncode, r.stdout) == (0, b"mapped")
    # a bare HOST path is mounted at the same path inside
    r = _call(wasm, "read_file", "--wasi", "--allow-path", str(tmp_path), "--input", f"{tmp_path}/in.txt")
    assert (r.returncode, r.stdout) == (0, b"mapped")
    # without it the plugin sees nothing
    r = _call(wasm, "read_file", "--wasi", "--input", "/data/in.txt")
    assert r.returncode == 1


def test_memory_max(kitchen: Path) -> None:
    r = _call(str(kitchen), "grow_forever", "--memory-max", "4")
    assert r.returncode == 1 and b"edged call: oom" in r.stderr


def test_var_max(kitchen: Path) -> None:
    r = _call(str(kitchen), "var_set_input", "--var-max", "0", "--input", "k")
    assert r.returncode == 1 and b"Vars are disabled by this host" in r.stderr
    r = _call(str(kitchen), "var_set_input", "--var-max", "100", "--input", "k" * 80)
    assert r.returncode == 1 and b"Variable store is full" in r.stderr
    assert _call(str(kitchen), "var_set_input", "--var-max", "1000", "--input", "k").returncode == 0


class _Big(QuietHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5000")
        self.end_headers()
        self.wfile.write(b"z" * 5000)

    do_POST = do_GET


@pytest.fixture
def server() -> Iterator[str]:
    with loopback_server(_Big) as url:
        yield url


def test_http_response_max(kitchen: Path, server: str) -> None:
    doc = json.dumps({"url": server + "/big", "method": "GET", "headers": {}})
    base = [str(kitchen), "http", "--allow-host", "127.0.0.1", "--input", doc]
    r = _call(*base, "--http-response-max", "1000")
    assert r.returncode == 1 and b"HTTP response exceeds the limit of 1000 bytes" in r.stderr
    r = _call(*base, "--http-response-max", "10000")
    assert (r.returncode, r.stdout) == (0, b"z" * 5000)


def test_enable_http_response_headers(tmp_path: Path, server: str) -> None:
    from tests.runtime.test_http_compat import HTTP_WAT

    wasm = tmp_path / "http.wasm"
    wasm.write_bytes(HTTP_WAT)
    doc = json.dumps({"url": server + "/big", "method": "POST", "headers": {}})
    # the plugin POSTs, then reads the response's headers: none unless the flag is given
    for flags, expect in (([], b""), (["--enable-http-response-headers"], b"content-length")):
        r = _call(str(wasm), "post_then_headers", "--allow-host", "127.0.0.1", "--input", doc, *flags)
        assert r.returncode == 0, r.stderr
        assert (expect in r.stdout.lower()) if expect else r.stdout == b""


def test_link(tmp_path: Path) -> None:
    from tests.conftest import wat

    lib = tmp_path / "answers.wasm"
    lib.write_bytes(wat('(module (func (export "answer") (result i64) (i64.const 42)))'))
    main_wasm = tmp_path / "main.wasm"
    main_wasm.write_bytes(
        wat(
            """(module
      (import "answers" "answer" (func $answer (result i64)))
      (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
      (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
      (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
      (func (export "run") (result i32) (local $h i64)
        (local.set $h (call $alloc (i64.const 8)))
        (call $store_u64 (local.get $h) (call $answer))
        (call $output_set (local.get $h) (i64.const 8)) (i32.const 0)))"""
        )
    )
    for link in (str(lib), f"answers={lib}"):
        r = _call(str(main_wasm), "run", "--link", link)
        assert r.returncode == 0, r.stderr
        assert int.from_bytes(r.stdout, "little") == 42
    r = _call(str(main_wasm), "run")
    assert r.returncode == 2 and b"answers::answer" in r.stderr


def test_log_level(kitchen: Path) -> None:
    # "log" logs an info line and an error line, and outputs '0' + get_log_level
    r = _call(str(kitchen), "log", "--log-level", "info")
    assert (r.returncode, r.stdout) == (0, b"2")
    lines = r.stderr.decode().splitlines()
    assert sum(" INFO edged.plugin.kitchen: " in ln for ln in lines) == 1  # once: one handler
    assert sum(" ERROR edged.plugin.kitchen: " in ln for ln in lines) == 1
    r = _call(str(kitchen), "log", "--log-level", "error")
    assert r.stdout == b"4" and " INFO " not in r.stderr.decode() and " ERROR " in r.stderr.decode()
    # deliberate difference: without the flag extism call shows nothing; edged call shows the plugin's warnings
    # and errors (edged's own level), which explain a failed call
    r = _call(str(kitchen), "log")
    assert r.stdout == b"3" and " INFO " not in r.stderr.decode() and " ERROR " in r.stderr.decode()
    # edged's global --log-level before the command applies to the plugin too
    r = subprocess.run(
        [sys.executable, "-m", "edged", "--log-level", "info", "call", str(kitchen), "log"],
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.stdout == b"2" and " INFO edged.plugin.kitchen: " in r.stderr.decode()


def test_timeout_alias(kitchen: Path) -> None:
    r = _call(str(kitchen), "spin", "--timeout", "50")
    assert r.returncode == 1 and b"edged call: timeout" in r.stderr
