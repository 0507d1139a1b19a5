"""Every limit gives a clear error, and the plugin works again afterwards."""

from __future__ import annotations

import struct
import threading

import pytest

from edged.runtime import OutOfFuel, OutOfMemory, OutputTooLarge, Plugin, PluginTimeout
from edged.runtime._engine import TICKER
from tests.conftest import wat
from tests.runtime.wats import KITCHEN


def test_fuel_limit_per_call_then_recovers() -> None:
    p = Plugin(KITCHEN, fuel=50_000)
    with pytest.raises(OutOfFuel, match="^plugin ran out of fuel$"):
        p.call("spin")
    assert p.call("echo", "still works") == b"still works"
    assert p.last_fuel_used is not None and 0 < p.last_fuel_used < 50_000


def test_fuel_is_reset_for_every_call() -> None:
    p = Plugin(KITCHEN, fuel=20_000)
    for _ in range(50):  # 50 calls together burn far more than one budget
        p.call("echo", b"x" * 100)


def test_timeout_from_argument_and_manifest_then_recovers() -> None:
    p = Plugin(KITCHEN, timeout_ms=30)
    with pytest.raises(PluginTimeout, match="^timeout$"):
        p.call("spin")
    assert p.call("echo", "ok") == b"ok"
    m = Plugin({"wasm": [{"data": KITCHEN}], "timeout_ms": 30})
    with pytest.raises(PluginTimeout):
        m.call("spin")
    assert m.call("echo", "ok") == b"ok"


def test_timeouts_in_several_threads_share_one_ticker() -> None:
    errors: list[BaseException] = []

    def spin() -> None:
        try:
            Plugin(KITCHEN, timeout_ms=40).call("spin")
        except PluginTimeout as exc:
            errors.append(exc)

    threads = [threading.Thread(target=spin) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(errors) == 4
    ticker_threads = [t for t in threading.enumerate() if t.name == "edged-epoch-ticker"]
    # POSIX timers need no thread at all; the fallback ticker is one thread for every call
    assert len(ticker_threads) == (0 if TICKER.kind == "native" else 1)
    assert TICKER._armed == 0 and not any(TICKER._armed_by.values())


def test_memory_limit_reports_oom_then_recovers() -> None:
    p = Plugin({"wasm": [{"data": KITCHEN}], "memory": {"max_pages": 4}})
    with pytest.raises(OutOfMemory, match="^oom$"):
        p.call("grow_forever")
    assert p.call("echo", "fine") == b"fine"
    assert p._inst is not None and p._inst.memory is not None
    assert p._inst.memory.size(p._inst.store) == 1  # a fresh instance


def test_memory_limit_does_not_cap_large_inputs_in_the_kernel() -> None:
    p = Plugin({"wasm": [{"data": KITCHEN}], "memory": {"max_pages": 2}})
    big = b"y" * (3 * 1024 * 1024)
    assert p.call("echo", big) == big


def test_memory_limit_below_the_module_minimum_is_oom() -> None:
    two_pages = wat('(module (memory (export "memory") 2) (func (export "f")))')
    with pytest.raises(OutOfMemory, match="^oom$"):
        Plugin({"wasm": [{"data": two_pages}], "memory": {"max_pages": 1}}).call("f")


def test_output_limit() -> None:
    p = Plugin(KITCHEN, max_output_bytes=1000)
    assert len(p.call("output_n", struct.pack("<I", 1000))) == 1000
    with pytest.raises(OutputTooLarge, match="output of 1001 bytes exceeds the limit of 1000 bytes"):
        p.call("output_n", struct.pack("<I", 1001))
    assert p.call("echo", "after") == b"after"


# --- initialisation runs under limits too (issue 10, point 2) -----------------------------------------------------

START_SPIN = wat(
    """(module (memory (export "memory") 1)
  (func $spin (loop $l (br $l)))
  (start $spin)
  (func (export "run") (result i32) (i32.const 0)))"""
)
INIT_SPIN = wat(
    """(module (memory (export "memory") 1)
  (func (export "_initialize") (loop $l (br $l)))
  (func (export "run") (result i32) (i32.const 0)))"""
)


@pytest.mark.parametrize(("wasm", "where"), [(START_SPIN, "start function"), (INIT_SPIN, "initialisation")])
def test_a_looping_start_or_initialise_runs_out_of_the_call_fuel(wasm: bytes, where: str) -> None:
    p = Plugin(wasm, fuel=100_000)
    with pytest.raises(OutOfFuel, match=f"{where}.*ran out of fuel"):
        p.call("run")


@pytest.mark.parametrize(("wasm", "where"), [(START_SPIN, "start function"), (INIT_SPIN, "initialisation")])
def test_a_looping_start_or_initialise_meets_the_call_timeout(wasm: bytes, where: str) -> None:
    p = Plugin(wasm, timeout_ms=50)
    with pytest.raises(PluginTimeout, match=f"{where}.*timeout"):
        p.call("run")


def test_initialisation_has_limits_of_its_own() -> None:
    p = Plugin(INIT_SPIN, fuel=10**9, init_fuel=100_000)
    with pytest.raises(OutOfFuel, match="initialisation"):
        p.call("run")
    q = Plugin(INIT_SPIN, timeout_ms=60_000, init_timeout_ms=30)
    with pytest.raises(PluginTimeout, match="initialisation"):
        q.call("run")
    # the call's own limits are in force again after a successful initialisation
    ok = Plugin(KITCHEN, fuel=50_000, init_fuel=10**9)
    with pytest.raises(OutOfFuel, match="^plugin ran out of fuel$"):
        ok.call("spin")
    assert ok.call("echo", "x") == b"x"
