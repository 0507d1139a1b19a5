"""Issue 14, point 5: Matricks ``setup`` runs under the init budget, not inside the first frame's fuel."""

from __future__ import annotations

import numpy as np

from edged.host.frames import Tick

SETUP_LOOPS = 2_000_000  # several million instructions: far more than a frame's fuel below, far less than init's
FRAME_FUEL = 200_000


def _heavy_setup_plugin() -> bytes:
    from tests.conftest import wat

    # setup counts to SETUP_LOOPS and only then marks itself done; update draws blue once setup finished, else black
    return wat(
        f"""(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "[[[255,0,0,255]]]")
  (data (i32.const 32) "[[[0,0,0,255]]]  ")
  (global $done (mut i32) (i32.const 0))
  (func (export "setup") (result i32) (local $i i64)
    (block $d (loop $l (br_if $d (i64.ge_u (local.get $i) (i64.const {SETUP_LOOPS})))
      (local.set $i (i64.add (local.get $i) (i64.const 1))) (br $l)))
    (global.set $done (i32.const 1)) (i32.const 0))
  (func (export "update") (result i32) (local $h i64) (local $i i32) (local $src i32)
    (local.set $src (select (i32.const 0) (i32.const 32) (global.get $done)))
    (local.set $h (call $alloc (i64.const 17)))
    (block $d (loop $l (br_if $d (i32.ge_u (local.get $i) (i32.const 17)))
      (call $store_u8 (i64.add (local.get $h) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $src) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l)))
    (call $output_set (local.get $h) (i64.const 17)) (i32.const 0)))"""
    )


def _device(**limits: int):
    from edged.host.functions import DisplayInfo
    from edged.host.plugin import DevicePlugin

    manifest = {
        "wasm": [{"data": _heavy_setup_plugin()}],
        "edged": {"name": "heavy-setup", "kind": "matricks", "capabilities": {"led": True}},
    }
    return DevicePlugin(manifest, display=DisplayInfo(1, 1, fps=60), fuel=FRAME_FUEL, timeout_ms=2000, **limits)


def test_a_setup_heavier_than_a_frame_completes_and_its_work_is_kept() -> None:
    for limits in ({}, {"init_fuel": 50_000_000}):  # the default init budget (no fuel cap) and an explicit one
        with _device(**limits) as dp:
            frame = dp.frame(Tick(0, 0, 16_667, 1, 1, True))
            assert frame is not None and np.asarray(frame).reshape(-1)[:3].tolist() == [0, 0, 255]  # setup's work
            assert dp.last_fuel_used is not None and dp.last_fuel_used < FRAME_FUEL
            # the next frame still sees it, and setup does not run again
            frame = dp.frame(Tick(1, 16_667, 16_667, 1, 1, False))
            assert frame is not None and np.asarray(frame).reshape(-1)[:3].tolist() == [0, 0, 255]


def test_setup_itself_stays_bounded_by_the_init_budget() -> None:
    import pytest

    from edged.errors import OutOfFuel

    with _device(init_fuel=1_000_000) as dp:  # setup needs more than its budget: cut off, raised (a strike)
        with pytest.raises(OutOfFuel):
            dp.frame(Tick(0, 0, 16_667, 1, 1, True))
        assert not dp.ready  # the trap took the instance; the next frame starts over with setup
