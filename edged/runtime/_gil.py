"""wasmtime's quick C functions called without giving up the GIL.

wasmtime-py loads libwasmtime with ``ctypes.CDLL``, so every C call releases the GIL and takes it back afterwards.
Taking it back behind busy Python threads waits up to Python's switch interval each time, and one plugin call that
has to create its instance (the first call, or the one after a trap) makes about 30 such calls: behind two busy
threads a 100 ms deadline failed a median 62 ms late, most of it spent creating the instance before the wasm even
ran. The functions listed here return in microseconds, never run wasm and never wait on anything, so holding the
GIL through them costs other threads nothing; :func:`hold_gil_in_quick_calls` rebinds them through
``ctypes.PyDLL`` (same library, same signatures). Everything that runs wasm (calls, instantiation with its start
functions), compiles, or touches the file system keeps releasing the GIL.

This relies on wasmtime-py's ``_bindings`` layout (module-level ``_NAME`` function pointers), pinned by the
``wasmtime>=50,<51`` requirement; a name that is not found is left as it is.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("edged.runtime")

#: quick, non-blocking functions on the instantiate/call/trap paths
QUICK_FUNCTIONS = (
    "wasmtime_store_new",
    "wasmtime_store_context",
    "wasmtime_store_limiter",
    "wasmtime_store_delete",
    "wasmtime_context_set_epoch_deadline",
    "wasmtime_context_set_fuel",
    "wasmtime_context_get_fuel",
    "wasmtime_context_set_wasi",
    "wasi_config_new",
    "wasi_config_inherit_argv",
    "wasi_config_inherit_env",
    "wasmtime_linker_new",
    "wasmtime_linker_delete",
    "wasmtime_linker_allow_shadowing",
    "wasmtime_linker_define_wasi",
    "wasmtime_linker_define",
    "wasmtime_linker_define_func",
    "wasmtime_instance_export_nth",
    "wasmtime_instance_export_get",
    "wasmtime_memory_data",
    "wasmtime_memory_data_size",
    "wasmtime_memory_size",
    "wasmtime_memory_type",
    "wasmtime_trap_code",
    "wasm_trap_message",
    "wasm_trap_delete",
    "wasm_trap_origin",
    "wasm_trap_trace",
    "wasm_frame_func_index",
    "wasm_frame_func_offset",
    "wasm_frame_module_offset",
    "wasm_frame_instance",
    "wasm_frame_delete",
    "wasm_frame_vec_delete",
    "wasmtime_frame_func_name",
    "wasmtime_frame_module_name",
    "wasmtime_error_message",
    "wasmtime_error_delete",
    "wasmtime_error_exit_status",
    "wasm_byte_vec_delete",
    "wasm_byte_vec_new",
    "wasmtime_extern_delete",
    "wasmtime_module_exports",
    "wasmtime_module_imports",
    "wasm_exporttype_name",
    "wasm_exporttype_type",
    "wasm_exporttype_vec_delete",
    "wasm_importtype_module",
    "wasm_importtype_name",
    "wasm_importtype_type",
    "wasm_importtype_vec_delete",
    "wasm_externtype_kind",
    "wasm_externtype_as_functype",
    "wasm_functype_new",
    "wasm_functype_params",
    "wasm_functype_results",
    "wasm_functype_delete",
    "wasm_valtype_new",
    "wasm_valtype_kind",
    "wasm_valtype_delete",
    "wasm_valtype_vec_new",
    "wasm_valtype_vec_delete",
)

_held: list[str] = []


def hold_gil_in_quick_calls() -> list[str]:
    """Rebind :data:`QUICK_FUNCTIONS` so they keep the GIL; idempotent. Returns the names rebound."""
    if _held:
        return list(_held)
    try:
        from wasmtime import _bindings, _ffi

        library = ctypes.PyDLL(_ffi.dll._name, handle=_ffi.dll._handle)
    except (ImportError, AttributeError, OSError) as exc:  # pragma: no cover - an unexpected wasmtime-py
        log.warning("wasmtime's C functions keep releasing the GIL: %s", exc)
        return []
    for name in QUICK_FUNCTIONS:
        current = getattr(_bindings, "_" + name, None)
        if current is None or not hasattr(current, "argtypes"):
            continue
        quick = getattr(library, name)
        quick.restype = current.restype
        quick.argtypes = current.argtypes
        setattr(_bindings, "_" + name, quick)
        _held.append(name)
    return list(_held)


def holds_gil(name: str) -> bool:
    """True if wasmtime-py's ``name`` now runs with the GIL held (for tests and diagnostics)."""
    from wasmtime import _bindings

    fn = getattr(_bindings, "_" + name)
    return bool(fn._flags_ & ctypes._FUNCFLAG_PYTHONAPI)  # type: ignore[attr-defined]
