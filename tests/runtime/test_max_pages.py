"""Issue 14, point 3: ``memory.max_pages`` admits what the Extism runtime admits: a memory starts at its declared
size (at most ``max_pages``) and may grow by ``max_pages`` pages more. Swept side by side with the official SDK.

The device keeps a hard cap on the total instead (``max_pages_caps_total``; tests/host/test_memory_budget.py).
"""

from __future__ import annotations

import extism
import pytest

from edged.runtime import OutOfMemory, Plugin, PluginError
from tests.conftest import wat

MAX_PAGES = 17
INITIAL = (0, 1, 2, 8, 16, 17, 18)
GROW = (0, 1, 2, 8, 16, 17)


def _grower(initial: int) -> bytes:
    """Grows its memory one page at a time, as many times as the input's first byte says; outputs "1" if every
    grow succeeded, "0" at the first refused one (memory.grow returned -1)."""
    return bytes(
        wat(
            f"""(module
  (import "extism:host/env" "input_load_u8" (func $in (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") {initial})
  (func (export "grow") (result i32) (local $k i32) (local $ok i32) (local $h i64)
    (local.set $k (call $in (i64.const 0))) (local.set $ok (i32.const 1))
    (block $d (loop $l (br_if $d (i32.eqz (local.get $k)))
      (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (local.set $ok (i32.const 0)) (br $d)))
      (local.set $k (i32.sub (local.get $k) (i32.const 1))) (br $l)))
    (local.set $h (call $alloc (i64.const 1)))
    (call $store_u8 (local.get $h) (i32.add (i32.const 48) (local.get $ok)))
    (call $output_set (local.get $h) (i64.const 1)) (i32.const 0)))"""
        )
    )


def _outcome(make: type, error: type, manifest: dict[str, object], grow: int) -> str:
    try:
        return make(manifest, functions=[]).call("grow", bytes([grow])).decode()
    except error as exc:
        return f"error: {exc}"


def test_max_pages_sweep_agrees_with_the_sdk() -> None:
    cells = {}
    for initial in INITIAL:
        manifest = {"wasm": [{"data": _grower(initial)}], "memory": {"max_pages": MAX_PAGES}}
        for grow in GROW:
            theirs = _outcome(extism.Plugin, extism.Error, manifest, grow)
            ours = _outcome(Plugin, PluginError, manifest, grow)
            cells[(initial, grow)] = (theirs, ours)
    differ = {cell: pair for cell, pair in cells.items() if pair[0] != pair[1]}
    assert not differ, differ
    # the interesting cells: 17 pages at the start, 17 more grown, works in both; a start above max_pages does not
    assert cells[(17, 17)] == ("1", "1")
    assert cells[(18, 0)] == ("error: oom", "error: oom")


def test_growing_past_the_budget_is_refused() -> None:
    """Known difference: a refused ``memory.grow`` that the plugin handles itself is only refused on edged
    (wasmtime-py cannot report it: there is no resource-limiter callback); Extism also fails the call as "oom".
    The budget holds either way."""
    manifest = {"wasm": [{"data": _grower(1)}], "memory": {"max_pages": MAX_PAGES}}
    assert _outcome(extism.Plugin, extism.Error, manifest, MAX_PAGES + 1) == "error: oom"
    assert _outcome(Plugin, PluginError, manifest, MAX_PAGES + 1) == "0"


def test_max_pages_caps_total_keeps_a_hard_cap_on_the_total() -> None:
    """What the device uses: max_pages bounds everything the plugin holds, its initial memory included."""
    manifest = {"wasm": [{"data": _grower(8)}], "memory": {"max_pages": MAX_PAGES}}
    assert Plugin(manifest, functions=[], max_pages_caps_total=True).call("grow", bytes([9])) == b"1"
    assert Plugin(manifest, functions=[], max_pages_caps_total=True).call("grow", bytes([10])) == b"0"
    big = {"wasm": [{"data": _grower(18)}], "memory": {"max_pages": MAX_PAGES}}
    with pytest.raises(OutOfMemory):
        Plugin(big, functions=[], max_pages_caps_total=True).call("grow", bytes([0]))
