"""Calling wasm functions from Python with one FFI crossing and no per-call type lookups.

``wasmtime.Func.__call__`` looks up the function type and boxes every value on each call (~14 µs for a no-argument
call on our 2-core machines); the checked ``wasmtime_func_call`` with preallocated value arrays costs ~2.5 µs.
This module wraps that C entry point, keeps wasmtime-py's handling of traps and of Python exceptions raised by host
functions (``enter_wasm``), and is covered by tests/runtime/test_rawcall.py. It uses wasmtime-py internals that are
pinned by the ``wasmtime>=50,<51`` requirement; :func:`available` reports whether they are present, and callers
fall back to ``Func.__call__`` if not.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Callable, Sequence
from ctypes import POINTER, byref
from typing import Any, cast

import wasmtime

try:  # wasmtime-py internals; see the module docstring
    from wasmtime import _ffi as ffi
    from wasmtime import _func as _wasmtime_func
    from wasmtime._func import maybe_raise_last_exn

    _call = ffi.wasmtime_func_call
    _I32, _I64 = ffi.WASMTIME_I32, ffi.WASMTIME_I64
    _AVAILABLE = True
except (ImportError, AttributeError):  # pragma: no cover - only on an unexpected wasmtime-py
    _AVAILABLE = False


def _raise(err: Any, trap: Any) -> None:
    """Raise what wasmtime-py's ``enter_wasm`` would: a host function's own exception first, else the trap."""
    if trap:
        trap_obj = wasmtime.Trap._from_ptr(trap)
        maybe_raise_last_exn()
        raise trap_obj
    maybe_raise_last_exn()
    raise wasmtime.WasmtimeError._from_ptr(err)


def available() -> bool:
    """True when the fast path can be used with the installed wasmtime-py."""
    return _AVAILABLE


def raw_caller(
    store: wasmtime.Store, func: wasmtime.Func, params: Sequence[str], results: Sequence[str]
) -> Callable[..., Any]:
    """A caller for ``func`` taking and returning plain ints.

    ``params`` and ``results`` are sequences of ``"i32"``/``"i64"``. The caller returns ``None``, one int, or a
    tuple. Traps raise ``wasmtime.Trap``; an exception raised by a Python host function during the call is
    re-raised as itself.
    """
    if not _AVAILABLE:  # pragma: no cover
        return lambda *a: func(store, *a)
    ctx = store._context()
    fptr = byref(func._func)
    nparams, nresults = len(params), len(results)
    args = (ffi.wasmtime_val_t * max(nparams, 1))()
    for i, kind in enumerate(params):
        args[i].kind = _I32 if kind == "i32" else _I64
    res = (ffi.wasmtime_val_t * max(nresults, 1))()
    arg_slots = [(args[i].of, "i32" if k == "i32" else "i64") for i, k in enumerate(params)]
    res_fields = ["i32" if k == "i32" else "i64" for k in results]
    args_ptr = args if nparams else None
    trap_t = POINTER(ffi.wasm_trap_t)

    def invoke(*values: int) -> Any:
        for (slot, field), value in zip(arg_slots, values, strict=True):
            setattr(slot, field, value)
        trap = trap_t()
        err = _call(ctx, fptr, args_ptr, nparams, res, nresults, byref(trap))
        if err or trap:
            _raise(err, trap)
        if nresults == 0:
            return None
        if nresults == 1:
            return getattr(res[0].of, res_fields[0])
        return tuple(getattr(res[i].of, f) for i, f in enumerate(res_fields))

    # the raw pointers above live only as long as these objects: the caller holds them (a function attribute,
    # which mypy does not model)
    invoke._keep = (store, func, args, res)  # type: ignore[attr-defined]
    return invoke


def no_arg_caller(store: wasmtime.Store, func: wasmtime.Func, returns_i32: bool) -> Callable[[], int]:
    """The fastest caller for an Extism export, ``() -> i32`` or ``() -> ()``: returns the rc (0 if none)."""
    if not _AVAILABLE:  # pragma: no cover
        return lambda: func(store) or 0
    ctx = store._context()
    fptr = byref(func._func)
    res = (ffi.wasmtime_val_t * 1)()
    nres = 1 if returns_i32 else 0
    of = res[0].of
    trap_t = POINTER(ffi.wasm_trap_t)

    def invoke() -> int:
        trap = trap_t()
        err = _call(ctx, fptr, None, 0, res, nres, byref(trap))
        if err or trap:
            _raise(err, trap)
        return of.i32 if returns_i32 else 0

    invoke._keep = (store, func, res)  # type: ignore[attr-defined]  # keeps the pointers' objects alive, as above
    return invoke


# --- host functions ------------------------------------------------------------------------------------------------

#: Live raw host functions by handle; entries are removed by wasmtime's finalizer when the linker item is dropped.
_RAW_FUNCS: dict[int, tuple[Callable[..., Any], tuple[str, ...], str | None]] = {}
_raw_ids = itertools.count(1)

if _AVAILABLE:
    # ctypes callback types wrap plain functions (called, not used as decorators: a decorator that is a class
    # would leave the functions untyped to mypy)

    def _raw_trampoline_py(env: int | None, caller: Any, values: Any, n: int) -> int:
        try:
            fn, params, result = _RAW_FUNCS[env or 0]
            out = fn(*[getattr(values[i], kind) for i, kind in enumerate(params)])
            if result is not None:
                setattr(values[0], result, out)
            return 0
        except BaseException as exc:  # handed to the caller of the wasm call, as wasmtime-py's own trampoline does
            # a KeyboardInterrupt too, although wasmtime-py annotates the slot as Exception
            _wasmtime_func.LAST_EXCEPTION = exc  # type: ignore[assignment]
            trap = wasmtime.Trap("python exception")._consume()
            return ctypes.cast(trap, ctypes.c_void_p).value or 0

    def _raw_finalize_py(env: int | None) -> None:
        _RAW_FUNCS.pop(env or 0, None)

    _raw_trampoline = ffi.wasmtime_func_unchecked_callback_t(_raw_trampoline_py)
    _raw_finalize = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_raw_finalize_py)


def value_kinds(ty: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A function type as kind names: ``(("i64", "i64"), ("i64",))``."""
    kinds = {str(wasmtime.ValType.i32()): "i32", str(wasmtime.ValType.i64()): "i64"}
    kinds |= {str(wasmtime.ValType.f32()): "f32", str(wasmtime.ValType.f64()): "f64"}
    return tuple(kinds[str(p)] for p in ty.params), tuple(kinds[str(r)] for r in ty.results)


def define_raw_func(
    linker: wasmtime.Linker,
    module: str,
    name: str,
    ty: wasmtime.FuncType,
    fn: Callable[..., Any],
    kinds: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> None:
    """Define ``module::name`` in ``linker`` as ``fn``, called with plain ints/floats (no Caller, no boxing).

    About 3x cheaper per call than ``Linker.define_func``. Exceptions from ``fn`` fail the wasm call and are
    re-raised to whoever called into wasm, exactly as with ``define_func``. ``kinds`` (from :func:`value_kinds`)
    saves re-reading ``ty`` when the same type is defined for every instance.
    """
    if not _AVAILABLE:  # pragma: no cover
        linker.define_func(module, name, ty, fn)
        return
    params, results = kinds if kinds is not None else value_kinds(ty)
    if len(results) > 1:  # several results (a tuple-returning host function): wasmtime-py's own path
        linker.define_func(module, name, ty, fn)
        return
    idx = next(_raw_ids)
    _RAW_FUNCS[idx] = (fn, params, results[0] if results else None)
    mod, nm = module.encode(), name.encode()
    err = ffi.wasmtime_linker_define_func_unchecked(
        linker.ptr(),
        ctypes.create_string_buffer(mod),
        len(mod),
        ctypes.create_string_buffer(nm),
        len(nm),
        ty.ptr(),
        _raw_trampoline,
        idx,
        _raw_finalize,
    )
    if err:
        _RAW_FUNCS.pop(idx, None)
        raise wasmtime.WasmtimeError._from_ptr(err)


def export_indices(module: wasmtime.Module, names: Sequence[str]) -> dict[str, int]:
    """Positions of ``names`` among ``module``'s exports (the order an instance reports them in)."""
    order = {e.name: i for i, e in enumerate(module.exports)}
    return {n: order[n] for n in names if n in order}


def exports_at(store: wasmtime.Store, instance: wasmtime.Instance, indices: dict[str, int]) -> dict[str, Any]:
    """The instance's exports at ``indices`` (from :func:`export_indices`) as ``Func``/``Memory`` objects, without
    building wasmtime-py's map of every export: several times cheaper when an instance is created per call."""
    if not _AVAILABLE:  # pragma: no cover
        ex = instance.exports(store)
        return {n: ex[n] for n in indices}
    ctx = store._context()
    inst = byref(instance._instance)
    name_ptr = _NAME_PTR()
    name_len = ctypes.c_size_t(0)
    out: dict[str, Any] = {}
    for name, i in indices.items():
        item = _EXTERN()
        if not _export_nth(ctx, inst, i, byref(name_ptr), byref(name_len), byref(item)):
            raise wasmtime.WasmtimeError(f"export {i} ({name}) is missing")
        kind = cast(int, item.kind)  # ctypes reads a c_uint8 field as an int (wasmtime-py annotates the field type)
        if kind == _KIND_FUNC:
            out[name] = _new_func(item.of.func)
        elif kind == _KIND_MEMORY:
            out[name] = _new_memory(item.of.memory)
        else:
            from wasmtime._extern import wrap_extern

            out[name] = wrap_extern(item)
    return out


def define_func(
    linker: wasmtime.Linker, store: wasmtime.Store, module: bytes, name: bytes, func: wasmtime.Func
) -> None:
    """``linker.define(store, module, name, func)`` without wasmtime-py's per-call conversions."""
    if not _AVAILABLE:  # pragma: no cover
        linker.define(store, module.decode(), name.decode(), func)
        return
    ext = _EXTERN(_KIND_FUNC, ffi.wasmtime_extern_union(func=func._func))
    err = _linker_define(linker.ptr(), store._context(), module, len(module), name, len(name), byref(ext))
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)


def _new_func(raw: Any) -> wasmtime.Func:
    f: wasmtime.Func = wasmtime.Func.__new__(wasmtime.Func)
    f._func = raw
    return f


def _new_memory(raw: Any) -> wasmtime.Memory:
    m: wasmtime.Memory = wasmtime.Memory.__new__(wasmtime.Memory)
    m._memory = raw
    return m


if _AVAILABLE:
    _NAME_PTR = ctypes.POINTER(ctypes.c_char)
    _EXTERN = ffi.wasmtime_extern_t
    _KIND_FUNC = ffi.WASMTIME_EXTERN_FUNC.value
    _KIND_MEMORY = ffi.WASMTIME_EXTERN_MEMORY.value
    _export_nth = ffi.wasmtime_instance_export_nth
    _linker_define = ffi.wasmtime_linker_define
