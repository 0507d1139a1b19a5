"""Limits, logging, HTTP and WASI on plugins built with real toolchains (official as-pdk, zig cc with wasi-libc).

The WAT tests cover each edge case precisely; these prove the same behaviour holds for what PDKs really emit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.runtime import (
    OutOfFuel,
    OutOfMemory,
    OutputTooLarge,
    Plugin,
    PluginError,
    PluginLoadError,
    PluginTimeout,
    PluginTrap,
)
from tests.runtime.test_differential import OURS
from tests.support.http import QuietHandler, loopback_server

#: the kitchen plugin's host functions (reflect, hello, add), as the differential tests define them
FUNCTIONS = OURS


def kitchen(built_plugin: Any, **kwargs: Any) -> Plugin:
    manifest = {"wasm": [{"path": str(built_plugin("kitchen"))}], **kwargs.pop("manifest", {})}
    return Plugin(manifest, functions=FUNCTIONS, **kwargs)


def test_loop_forever_is_stopped_by_fuel_and_by_timeout(built_plugin: Any) -> None:
    p = kitchen(built_plugin, fuel=2_000_000)
    with pytest.raises(OutOfFuel, match="^plugin ran out of fuel$"):
        p.call("loop_forever")
    assert p.call("echo", "after fuel") == b"after fuel"
    q = kitchen(built_plugin, timeout_ms=50)
    with pytest.raises(PluginTimeout, match="^timeout$"):
        q.call("loop_forever")
    assert q.call("echo", "after timeout") == b"after timeout"


def test_trap_is_a_plugin_trap_and_the_next_call_works(built_plugin: Any) -> None:
    p = kitchen(built_plugin)
    p.call("counter")
    with pytest.raises(PluginTrap):
        p.call("trap")
    assert p.call("echo", "fine") == b"fine"
    assert p.call("counter") == b"2"  # vars survive the fresh instance


def test_memory_limit_is_oom_then_recovers(built_plugin: Any) -> None:
    # output_size builds its buffer in the plugin's own memory, which max_pages limits; AssemblyScript's stub
    # runtime never frees, so a leaky plugin grows call after call until the budget stops it
    p = kitchen(built_plugin, manifest={"memory": {"max_pages": 16}})
    with pytest.raises(OutOfMemory, match="^oom$"):
        for _ in range(100):
            p.call("output_size", "100000")
    assert p.call("output_size", "3") == b"xxx"


def test_kernel_allocations_do_not_count_against_max_pages(built_plugin: Any) -> None:
    # as in Extism, max_pages budgets the plugin's memory; kernel blocks (Memory.allocate in the PDK) are separate
    p = kitchen(built_plugin, manifest={"memory": {"max_pages": 8}})
    assert p.call("alloc_many", "65536 16") == b"16"


def test_output_limit(built_plugin: Any) -> None:
    p = kitchen(built_plugin, max_output_bytes=1000)
    assert p.call("output_size", "1000") == b"x" * 1000
    with pytest.raises(OutputTooLarge, match="1001"):
        p.call("output_size", "1001")
    assert p.call("output_size", "3") == b"xxx"


def test_var_size_limit_message_and_recovery(built_plugin: Any) -> None:
    p = kitchen(built_plugin, manifest={"memory": {"max_var_bytes": 1024}})
    assert p.call("big_var", "500") == b""
    with pytest.raises(PluginError, match="^Variable store is full$"):
        p.call("big_var", "2000")
    assert p.call("var_set", "k=v") == b""
    assert p.call("var_get", "k") == b"v"


def test_pdk_log_levels_reach_the_plugin_logger(built_plugin: Any, caplog: pytest.LogCaptureFixture) -> None:
    p = kitchen(built_plugin)
    with caplog.at_level(logging.DEBUG, logger=f"edged.plugin.{p.name}"):
        p.call("log_all")
    got = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == f"edged.plugin.{p.name}"]
    assert got == [
        (logging.DEBUG, "a debug line"),
        (logging.INFO, "an info line"),
        (logging.WARNING, "a warning line"),
        (logging.ERROR, "an error line"),
    ]


def test_pdk_log_below_the_level_is_not_emitted(built_plugin: Any, caplog: pytest.LogCaptureFixture) -> None:
    p = kitchen(built_plugin)
    with caplog.at_level(logging.WARNING, logger=f"edged.plugin.{p.name}"):
        p.call("log_all")
    assert [r.getMessage() for r in caplog.records if r.name == f"edged.plugin.{p.name}"] == [
        "a warning line",
        "an error line",
    ]


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        body = f"served {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with loopback_server(_Handler) as url:
        yield url


def test_pdk_http_is_denied_by_default_and_allowed_by_glob(built_plugin: Any, server: str) -> None:
    denied = kitchen(built_plugin)
    with pytest.raises(PluginError, match=r"HTTP request to http://127.0.0.1:\d+/x is not allowed"):
        denied.call("http_get", f"{server}/x")
    allowed = kitchen(built_plugin, manifest={"allowed_hosts": ["127.0.0.*"]})
    assert allowed.call("http_get", f"{server}/hello") == b"served /hello"


# --- WASI: opt-in, files only through allowed_paths, ro: is read-only ---------------------------------------------


def wasi_plugin(built_plugin: Any, paths: dict[str, str] | None = None, **kwargs: Any) -> Plugin:
    manifest: dict[str, Any] = {"wasm": [{"path": str(built_plugin("wasi_files"))}]}
    if paths is not None:
        manifest["allowed_paths"] = paths
    return Plugin(manifest, **kwargs)


def test_wasi_plugin_needs_wasi(built_plugin: Any) -> None:
    with pytest.raises(PluginLoadError, match="wasi_snapshot_preview1"):
        wasi_plugin(built_plugin).call("hello_stdout")


def test_wasi_files_through_allowed_paths(built_plugin: Any, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("sensor calibration")
    p = wasi_plugin(built_plugin, {str(tmp_path): "/data"}, wasi=True)
    assert p.call("read_file", "/data/in.txt") == b"sensor calibration"
    p.call("write_file", "/data/out.txt\nwritten by wasm")
    assert (tmp_path / "out.txt").read_text() == "written by wasm"


def test_wasi_without_allowed_paths_sees_no_files(built_plugin: Any, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("no")
    p = wasi_plugin(built_plugin, wasi=True)
    with pytest.raises(PluginError, match="open .* failed"):
        p.call("read_file", str(tmp_path / "secret"))


def test_wasi_read_only_path(built_plugin: Any, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("readable")
    p = wasi_plugin(built_plugin, {f"ro:{tmp_path}": "/ro"}, wasi=True)
    assert p.call("read_file", "/ro/in.txt") == b"readable"
    with pytest.raises(PluginError, match="open /ro/new.txt failed"):
        p.call("write_file", "/ro/new.txt\nnope")
    assert not (tmp_path / "new.txt").exists()
    assert p.call("read_file", "/ro/in.txt") == b"readable"


def test_wasi_stdout_goes_to_the_plugin_logger(built_plugin: Any, caplog: pytest.LogCaptureFixture) -> None:
    p = wasi_plugin(built_plugin, wasi=True)
    with caplog.at_level(logging.INFO, logger=f"edged.plugin.{p.name}"):
        p.call("hello_stdout")
    assert "hello from wasi stdout" in [r.getMessage() for r in caplog.records]


def test_allowed_path_that_is_not_a_directory_is_a_clear_error(built_plugin: Any, tmp_path: Path) -> None:
    p = wasi_plugin(built_plugin, {str(tmp_path / "missing"): "/data"}, wasi=True)
    with pytest.raises(PluginLoadError, match="is not a directory"):
        p.call("hello_stdout")


# --- vars: served in the kernel (the default) or by the host (budgets too big to reserve) -----------------------

KEYS = st.sampled_from(["a", "b", "count", "k" * 40])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, st.text(alphabet="xyz\u00e9", min_size=1, max_size=30)),
        st.tuples(st.just("del"), KEYS, st.just("")),
        st.tuples(st.just("get"), KEYS, st.just("")),
        st.tuples(st.just("trap"), st.just(""), st.just("")),
    ),
    max_size=30,
)


@pytest.mark.parametrize("max_var_bytes", [1024, 32 * 1024 * 1024], ids=["kernel", "host"])
@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_vars_behave_like_a_dict_across_traps(built_plugin: Any, max_var_bytes: int, ops: list) -> None:
    p = kitchen(built_plugin, manifest={"memory": {"max_var_bytes": max_var_bytes}})
    model: dict[str, str] = {}
    for op, key, value in ops:
        if op == "set":
            size = sum(len(k.encode()) + len(v.encode()) + 48 for k, v in {**model, key: value}.items())
            if size > max_var_bytes:
                with pytest.raises(PluginError, match="^Variable store is full$"):
                    p.call("var_set", f"{key}={value}")
                continue
            p.call("var_set", f"{key}={value}")
            model[key] = value
        elif op == "del":
            p.call("var_set", f"{key}=")
            model.pop(key, None)
        elif op == "get":
            assert p.call("var_get", key).decode() == model.get(key, "<none>")
        else:
            with pytest.raises(PluginTrap):
                p.call("trap")
    assert {k.decode(): v.decode() for k, v in p.vars.items()} == model
    p.close()
    assert {k.decode(): v.decode() for k, v in p.vars.items()} == model


def test_host_served_vars_for_a_huge_budget(built_plugin: Any) -> None:
    p = kitchen(built_plugin, manifest={"memory": {"max_var_bytes": 64 * 1024 * 1024}})
    assert not p._kernel_vars
    assert [p.call("counter") for _ in range(3)] == [b"1", b"2", b"3"]
    assert p.vars == {b"count": b"3"}
