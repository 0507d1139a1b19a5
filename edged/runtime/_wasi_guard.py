"""WASI functions whose wasmtime implementation would let a plugin escape its limits, replaced.

wasmtime checks a call's epoch deadline only while wasm code runs, never inside a host call. WASI's
``poll_oneoff`` is a host call that sleeps as long as the plugin asks (a relative clock subscription of 10 s, or an
absolute one far ahead), so a plugin could hold its display thread past any deadline. edged implements
``poll_oneoff`` itself: a clock subscription sleeps at most until the call's deadline (and the call then fails with
``timeout``); file-descriptor subscriptions are ready at once (the only descriptors a plugin has are stdio files
and pre-opened folders, which never block). ``path_symlink`` is refused: a plugin must not leave links in a host
folder it was given that point outside it. ``random_get`` fills its buffer in 1 MiB steps and stops at the call's
deadline: wasmtime's fills a buffer of any size in one host call (50 MB took about 0.4 s past a deadline).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from typing import Any

import wasmtime

from ..errors import PluginTimeout

WASI = "wasi_snapshot_preview1"
_SUBSCRIPTION = 48  # userdata u64, tag u8 (0 clock), then the union at 16: clock id u32, timeout u64 @24, flags u16 @40
_TAG_CLOCK = 0
_ABSTIME = 1
_ENOTSUP = 58
_I32 = wasmtime.ValType.i32()
_I64 = wasmtime.ValType.i64()


def guard_wasi(
    linker: wasmtime.Linker, store: wasmtime.Store, imports: set[tuple[str, str]], deadline: Callable[[], float | None]
) -> None:
    """Shadow the WASI functions above in ``linker`` (after ``define_wasi``) for the ones the plugin imports.
    ``deadline`` gives the current call's ``time.monotonic()`` deadline, or None when it has none."""
    linker.allow_shadowing = True
    try:
        if (WASI, "poll_oneoff") in imports:
            _guard_poll(linker, store, deadline)
        if (WASI, "random_get") in imports:
            _guard_random(linker, deadline)
        if (WASI, "path_symlink") in imports:
            ty = wasmtime.FuncType([_I32] * 5, [_I32])
            linker.define_func(WASI, "path_symlink", ty, lambda *_: _ENOTSUP)
    finally:
        linker.allow_shadowing = False


_EVENT = struct.Struct("<QHB5xQH6x")  # userdata, error, type, then fd_readwrite: nbytes, flags (32 bytes)
_EINVAL = 28
_EFAULT = 21
#: bytes ``random_get`` fills between two looks at the deadline (about a millisecond of work)
RANDOM_STEP = 1 << 20
_REALTIME, _MONOTONIC = 0, 1


def _guard_poll(linker: wasmtime.Linker, store: wasmtime.Store, deadline: Callable[[], float | None]) -> None:
    # wasmtime's monotonic clock counts from the WASI context's creation: near enough to now, for clamping
    origin = time.monotonic_ns()

    def now(clock_id: int) -> int | None:
        if clock_id == _REALTIME:
            return time.time_ns()
        if clock_id == _MONOTONIC:
            return time.monotonic_ns() - origin
        return None

    def poll(caller: wasmtime.Caller, subs: int, events: int, n: int, nevents: int) -> int:
        memory: Any = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory) or n <= 0:
            return _EINVAL
        raw = memory.read(caller, subs, subs + n * _SUBSCRIPTION)
        ready: list[bytes] = []
        clocks: list[tuple[int, int, int]] = []  # (wait ns, userdata, error)
        for off in range(0, len(raw), _SUBSCRIPTION):
            userdata, tag = struct.unpack_from("<QB", raw, off)
            if tag == _TAG_CLOCK:
                clock_id, timeout = struct.unpack_from("<I4xQ", raw, off + 16)
                flags = struct.unpack_from("<H", raw, off + 40)[0]
                current = now(clock_id)
                if current is None:
                    clocks.append((0, userdata, _EINVAL))
                else:
                    wait = max(0, timeout - current) if flags & _ABSTIME else timeout
                    clocks.append((wait, userdata, 0))
            elif tag in (1, 2):  # fd_read, fd_write: regular files and stdio never block
                ready.append(_EVENT.pack(userdata, 0, tag, 0, 0))
            else:
                return _EINVAL
        if not ready:
            wait = min(c[0] for c in clocks)
            end = deadline()
            if end is not None and time.monotonic() + wait / 1e9 > end:
                time.sleep(max(0.0, end - time.monotonic()))
                raise PluginTimeout("timeout")
            if wait:
                time.sleep(wait / 1e9)
            ready = [_EVENT.pack(u, err, _TAG_CLOCK, 0, 0) for w, u, err in clocks if w <= wait]
        memory.write(caller, b"".join(ready), events)
        memory.write(caller, struct.pack("<I", len(ready)), nevents)
        return 0

    ty = wasmtime.FuncType([_I32] * 4, [_I32])
    linker.define_func(WASI, "poll_oneoff", ty, poll, access_caller=True)


def _guard_random(linker: wasmtime.Linker, deadline: Callable[[], float | None]) -> None:
    def random_get(caller: wasmtime.Caller, buf: int, length: int) -> int:
        memory: Any = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            return _EINVAL
        buf &= 0xFFFFFFFF
        length &= 0xFFFFFFFF
        if buf + length > memory.data_len(caller):
            return _EFAULT
        end = deadline()
        for start in range(buf, buf + length, RANDOM_STEP):
            if end is not None and time.monotonic() > end:
                raise PluginTimeout("timeout")
            memory.write(caller, os.urandom(min(RANDOM_STEP, buf + length - start)), start)
        return 0

    ty = wasmtime.FuncType([_I32, _I32], [_I32])
    linker.define_func(WASI, "random_get", ty, random_get, access_caller=True)
