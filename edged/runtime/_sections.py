"""What a validated wasm module defines itself, read from its binary sections (wasmtime-py does not expose it)."""

from __future__ import annotations

_TABLE_SECTION = 4
_MEMORY_SECTION = 5


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def defined_memories_and_tables(wasm: bytes) -> tuple[int, int]:
    """``(memories, tables)`` the module defines (imports not counted). Call only on a module wasmtime accepted."""
    if wasm[:4] != b"\0asm":
        return 0, 0
    memories = tables = 0
    pos = 8
    while pos < len(wasm):
        section = wasm[pos]
        size, pos = _uleb(wasm, pos + 1)
        if section == _TABLE_SECTION:
            tables = _uleb(wasm, pos)[0]
        elif section == _MEMORY_SECTION:
            memories = _uleb(wasm, pos)[0]
        pos += size
    return memories, tables


_CODE_SECTION = 10


def largest_function_body(wasm: bytes) -> int:
    """The size in bytes of the module's largest function body (0 for none, or bytes too broken to say: wasmtime
    will refuse those). Read before compiling, so it must not trust the bytes."""
    try:
        pos = 8
        while pos < len(wasm):
            section = wasm[pos]
            size, pos = _uleb(wasm, pos + 1)
            if section == _CODE_SECTION:
                count, p = _uleb(wasm, pos)
                largest = 0
                for _ in range(count):
                    body, p = _uleb(wasm, p)
                    largest = max(largest, body)
                    p += body
                return largest
            pos += size
    except IndexError:
        pass
    return 0


def memory_minimums(wasm: bytes) -> list[int]:
    """The initial size (in pages) of each memory the module defines. Call only on a module wasmtime accepted."""
    if wasm[:4] != b"\0asm":
        return []
    pos = 8
    while pos < len(wasm):
        section = wasm[pos]
        size, pos = _uleb(wasm, pos + 1)
        if section == _MEMORY_SECTION:
            count, p = _uleb(wasm, pos)
            minimums = []
            for _ in range(count):
                flags = wasm[p]
                minimum, p = _uleb(wasm, p + 1)
                if flags & 0x01:  # a maximum follows
                    _, p = _uleb(wasm, p)
                if flags & 0x08:  # custom page size (log2): count in 64 KiB pages all the same
                    log2, p = _uleb(wasm, p)
                    minimum = (minimum << log2) // 65536
                minimums.append(minimum)
            return minimums
        pos += size
    return []
