"""WAT animation plugins for engine tests. Each exports `frame` and reads the tick record from its input."""

from __future__ import annotations

from tests.conftest import wat

_HEAD = """(module
  (import "extism:host/env" "input_load_u64" (func $in64 (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  ;; the frame number (u64 at offset 0 of the tick record)
  (func $frame_no (result i64) (call $in64 (i64.const 0)))
  ;; width * height from the tick record (u16 at 20, u16 at 22)
  (func $pixels (result i64)
    (i64.mul (i64.and (i64.shr_u (call $in64 (i64.const 16)) (i64.const 32)) (i64.const 0xffff))
             (i64.shr_u (call $in64 (i64.const 16)) (i64.const 48))))
  ;; output a frame of `pixels` pixels of (r, g, b[, a]) with `ch` channels
  (func $solid (param $r i32) (param $g i32) (param $b i32) (param $a i32) (param $ch i32)
    (local $h i64) (local $i i64) (local $n i64)
    (local.set $n (i64.mul (call $pixels) (i64.extend_i32_u (local.get $ch))))
    (local.set $h (call $alloc (local.get $n)))
    (block $d (loop $l (br_if $d (i64.ge_u (local.get $i) (local.get $n)))
      (call $store_u8 (i64.add (local.get $h) (local.get $i)) (local.get $r))
      (call $store_u8 (i64.add (local.get $h) (i64.add (local.get $i) (i64.const 1))) (local.get $g))
      (call $store_u8 (i64.add (local.get $h) (i64.add (local.get $i) (i64.const 2))) (local.get $b))
      (if (i32.eq (local.get $ch) (i32.const 4))
        (then (call $store_u8 (i64.add (local.get $h) (i64.add (local.get $i) (i64.const 3))) (local.get $a))))
      (local.set $i (i64.add (local.get $i) (i64.extend_i32_u (local.get $ch)))) (br $l)))
    (call $output_set (local.get $h) (local.get $n)))
"""


def solid(r: int, g: int, b: int, a: int | None = None) -> bytes:
    """Every frame is one colour (RGBA if ``a`` is given)."""
    ch, alpha = (3, 0) if a is None else (4, a)
    return wat(
        _HEAD + f'(func (export "frame") (result i32) (call $solid (i32.const {r}) (i32.const {g}) '
        f"(i32.const {b}) (i32.const {alpha}) (i32.const {ch})) (i32.const 0)))"
    )


def done_after(n: int, r: int = 255, g: int = 255, b: int = 255) -> bytes:
    """Draws ``n`` frames, then returns empty output (done)."""
    return wat(
        _HEAD
        + f"""(func (export "frame") (result i32)
      (if (i64.ge_u (call $frame_no) (i64.const {n})) (then (return (i32.const 0))))
      (call $solid (i32.const {r}) (i32.const {g}) (i32.const {b}) (i32.const 0) (i32.const 3)) (i32.const 0)))"""
    )


def trap_every(n: int) -> bytes:
    """Traps on every frame whose number is a multiple of ``n`` (and on frame 0 when n == 1)."""
    return wat(
        _HEAD
        + f"""(func (export "frame") (result i32)
      (if (i64.eqz (i64.rem_u (call $frame_no) (i64.const {n}))) (then unreachable))
      (call $solid (i32.const 0) (i32.const 0) (i32.const 255) (i32.const 0) (i32.const 3)) (i32.const 0)))"""
    )


SPIN = wat(_HEAD + '(func (export "frame") (result i32) (loop $l (br $l)) (i32.const 0)))')

#: allocates until allocation fails, then traps, as a PDK allocator does (a page at a time)
MEMORY_BOMB = wat(
    _HEAD
    + """(func (export "frame") (result i32)
  (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable))"""
)

WRONG_SIZE = wat(
    _HEAD
    + """(func (export "frame") (result i32) (local $h i64)
  (local.set $h (call $alloc (i64.const 7))) (call $output_set (local.get $h) (i64.const 7)) (i32.const 0)))"""
)


def init_spin(iterations: int | None = None) -> bytes:
    """``_initialize`` loops (forever when ``iterations`` is None, else that many times); ``frame`` draws white."""
    body = (
        "(loop $l (br $l))"
        if iterations is None
        else f"(local $i i64) (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1))) "
        f"(br_if $l (i64.lt_u (local.get $i) (i64.const {iterations}))))"
    )
    return wat(
        _HEAD
        + f"""(func (export "_initialize") {body})
    (func (export "frame") (result i32)
      (call $solid (i32.const 255) (i32.const 255) (i32.const 255) (i32.const 0) (i32.const 3)) (i32.const 0)))"""
    )


#: ``_initialize`` spins ~2M iterations (far more than a frame budget), then ``frame`` says "done" at once
SLOW_INIT_DONE_AT_ONCE = wat(
    _HEAD
    + """(func (export "_initialize") (local $i i64)
      (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br_if $l (i64.lt_u (local.get $i) (i64.const 2000000)))))
    (func (export "frame") (result i32) (i32.const 0)))"""
)
