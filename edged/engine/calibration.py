"""Fuel calibration: how much fuel a plugin burns per millisecond on this host, so a budget in ms becomes fuel.

A mixed arithmetic and memory loop runs out of a known amount of fuel several times; the median rate is used.
Real plugins differ in their instruction mix, which is why the engine keeps an epoch deadline as a backstop.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import statistics
import time

import wasmtime

from ..errors import OutOfFuel
from ..runtime import Plugin

log = logging.getLogger("edged.engine")

_BURN = """(module
  (memory (export "memory") 1)
  (func (export "burn") (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc) (i32.load (i32.and (local.get $i) (i32.const 0xfffc)))))
      (i32.store (i32.and (i32.mul (local.get $i) (i32.const 7)) (i32.const 0xfffc)) (local.get $acc))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l))))"""

FUEL_PER_RUN = 4_000_000


@functools.cache
def fuel_per_ms(runs: int = 7) -> float:
    """Fuel units this host burns per millisecond (measured once per process)."""
    plugin = Plugin(wasmtime.wat2wasm(_BURN), fuel=FUEL_PER_RUN)
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        with contextlib.suppress(OutOfFuel):  # running out is the point
            plugin.call("burn")
        rates.append(FUEL_PER_RUN / ((time.perf_counter() - start) * 1e3))
    rate = statistics.median(rates)
    log.info("fuel calibration: %.0f fuel/ms", rate)
    return rate
