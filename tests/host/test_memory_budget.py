"""One memory budget covers everything a plugin can grow (issue 10, point 5): its memories however many, the
kernel's memory (blocks, vars, HTTP responses), and its tables; the manifest only asks, the device decides."""

from __future__ import annotations

from typing import Any

import pytest

from edged.errors import PluginLoadError
from edged.host.functions import DisplayInfo
from edged.host.plugin import DevicePlugin, memory_plan
from edged.runtime import PAGE, MemoryOptions
from tests.conftest import wat

MIB = 1 << 20
BUDGET = 16 * MIB


def device(wasm: bytes, memory: dict[str, Any] | None = None, budget: int = BUDGET) -> DevicePlugin:
    manifest: dict[str, Any] = {
        "wasm": [{"data": wasm}],
        "edged": {"name": "bomb", "kind": "animation", "capabilities": {"led": True}},
    }
    if memory:
        manifest["memory"] = memory
    return DevicePlugin(
        manifest, display=DisplayInfo(16, 16, fps=60), memory_budget=budget, fuel=10**9, timeout_ms=5000
    )


#: grows its one memory a page at a time until growth fails, then reports how far it got (in pages) as an error
REPORT = """
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (global $pages (mut i32) (i32.const 0))
  (func $report (result i32) (local $h i64)
    (local.set $h (call $alloc (i64.const 8)))
    (call $store_u64 (local.get $h) (i64.extend_i32_u (global.get $pages)))
    (call $output_set (local.get $h) (i64.const 8)) (i32.const 0))
"""

GROW_ALL = wat(
    "(module"
    + REPORT
    + """(memory (export "memory") 1)
  (func (export "grow") (result i32)
    (global.set $pages (i32.const 1))
    (loop $l (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1))
      (then (global.set $pages (i32.add (global.get $pages) (i32.const 1))) (br $l))))
    (call $report))
  (func (export "frame") (result i32) (i32.const 0)))"""
)

#: four memories, each grown until it fails
MULTI = wat(
    "(module"
    + REPORT
    + """(memory $m0 (export "memory") 1) (memory $m1 1) (memory $m2 1) (memory $m3 1)
  (func $fill (param $which i32)
    (loop $l
      (if (i32.ne
            (if (result i32) (i32.eqz (local.get $which)) (then (memory.grow $m0 (i32.const 1)))
              (else (if (result i32) (i32.eq (local.get $which) (i32.const 1)) (then (memory.grow $m1 (i32.const 1)))
                (else (if (result i32) (i32.eq (local.get $which) (i32.const 2)) (then (memory.grow $m2 (i32.const 1)))
                  (else (memory.grow $m3 (i32.const 1))))))))
            (i32.const -1))
        (then (global.set $pages (i32.add (global.get $pages) (i32.const 1))) (br $l)))))
  (func (export "grow") (result i32)
    (global.set $pages (i32.const 4))
    (call $fill (i32.const 0)) (call $fill (i32.const 1)) (call $fill (i32.const 2)) (call $fill (i32.const 3))
    (call $report))
  (func (export "frame") (result i32) (i32.const 0)))"""
)

#: table.grow by 10 million elements (reports what table.grow returned), then table.fill over the whole table
TABLE_BOMB = wat(
    "(module"
    + REPORT
    + """(memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "grow") (result i32)
    (global.set $pages (table.grow $t (ref.null func) (i32.const 10000000)))
    (table.fill $t (i32.const 0) (ref.null func) (table.size $t))
    (call $report))
  (func (export "frame") (result i32) (i32.const 0)))"""
)


def reached(dp: DevicePlugin) -> int:
    """Run the bomb's ``grow`` export and return the bytes its memories reached (it reports the pages)."""
    return int.from_bytes(dp.plugin.call("grow"), "little") * PAGE


def test_the_manifest_cannot_raise_its_memory_above_the_device_budget() -> None:
    limited, kernel, _ = memory_plan(BUDGET, MemoryOptions(max_pages=16384), 16 * 16 * 4, "bomb")  # asks for 1 GiB
    assert limited.max_pages is not None and limited.max_pages * PAGE + kernel <= BUDGET
    dp = device(GROW_ALL, {"max_pages": 16384})
    assert 8 * MIB < reached(dp) <= BUDGET - kernel


def test_a_lower_max_pages_in_the_manifest_is_kept() -> None:
    limited, _, _ = memory_plan(BUDGET, MemoryOptions(max_pages=4), 1024, "small")
    assert limited.max_pages == 4


def test_several_memories_share_one_budget() -> None:
    dp = device(MULTI)
    assert dp.compiled.memories == 4
    _, kernel, _ = memory_plan(BUDGET, MemoryOptions(), 16 * 16 * 4, "bomb")
    assert 4 * MIB < reached(dp) <= BUDGET - kernel


def test_tables_cannot_grow_without_bound_and_too_many_are_refused() -> None:
    dp = device(TABLE_BOMB)
    assert dp.plugin.call("grow") == (2**32 - 1).to_bytes(8, "little")  # table.grow failed (-1) at once
    many = wat('(module (memory (export "memory") 1) ' + "(table 1 funcref) " * 9 + ")")
    with pytest.raises(PluginLoadError, match="9 tables; at most 8"):
        device(many)


def test_var_and_http_budgets_are_clamped_into_the_kernel_limit() -> None:
    asked = MemoryOptions(max_var_bytes=1 << 30, max_http_response_bytes=1 << 30)
    limited, kernel, _ = memory_plan(BUDGET, asked, 1024, "p")
    assert limited.max_var_bytes == BUDGET // 8
    assert limited.max_http_response_bytes is not None and limited.max_http_response_bytes < kernel
    dp = device(GROW_ALL, {"max_var_bytes": 1 << 30})
    assert dp.plugin.env.max_var_bytes == BUDGET // 8


def test_a_budget_too_small_for_the_kernel_is_a_clear_load_error() -> None:
    with pytest.raises(PluginLoadError, match="memory budget of 1 MiB is too small"):
        device(GROW_ALL, budget=MIB)


def test_wasm_gc_is_refused_at_load() -> None:
    gc = wat(
        '(module (type $a (array (mut i8))) (memory (export "memory") 1) '
        '(func (export "frame") (result i32) (drop (array.new_default $a (i32.const 1000000))) (i32.const 0)))'
    )
    with pytest.raises(PluginLoadError):
        device(gc)
