"""WAT plugins for the runtime's edge cases. Each is a complete Extism plugin written against the raw ABI."""

from __future__ import annotations

from tests.conftest import wat
from tests.support.wat import BLOCK

ENV = (
    """
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "error_set" (func $error_set (param i64)))
  (import "extism:host/env" "var_get" (func $var_get (param i64) (result i64)))
  (import "extism:host/env" "var_set" (func $var_set (param i64 i64)))
  (import "extism:host/env" "log_info" (func $log_info (param i64)))
  (import "extism:host/env" "log_error" (func $log_error (param i64)))
  (import "extism:host/env" "get_log_level" (func $get_log_level (result i32)))
  (import "extism:host/env" "http_request" (func $http_request (param i64 i64) (result i64)))
  (import "extism:host/env" "http_status_code" (func $http_status_code (result i32)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "load_u8" (func $load_u8 (param i64) (result i32)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (memory (export "memory") 1)
  (global $inits (mut i32) (i32.const 0))
  (global $counter (mut i32) (i32.const 0))
"""
    + BLOCK
    + """
  (func $output_block (param $h i64) (call $output_set (local.get $h) (call $length (local.get $h))))
"""
)

#: A plugin with one export per behaviour under test. Strings live in a data segment.
KITCHEN = wat(
    "(module"
    + ENV
    + r"""
  (data (i32.const 0) "hello")            ;; 0..5
  (data (i32.const 16) "boom")            ;; 16..20
  (data (i32.const 32) "count")           ;; 32..37
  (data (i32.const 48) "logged at info")  ;; 48..62
  (data (i32.const 64) "soft error")      ;; 64..74
  (func (export "__wasm_call_ctors") (global.set $inits (i32.add (global.get $inits) (i32.const 1))))
  (func (export "echo") (result i32) (call $output_set (call $input_offset) (call $input_length)) (i32.const 0))
  (func (export "noop") (result i32) (i32.const 0))
  (func (export "void_export"))
  (func (export "hello") (result i32) (call $output_block (call $block (i32.const 0) (i32.const 5))) (i32.const 0))
  (func (export "inits") (result i32)
    (i32.store8 (i32.const 200) (i32.add (i32.const 48) (global.get $inits)))
    (call $output_block (call $block (i32.const 200) (i32.const 1))) (i32.const 0))
  (func (export "counter") (result i32)
    (global.set $counter (i32.add (global.get $counter) (i32.const 1)))
    (i32.store8 (i32.const 200) (i32.add (i32.const 48) (global.get $counter)))
    (call $output_block (call $block (i32.const 200) (i32.const 1))) (i32.const 0))
  (func (export "fail") (result i32) (call $error_set (call $block (i32.const 16) (i32.const 4))) (i32.const 1))
  (func (export "fail_rc0") (result i32) (call $error_set (call $block (i32.const 64) (i32.const 10))) (i32.const 0))
  (func (export "rc7") (result i32) (i32.const 7))
  (func (export "trap") (result i32) unreachable)
  (func (export "spin") (loop $l (br $l)))
  (func (export "wrong_sig") (param i32) (result i32) (local.get 0))
  ;; var "count" holds one byte, incremented per call and returned
  (func (export "var_count") (result i32) (local $v i64) (local $n i32)
    (local.set $v (call $var_get (call $block (i32.const 32) (i32.const 5))))
    (local.set $n (i32.const 48))
    (if (i64.ne (local.get $v) (i64.const 0))
      (then (local.set $n (call $load_first (local.get $v)))))
    (local.set $n (i32.add (local.get $n) (i32.const 1)))
    (i32.store8 (i32.const 200) (local.get $n))
    (call $var_set (call $block (i32.const 32) (i32.const 5)) (call $block (i32.const 200) (i32.const 1)))
    (call $output_block (call $block (i32.const 200) (i32.const 1))) (i32.const 0))
  ;; input "k=v" style is too much for WAT: var_set(input as key, input as value)
  (func (export "var_set_input") (result i32)
    (call $var_set (call $copy_input) (call $copy_input)) (i32.const 0))
  (func (export "var_del_input") (result i32)
    (call $var_set (call $copy_input) (i64.const 0)) (i32.const 0))
  (func (export "var_get_input") (result i32) (local $v i64)
    (local.set $v (call $var_get (call $copy_input)))
    (if (i64.ne (local.get $v) (i64.const 0)) (then (call $output_block (local.get $v))))
    (i32.const 0))
  (func (export "log") (result i32)
    (call $log_info (call $block (i32.const 48) (i32.const 14)))
    (call $log_error (call $block (i32.const 16) (i32.const 4)))
    (i32.store8 (i32.const 200) (i32.add (i32.const 48) (call $get_log_level)))
    (call $output_block (call $block (i32.const 200) (i32.const 1))) (i32.const 0))
  ;; input is the JSON request; output is the body, error if the request failed
  (func (export "http") (result i32) (local $b i64)
    (local.set $b (call $http_request (call $copy_input) (i64.const 0)))
    (if (i64.ne (local.get $b) (i64.const 0)) (then (call $output_block (local.get $b))))
    (i32.const 0))
  (func (export "http_status") (result i32)
    (i32.store (i32.const 200) (call $http_status_code))
    (call $output_block (call $block (i32.const 200) (i32.const 4))) (i32.const 0))
  ;; grow plugin memory one page at a time; trap when it fails (what PDK allocators do)
  (func (export "grow_forever") (result i32)
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable)
  ;; output N bytes where N is the little-endian u32 input
  (func (export "output_n") (result i32) (local $n i64)
    (local.set $n (i64.load32_u (call $input_ptr)))
    (call $output_set (call $alloc (local.get $n)) (local.get $n)) (i32.const 0))
  (func $input_ptr (result i32)
    (i32.wrap_i64 (call $block_to_plugin (call $input_offset) (call $input_length))))
  (func $copy_input (result i64) (local $h i64) (local $n i64) (local $i i64)
    (local.set $n (call $input_length))
    (local.set $h (call $alloc (local.get $n)))
    (block $done (loop $next
      (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
      (call $store_u8 (i64.add (local.get $h) (local.get $i))
                      (call $input_load_u8 (local.get $i)))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $next)))
    (local.get $h))
  (func $block_to_plugin (param $h i64) (param $n i64) (result i64) (local $i i64)
    (block $done (loop $next
      (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
      (i32.store8 (i32.add (i32.const 1024) (i32.wrap_i64 (local.get $i)))
                  (call $load_u8 (i64.add (local.get $h) (local.get $i))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $next)))
    (i64.const 1024))
  (func $load_first (param $h i64) (result i32) (call $load_u8 (local.get $h)))
)"""
)
