"""The kernel's memory layout, as the Python host sees it (mirrors ``kernel/kernel.c``).

Only the control block and the block header are shared knowledge; everything else goes through kernel exports.
"""

from __future__ import annotations

import struct

#: Block header before every handle: u32 status, u32 capacity, u64 length.
HEADER = struct.Struct("<IIQ")
HEADER_SIZE = HEADER.size
BLOCK_USED = 0x55534544
BLOCK_FREE = 0x46524545
ALIGN = 8

#: Control block ``ctl_t``: heap_start, heap_top, input_offset, input_length, output_offset, output_length,
#: error, config_offset, free_blocks (u64 each), log_level (i32), abi_version (u32); then (ABI 2) vars_offset,
#: vars_capacity, vars_used, var_bytes, max_var_bytes (u64 each), host_error (u32), reserved (u32); then (ABI 3)
#: memory_limit (u64).
CTL = struct.Struct("<QQQQQQQQQiIQQQQQIIQ")
CTL_SIZE = CTL.size
ABI_VERSION = 3
#: the ABI version's position in the unpacked control block
ABI_FIELD = 10

# byte offsets of single fields inside the control block
(
    HEAP_START,
    HEAP_TOP,
    INPUT_OFFSET,
    INPUT_LENGTH,
    OUTPUT_OFFSET,
    OUTPUT_LENGTH,
    ERROR,
    CONFIG_OFFSET,
    FREE_BLOCKS,
) = (8 * i for i in range(9))
LOG_LEVEL = 72
VARS_OFFSET, VARS_CAPACITY, VARS_USED, VAR_BYTES, MAX_VAR_BYTES = (80 + 8 * i for i in range(5))
HOST_ERROR = 120
#: (ABI 3) how far the kernel may grow its memory for blocks; 0 means no limit of its own
KERNEL_MEMORY_LIMIT = 128

#: what the kernel's deliberate traps mean (``host_error``), with Extism's messages
HOST_ERRORS = {1: "Vars are disabled by this host", 2: "Variable store is full"}

#: bytes each var counts against max_var_bytes besides its key and value (as Extism counts them)
VAR_ENTRY_OVERHEAD = 48
#: the var table entry header: u32 key length, u32 value length
VAR_ENTRY = struct.Struct("<II")

#: ``reset`` plus an input block placed at the start of the heap: heap_top, input_offset, input_length,
#: output_offset, output_length, error, (config_offset untouched), free_blocks is written separately.
RESET_AND_INPUT = struct.Struct("<QQQQQQ")

#: Output and error, read in one go after a call: output_offset, output_length, error.
RESULT = struct.Struct("<QQQ")

PAGE = 65536


def align(n: int) -> int:
    """Round ``n`` up to the kernel's block alignment."""
    return (n + ALIGN - 1) & ~(ALIGN - 1)
