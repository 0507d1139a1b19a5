"""WAT pieces shared by the suites that write plugins against the raw Extism ABI."""

from __future__ import annotations

#: ``$block``: copy ``len`` bytes of plugin memory at ``ptr`` into a new kernel block (needs the kernel's ``$alloc``
#: and ``$store_u8`` imported under those names)
BLOCK = """
  ;; copy `len` bytes of plugin memory at `ptr` into a new kernel block
  (func $block (param $ptr i32) (param $len i32) (result i64) (local $h i64) (local $i i32)
    (local.set $h (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $h) (i64.extend_i32_u (local.get $i)))
                      (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (local.get $h))
"""
