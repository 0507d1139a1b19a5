"""Fuel calibration: how much fuel a plugin burns per millisecond on this host, so a budget in ms becomes fuel.

Two loops run out of a known amount of fuel several times each; the lower median rate is used, so a budget in ms
converted to fuel holds for any instruction mix. The engine still keeps an epoch deadline as a backstop.
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

    The lower of the two mixes' median rates: a budget of N ms in fuel then runs out within about N ms whatever the
    plugin executes, so the wall-clock deadline stays a backstop rather than the usual limit.
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
    rate = min(medians.values())
    log.info("fuel calibration: %.0f fuel/ms", rate, extra={"rates": medians})
    return rate
