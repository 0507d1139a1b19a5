"""Fuel calibration: how much fuel a plugin burns per millisecond on this host, so a budget in ms becomes fuel.

Two loops run out of a known amount of fuel several times each: a dense one (memory and arithmetic, like real
plugins) sets the rate; a sparse one (a bare branch loop) is logged, to show how much less fuel per ms such code
burns — the epoch deadline, not fuel, stops that kind of loop on time.
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

#: Two instruction mixes: memory and arithmetic (many instructions per loop iteration), and a bare branch loop
#: (one). wasmtime meters fuel per instruction, so dense code burns more fuel per millisecond than a tight loop.
_BURN = """(module
  (memory (export "memory") 1)
  (func (export "dense") (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc) (i32.load (i32.and (local.get $i) (i32.const 0xfffc)))))
      (i32.store (i32.and (i32.mul (local.get $i) (i32.const 7)) (i32.const 0xfffc)) (local.get $acc))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
  (func (export "sparse") (loop $l (br $l))))"""

FUEL_PER_RUN = 4_000_000


@functools.cache
def fuel_per_ms(runs: int = 7) -> float:
    """Fuel units this host burns per millisecond (measured once per process).

    The dense mix's median rate: real plugins (pixel arithmetic, memory) burn fuel like it, so a budget of N ms in
    fuel lets them run about N ms. Code with few instructions per loop (a bare ``br`` loop burns several times less
    fuel per ms) is stopped by the wall-clock deadline instead, which is what the backstop is for.
    """
    plugin = Plugin(wasmtime.wat2wasm(_BURN), fuel=FUEL_PER_RUN)
    medians = {}
    for export in ("dense", "sparse"):
        rates = []
        for _ in range(runs):
            start = time.perf_counter()
            with contextlib.suppress(OutOfFuel):  # running out is the point
                plugin.call(export)
            rates.append(FUEL_PER_RUN / ((time.perf_counter() - start) * 1e3))
        medians[export] = statistics.median(rates)
    rate = medians["dense"]
    log.info("fuel calibration: %.0f fuel/ms", rate, extra={"rates": medians})
    return rate
