"""WASI host calls cannot outlast a deadline or plant links (issue 10: found by a hostile review after the fixes).

wasmtime checks the epoch deadline only inside wasm code; ``poll_oneoff`` sleeping in the host held a display
thread for as long as the plugin asked, with no strike that could add up to a quarantine.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from edged.errors import PluginTimeout
from edged.runtime import Plugin, host_fn
from tests.conftest import wat


def sleeper(timeout_ns: int, clock: int = 1, flags: int = 0, tag: int = 0, fd: int = 1) -> bytes:
    """A plugin whose ``nap`` polls one subscription and outputs (errno, nevents, first event's userdata, type)."""
    union = struct.pack("<I4xQQH6x", clock, timeout_ns, 0, flags) if tag == 0 else struct.pack("<I28x", fd)
    sub = struct.pack("<QB7x", 7, tag) + union
    data = "".join(f"\\{b:02x}" for b in sub)
    return wat(
        f"""(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "{data}")
  (func (export "nap") (result i32) (local $rc i32) (local $h i64)
    (local.set $rc (call $poll (i32.const 1024) (i32.const 2048) (i32.const 1) (i32.const 4096)))
    (local.set $h (call $alloc (i64.const 32)))
    (call $store_u64 (local.get $h) (i64.extend_i32_u (local.get $rc)))
    (call $store_u64 (i64.add (local.get $h) (i64.const 8)) (i64.extend_i32_u (i32.load (i32.const 4096))))
    (call $store_u64 (i64.add (local.get $h) (i64.const 16)) (i64.load (i32.const 2048)))
    (call $store_u64 (i64.add (local.get $h) (i64.const 24)) (i64.extend_i32_u (i32.load8_u (i32.const 2058))))
    (call $output_set (local.get $h) (i64.const 32))
    (i32.const 0)))"""
    )


def nap(plugin: Plugin) -> tuple[int, int, int, int]:
    return struct.unpack("<QQQQ", plugin.call("nap"))  # type: ignore[no-any-return]


def test_a_ten_second_sleep_ends_at_the_call_deadline() -> None:
    p = Plugin(sleeper(10 * 10**9), wasi=True, timeout_ms=50)
    with pytest.raises(PluginTimeout, match="^timeout$"):
        p.call("nap")


def test_an_absolute_sleep_far_ahead_ends_at_the_call_deadline() -> None:
    for clock in (0, 1):  # realtime and monotonic, as absolute times
        p = Plugin(sleeper(2**63, clock=clock, flags=1), wasi=True, timeout_ms=50)
        with pytest.raises(PluginTimeout):
            p.call("nap")


def test_a_short_sleep_within_the_deadline_wakes_with_its_event() -> None:
    p = Plugin(sleeper(5 * 10**6), wasi=True, timeout_ms=10_000)
    assert nap(p) == (0, 1, 7, 0)  # errno 0, one event, our userdata, a clock event


def test_without_a_deadline_a_sleep_lasts_what_it_asks() -> None:
    p = Plugin(sleeper(5 * 10**6), wasi=True)
    assert nap(p) == (0, 1, 7, 0)


def test_a_file_descriptor_subscription_is_ready_at_once() -> None:
    p = Plugin(sleeper(0, tag=2, fd=1), wasi=True, timeout_ms=1000)
    assert nap(p) == (0, 1, 7, 2)


def test_a_sleeping_initialisation_meets_the_init_deadline() -> None:
    sub = struct.pack("<QB7xI4xQQH6x", 1, 0, 1, 10 * 10**9, 0, 0)
    data = "".join(f"\\{b:02x}" for b in sub)
    wasm = wat(
        f"""(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "{data}")
  (func (export "_initialize") (drop (call $poll (i32.const 1024) (i32.const 2048) (i32.const 1) (i32.const 4096))))
  (func (export "run") (result i32) (i32.const 0)))"""
    )
    p = Plugin(wasm, wasi=True, timeout_ms=10_000, init_timeout_ms=50)
    with pytest.raises(PluginTimeout):
        p.call("run")


def test_a_plugin_cannot_plant_symlinks_in_its_folder(tmp_path: Path) -> None:
    target, name = b"../../../../etc/hostname", b"link"
    wasm = wat(
        f"""(module
  (import "wasi_snapshot_preview1" "path_symlink" (func $sym (param i32 i32 i32 i32 i32) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{target.decode()}")
  (data (i32.const 200) "{name.decode()}")
  (func (export "go") (result i32) (local $h i64)
    (local.set $h (call $alloc (i64.const 8)))
    (call $store_u64 (local.get $h) (i64.extend_i32_u
      (call $sym (i32.const 100) (i32.const {len(target)}) (i32.const 3) (i32.const 200) (i32.const {len(name)}))))
    (call $output_set (local.get $h) (i64.const 8))
    (i32.const 0)))"""
    )
    p = Plugin({"wasm": [{"data": wasm}], "allowed_paths": {str(tmp_path): "/data"}}, wasi=True)
    assert struct.unpack("<Q", p.call("go"))[0] == 58  # ENOTSUP
    assert list(tmp_path.iterdir()) == []


# ``late`` first waits in a host function until its deadline has passed (wasm cannot notice: no wasm runs), then asks
# random_get for ``n`` bytes at 0 and returns without entering wasm again, so nothing but random_get can see the
# deadline. ``fill`` outputs the first 16 bytes after asking for n of them.
def _random_plugin(n: int) -> bytes:
    return wat(
        f"""(module
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "extism:host/user" "wait_past_deadline" (func $wait))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1000)
  (func (export "late") (result i32)
    (call $wait) (drop (call $random (i32.const 0) (i32.const {n}))) (i32.const 0))
  (func (export "fill") (result i32) (local $h i64)
    (i64.store (i32.const 40) (i64.extend_i32_u (call $random (i32.const 0) (i32.const {n}))))
    (local.set $h (call $alloc (i64.const 24)))
    (call $store_u64 (local.get $h) (i64.load (i32.const 40)))
    (call $store_u64 (i64.add (local.get $h) (i64.const 8)) (i64.load (i32.const 0)))
    (call $store_u64 (i64.add (local.get $h) (i64.const 16)) (i64.load (i32.const 8)))
    (call $output_set (local.get $h) (i64.const 24))
    (i32.const 0)))"""
    )


def test_random_get_of_a_huge_buffer_stops_at_the_deadline() -> None:
    """A 50 MB random_get was one host call that ran about 0.4 s past the deadline (issue 10's review)."""
    timeout_ms = 20

    @host_fn(name="wait_past_deadline", signature=([], []))
    def wait_past_deadline(*_: object) -> None:
        time.sleep(2 * timeout_ms / 1000)  # a host call: the epoch cannot stop it, and the deadline passes

    p = Plugin(_random_plugin(50_000_000), functions=[wait_past_deadline], wasi=True, timeout_ms=timeout_ms)
    with pytest.raises(PluginTimeout, match="^timeout$"):
        p.call("late")


def test_random_get_still_fills_buffers_and_refuses_one_outside_memory() -> None:
    @host_fn(name="wait_past_deadline", signature=([], []))
    def unused(*_: object) -> None:
        raise AssertionError("not called")

    errno, a, b = struct.unpack("<QQQ", Plugin(_random_plugin(16), functions=[unused], wasi=True).call("fill"))
    assert errno == 0 and (a, b) != (0, 0)
    big = 3 * 1024 * 1024 + 5  # more than one step
    errno, a, b = struct.unpack("<QQQ", Plugin(_random_plugin(big), functions=[unused], wasi=True).call("fill"))
    assert errno == 0 and (a, b) != (0, 0)
    errno, _, _ = struct.unpack(
        "<QQQ", Plugin(_random_plugin(1000 * 65536 + 1), functions=[unused], wasi=True).call("fill")
    )
    assert errno == 21  # EFAULT (wasmtime's own random_get trapped the whole call)
