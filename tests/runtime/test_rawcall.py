"""The fast FFI call path must behave exactly like wasmtime-py's Func.__call__."""

from __future__ import annotations

import pytest
import wasmtime

from edged.runtime import _rawcall
from edged.runtime._engine import ENGINE
from tests.conftest import wat

MODULE = wat("""(module
  (import "host" "cb" (func $cb (param i64) (result i64)))
  (func (export "add") (param i32 i64) (result i64) (i64.add (i64.extend_i32_s (local.get 0)) (local.get 1)))
  (func (export "pair") (param i64) (result i64 i32) (local.get 0) (i32.const -1))
  (func (export "rc") (result i32) (i32.const 42))
  (func (export "nothing"))
  (func (export "trap") (result i32) unreachable)
  (func (export "via_host") (result i32) (i32.wrap_i64 (call $cb (i64.const 5)))))""")


class HostBoom(Exception):
    pass


@pytest.fixture
def env() -> tuple[wasmtime.Store, dict]:
    store = wasmtime.Store(ENGINE)
    store.set_fuel(10**9)
    store.set_epoch_deadline(10**9)
    linker = wasmtime.Linker(ENGINE)
    i64 = wasmtime.ValType.i64()

    def cb(x: int) -> int:
        if x == 5:
            raise HostBoom("from the host")
        return x

    linker.define_func("host", "cb", wasmtime.FuncType([i64], [i64]), cb)
    inst = linker.instantiate(store, wasmtime.Module(ENGINE, MODULE))
    return store, inst.exports(store)


def test_fast_path_is_available_with_the_pinned_wasmtime() -> None:
    assert _rawcall.available()


def test_args_and_results(env: tuple) -> None:
    store, ex = env
    add = _rawcall.raw_caller(store, ex["add"], ("i32", "i64"), ("i64",))
    assert add(-2, 2**40) == ex["add"](store, -2, 2**40) == 2**40 - 2
    pair = _rawcall.raw_caller(store, ex["pair"], ("i64",), ("i64", "i32"))
    assert pair(7) == (7, -1)
    assert _rawcall.raw_caller(store, ex["nothing"], (), ())() is None


def test_no_arg_caller_returns_the_rc(env: tuple) -> None:
    store, ex = env
    assert _rawcall.no_arg_caller(store, ex["rc"], True)() == 42
    assert _rawcall.no_arg_caller(store, ex["nothing"], False)() == 0


def test_traps_and_host_exceptions_are_raised_as_wasmtime_would(env: tuple) -> None:
    store, ex = env
    with pytest.raises(wasmtime.Trap) as fast:
        _rawcall.no_arg_caller(store, ex["trap"], True)()
    with pytest.raises(wasmtime.Trap) as slow:
        ex["trap"](store)
    assert fast.value.trap_code == slow.value.trap_code == wasmtime.TrapCode.UNREACHABLE
    with pytest.raises(HostBoom, match="from the host"):
        _rawcall.no_arg_caller(store, ex["via_host"], True)()
    # nothing stays behind for the next call
    assert _rawcall.no_arg_caller(store, ex["rc"], True)() == 42


def test_raw_host_functions_pass_values_and_exceptions() -> None:
    import gc

    store = wasmtime.Store(ENGINE)
    store.set_fuel(10**9)
    store.set_epoch_deadline(10**9)
    linker = wasmtime.Linker(ENGINE)
    i32, i64, f64 = wasmtime.ValType.i32(), wasmtime.ValType.i64(), wasmtime.ValType.f64()
    seen: list[tuple] = []

    def cb(a: int, b: int, c: float) -> int:
        seen.append((a, b, c))
        if a < 0:
            raise HostBoom("negative")
        return a + b

    before = set(_rawcall._RAW_FUNCS)
    _rawcall.define_raw_func(linker, "host", "cb", wasmtime.FuncType([i32, i64, f64], [i64]), cb)
    (ours,) = set(_rawcall._RAW_FUNCS) - before
    module = wasmtime.Module(
        ENGINE,
        wat("""(module (import "host" "cb" (func $cb (param i32 i64 f64) (result i64)))
          (func (export "ok") (result i64) (call $cb (i32.const 2) (i64.const 40) (f64.const 0.5)))
          (func (export "bad") (result i64) (call $cb (i32.const -1) (i64.const 0) (f64.const 0))))"""),
    )
    ex = linker.instantiate(store, module).exports(store)
    assert ex["ok"](store) == 42
    assert seen == [(2, 40, 0.5)]
    with pytest.raises(HostBoom, match="negative"):
        ex["bad"](store)
    assert ex["ok"](store) == 42
    del ex, linker, store, module
    gc.collect()
    assert ours not in _rawcall._RAW_FUNCS  # the finalizer released the callback
