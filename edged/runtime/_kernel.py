"""The Python host's view of one kernel instance: direct memory access plus the few kernel exports it calls."""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import wasmtime

from ..errors import OutOfMemory, OutputTooLarge, PluginError
from . import _layout as L
from ._rawcall import exports_at, raw_caller

#: memmove that keeps the GIL (ctypes.memmove gives it up and must get it back behind busy threads; a copy into the
#: plugin's own memory is quick, and on the calling thread anyway): see _gil.py
_memmove = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
    ctypes._memmove_addr  # type: ignore[attr-defined]
)

#: the kernel refuses blocks above this size (see k_alloc)
_MAX_BLOCK = 0xFFFF0000

_LAZY_CALLERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "_alloc": (("i64",), ("i64",)),
    "_free": (("i64",), ()),
}
#: (control block address, heap base), read from the first kernel instance
_constants: tuple[int, int] | None = None

#: Exports the host itself uses, besides :data:`KERNEL_EXPORTS`.
HOST_EXPORTS = ("memory", "edged_ctl", "edged_init", "edged_var_get", "edged_var_set", "length", "alloc", "free")

#: The kernel functions a plugin may import from ``extism:host/env`` (and, with an ``extism_`` prefix, from ``env``).
KERNEL_EXPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alloc": (("i64",), ("i64",)),
    "free": (("i64",), ()),
    "length": (("i64",), ("i64",)),
    "length_unsafe": (("i64",), ("i64",)),
    "load_u8": (("i64",), ("i32",)),
    "load_u64": (("i64",), ("i64",)),
    "store_u8": (("i64", "i32"), ()),
    "store_u64": (("i64", "i64"), ()),
    "input_length": ((), ("i64",)),
    "input_offset": ((), ("i64",)),
    "input_load_u8": (("i64",), ("i32",)),
    "input_load_u64": (("i64",), ("i64",)),
    "input_set": (("i64", "i64"), ()),
    "output_set": (("i64", "i64"), ()),
    "output_length": ((), ("i64",)),
    "output_offset": ((), ("i64",)),
    "error_set": (("i64",), ()),
    "error_get": ((), ("i64",)),
    "reset": ((), ()),
    "memory_bytes": ((), ("i64",)),
    "config_get": (("i64",), ("i64",)),
    "get_log_level": ((), ("i32",)),
}

_U64 = struct.Struct("<Q")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_TWO_U64 = struct.Struct("<QQ")


def encode_config(config: dict[str, str]) -> bytes:
    """The kernel's config table: u32 count, then u32 key_len, u32 value_len, key, value per entry."""
    parts = [struct.pack("<I", len(config))]
    for k, v in config.items():
        kb, vb = k.encode(), v.encode()
        parts.append(struct.pack("<II", len(kb), len(vb)) + kb + vb)
    return b"".join(parts)


class Kernel:
    """One kernel instance in a store: resets and fills it before a call and reads the result after.

    The hot path touches memory through a cached base pointer (memories never move: see ``_engine``) and calls no
    kernel export; allocation and validation on behalf of host functions go through the kernel's own exports.
    """

    def __init__(
        self,
        store: wasmtime.Store,
        instance: wasmtime.Instance,
        config: dict[str, str],
        log_level: int,
        indices: dict[str, int] | None = None,
        kernel_vars: tuple[dict[bytes, bytes], int] | None = None,
        kernel_limit: int | None = None,
    ) -> None:
        global _constants
        self._store = store
        self._instance = instance
        self._indices = indices
        self._funcs: dict[str, wasmtime.Func] = {}
        #: the store's limits (``Store.set_limits`` arguments) once the plugin has set them
        self.store_limits: dict[str, int] | None = None
        #: bytes the block heap may use beyond the call's input (None: no limit of its own), and the absolute end of
        #: memory that allows for the current call
        self.heap_limit = kernel_limit
        self.kernel_limit: int | None = None
        first = _constants is None
        ex: Any = self._fetch(["memory", "edged_ctl", "edged_init"] if first else ["memory"])
        self.memory: wasmtime.Memory = ex["memory"]
        self.base = ctypes.addressof(self.memory.data_ptr(store).contents)
        if _constants is None:  # the control block's address and the heap base are constants of the kernel module
            _constants = (
                raw_caller(store, ex["edged_ctl"], (), ("i32",))(),
                raw_caller(store, ex["edged_init"], (), ("i64",))(),
            )
        ctl_addr, heap_start = _constants
        self.ctl = (ctypes.c_char * L.CTL_SIZE).from_address(self.base + ctl_addr)
        fields = L.CTL.unpack_from(self.ctl)
        if fields[L.ABI_FIELD] != L.ABI_VERSION:
            raise PluginError(f"kernel ABI {fields[L.ABI_FIELD]} does not match the host's {L.ABI_VERSION}")
        self.size = self.memory.data_len(store)

        if config:  # the config table sits below the heap and survives every reset
            table = encode_config(config)
            self._ensure(heap_start + len(table))
            _memmove(self.base + heap_start, table, len(table))
            _U64.pack_into(self.ctl, L.CONFIG_OFFSET, heap_start)
            heap_start = L.align(heap_start + len(table))
        if kernel_vars is not None:  # the var table sits below the heap too; capacity = the byte budget
            heap_start = self._place_vars(heap_start, *kernel_vars)
        _U64.pack_into(self.ctl, L.HEAP_START, heap_start)
        _U64.pack_into(self.ctl, L.HEAP_TOP, heap_start)
        _I32.pack_into(self.ctl, L.LOG_LEVEL, log_level)
        self.heap_start = heap_start
        self._limit_heap(0)

    def _limit_heap(self, input_bytes: int) -> None:
        """Let the heap grow to the call's input plus :attr:`heap_limit`: the input is the host's, what the plugin
        (or a host function on its behalf) allocates on top of it is the plugin's, and is capped."""
        if self.heap_limit is not None:
            self.kernel_limit = L.align(self.heap_start + L.HEADER_SIZE + input_bytes) + self.heap_limit
            _U64.pack_into(self.ctl, L.KERNEL_MEMORY_LIMIT, self.kernel_limit)

    def _place_vars(self, start: int, values: dict[bytes, bytes], max_var_bytes: int) -> int:
        """Write the var table at ``start`` with room for ``max_var_bytes``; return where the heap begins."""
        table = b"".join(L.VAR_ENTRY.pack(len(k), len(v)) + k + v for k, v in values.items())
        counted = sum(len(k) + len(v) + L.VAR_ENTRY_OVERHEAD for k, v in values.items())
        capacity = max(max_var_bytes, len(table))
        self._ensure(start + capacity)
        if table:
            _memmove(self.base + start, table, len(table))
        for offset, value in (
            (L.VARS_OFFSET, start),
            (L.VARS_CAPACITY, capacity),
            (L.VARS_USED, len(table)),
            (L.VAR_BYTES, counted),
            (L.MAX_VAR_BYTES, max_var_bytes),
        ):
            _U64.pack_into(self.ctl, offset, value)
        return L.align(start + capacity)

    def read_vars(self) -> dict[bytes, bytes]:
        """The var table as a dict (to carry vars over to the next instance)."""
        used = _U64.unpack_from(self.ctl, L.VARS_USED)[0]
        raw = ctypes.string_at(self.base + _U64.unpack_from(self.ctl, L.VARS_OFFSET)[0], used) if used else b""
        out: dict[bytes, bytes] = {}
        pos = 0
        while pos + 8 <= len(raw):
            kl, vl = L.VAR_ENTRY.unpack_from(raw, pos)
            out[raw[pos + 8 : pos + 8 + kl]] = raw[pos + 8 + kl : pos + 8 + kl + vl]
            pos += 8 + kl + vl
        return out

    def host_error(self) -> str | None:
        """The message of a deliberate kernel trap (a full or disabled var store), if that is what happened."""
        code = _U32.unpack_from(self.ctl, L.HOST_ERROR)[0]
        return L.HOST_ERRORS.get(code) if code else None

    def _fetch(self, names: list[str]) -> dict[str, Any]:
        if self._indices is None:
            ex = self._instance.exports(self._store)
            return {n: ex[n] for n in names}
        return exports_at(self._store, self._instance, {n: self._indices[n] for n in names})

    def func(self, name: str) -> wasmtime.Func:
        """A kernel export, fetched on first use (plugins usually link the kernel as a whole instance)."""
        f = self._funcs.get(name)
        if f is None:
            f = self._funcs[name] = self._fetch([name])[name]
        return f

    def __getattr__(self, name: str) -> Any:
        # the kernel exports the host calls itself, made on first use: many instances never need them
        if name in _LAZY_CALLERS:
            params, results = _LAZY_CALLERS[name]
            caller = raw_caller(self._store, self.func(name[1:]), params, results)
            setattr(self, name, caller)
            return caller
        raise AttributeError(name)

    # --- memory ------------------------------------------------------------------------------------------------

    def _ensure(self, end: int) -> None:
        """Grow kernel memory so that ``end`` bytes exist. The store's per-memory limit (from max_pages) is meant
        for the plugin's memory, so it is lifted for this host-side growth of the kernel's."""
        self.size = self.memory.data_len(self._store)
        if end <= self.size:
            return
        if self.kernel_limit is not None and end > self.kernel_limit:
            raise OutOfMemory(f"oom: the kernel's memory would need {end} bytes, over its limit of {self.kernel_limit}")
        pages = (end - self.size + L.PAGE - 1) // L.PAGE
        try:
            self.memory.grow(self._store, pages)
        except wasmtime.WasmtimeError:
            limits = self.store_limits
            if limits is None:
                raise PluginError(f"oom: cannot grow kernel memory to {end} bytes") from None
            self._store.set_limits(**{**limits, "memory_size": -1})
            try:
                self.memory.grow(self._store, pages)
            finally:
                self._store.set_limits(**limits)
        self.size = self.memory.data_len(self._store)

    def reserve(self, size: int) -> None:
        """Grow kernel memory to at least ``size`` bytes now."""
        self._ensure(size)

    def begin(self, data: bytes) -> None:
        """``reset`` and place ``data`` as the input block at the start of the heap (no kernel call)."""
        hs = self.heap_start
        n = len(data)
        if self.heap_limit is not None:
            self._limit_heap(n)
        if n:
            end = hs + L.HEADER_SIZE + L.align(n)
            if end > self.size:
                self._ensure(end)
            addr = self.base + hs
            _memmove(addr, L.HEADER.pack(L.BLOCK_USED, L.align(n), n), L.HEADER_SIZE)
            _memmove(addr + L.HEADER_SIZE, data, n)
            L.RESET_AND_INPUT.pack_into(self.ctl, L.HEAP_TOP, end, hs + L.HEADER_SIZE, n, 0, 0, 0)
        else:
            L.RESET_AND_INPUT.pack_into(self.ctl, L.HEAP_TOP, hs, 0, 0, 0, 0, 0)
        _U64.pack_into(self.ctl, L.FREE_BLOCKS, 0)

    def result(self) -> tuple[int, int, int]:
        """``(output_offset, output_length, error_handle)`` after a call."""
        return L.RESULT.unpack_from(self.ctl, L.OUTPUT_OFFSET)

    def output(self, offset: int, length: int, limit: int) -> bytes:
        """The call's output: ``length`` bytes at ``offset``, which must lie inside the live block heap (the kernel
        gives out no other memory, so an output anywhere else was never allocated and never counted)."""
        if length == 0:
            return b""
        if length > limit:
            raise OutputTooLarge(f"output of {length} bytes exceeds the limit of {limit} bytes")
        heap_start, heap_top = _TWO_U64.unpack_from(self.ctl, L.HEAP_START)
        if offset < heap_start or offset + length > heap_top:
            raise PluginError(f"output ({offset}, {length}) lies outside the blocks the plugin allocated")
        return ctypes.string_at(self.base + offset, length)

    def _block(self, handle: int) -> tuple[int, int, int] | None:
        """``(header address, capacity, length)`` of the active block at ``handle``, or None.

        Checked by its header, against the live heap, rather than by the kernel's walk of the block list: the same
        answer for every handle the kernel gave out, and a header a plugin forged (it can write kernel memory with
        ``store_u64``) can only describe bytes inside the heap, so the host never reads outside it.
        """
        heap_start, heap_top = _TWO_U64.unpack_from(self.ctl, L.HEAP_START)
        if handle < heap_start + L.HEADER_SIZE or handle > heap_top or handle % L.ALIGN:
            return None
        header = self.base + handle - L.HEADER_SIZE
        status, cap, n = L.HEADER.unpack(ctypes.string_at(header, L.HEADER_SIZE))
        if status != L.BLOCK_USED or n > cap or handle + cap > heap_top:
            return None
        return header, cap, n

    def read(self, handle: int) -> bytes:
        """The data of an active block; empty for 0 or anything that is not a block start."""
        block = self._block(handle) if handle else None
        if block is None or not block[2]:
            return b""
        return ctypes.string_at(self.base + handle, block[2])

    def alloc_bytes(self, data: bytes) -> int:
        """A new block holding ``data``; 0 for empty data. Raises "oom" when the kernel cannot grow."""
        if not data:
            return 0
        n = len(data)
        ctl = self.ctl
        if not _U64.unpack_from(ctl, L.FREE_BLOCKS)[0] and n <= _MAX_BLOCK:
            # no freed blocks to reuse: the kernel would bump-allocate at heap_top, so do exactly that here
            # and save a call into wasm (same header, same alignment, same heap_top afterwards)
            top: int = _U64.unpack_from(ctl, L.HEAP_TOP)[0]
            cap = L.align(n)
            end = top + L.HEADER_SIZE + cap
            if end > self.size:
                self._ensure(end)
            addr = self.base + top
            _memmove(addr, L.HEADER.pack(L.BLOCK_USED, cap, n), L.HEADER_SIZE)
            _memmove(addr + L.HEADER_SIZE, data, n)
            if cap > n:
                ctypes.memset(addr + L.HEADER_SIZE + n, 0, cap - n)
            _U64.pack_into(ctl, L.HEAP_TOP, end)
            return top + L.HEADER_SIZE
        h = self._alloc(n)
        if not h:
            raise PluginError(f"oom: the kernel cannot allocate {len(data)} bytes")
        _memmove(self.base + h, data, len(data))
        return int(h)

    def free(self, handle: int) -> None:
        if handle:
            self._free(handle)

    def take(self, handle: int) -> bytes:
        """Read and free a block: the env functions consume the handles they are given."""
        block = self._block(handle) if handle else None
        if block is None:
            return b""
        header, cap, n = block
        data = ctypes.string_at(self.base + handle, n) if n else b""
        # freed exactly as k_free does, without a call into wasm
        ctl = self.ctl
        _memmove(header, L.HEADER.pack(L.BLOCK_FREE, cap, 0), L.HEADER_SIZE)
        if handle == _U64.unpack_from(ctl, L.INPUT_OFFSET)[0]:
            _U64.pack_into(ctl, L.INPUT_LENGTH, 0)
        if handle + cap == _U64.unpack_from(ctl, L.HEAP_TOP)[0]:
            _U64.pack_into(ctl, L.HEAP_TOP, handle - L.HEADER_SIZE)
        else:
            _U64.pack_into(ctl, L.FREE_BLOCKS, _U64.unpack_from(ctl, L.FREE_BLOCKS)[0] + 1)
        return data

    def set_log_level(self, level: int) -> None:
        _I32.pack_into(self.ctl, L.LOG_LEVEL, level)
