/*
 * edged's Extism-compatible kernel: the memory-handle allocator, input/output/error slots and in-kernel config.
 *
 * It runs as its own WebAssembly module with its own linear memory, so that a plugin's calls into
 * `extism:host/env` stay inside wasm. The Python host reads and writes this memory directly; the layout it relies
 * on is the `edged_ctl` control block and the 16-byte block header below (mirrored in edged/runtime/_layout.py).
 *
 * Memory layout
 *   [data + stack] [config table] [var table] [blocks: heap_start .. heap_top] [free space]
 * The host writes the config table and the var table at start-up; both survive every reset.
 *
 * A handle is the offset of a block's data; its header sits in the 16 bytes before it. 0 is null.
 * Built by edged/runtime/kernel/build (zig cc, wasm32-freestanding); the committed kernel.wasm is checked to be
 * reproducible by the test command.
 */
#include <stdint.h>

#define EXPORT(name) __attribute__((export_name(#name)))
#define PAGE 65536u
#define HDR 16u
#define ALIGN 8u
#define SPLIT_MIN 128u

enum { BLOCK_FREE = 0x46524545u /* "FREE" */, BLOCK_USED = 0x55534544u /* "USED" */ };

typedef struct {
    uint32_t status;   /* BLOCK_FREE or BLOCK_USED */
    uint32_t capacity; /* usable bytes after the header, a multiple of ALIGN */
    uint64_t length;   /* bytes the owner asked for */
} header_t;

/* The control block. Field order and widths are ABI with the Python host: append only. */
typedef struct {
    uint64_t heap_start;    /* first block header */
    uint64_t heap_top;      /* one past the last block */
    uint64_t input_offset;
    uint64_t input_length;
    uint64_t output_offset;
    uint64_t output_length;
    uint64_t error;         /* handle of the error message, 0 if none */
    uint64_t config_offset; /* config table, 0 if none */
    uint64_t free_blocks;   /* number of free blocks below heap_top (0 lets alloc skip the scan) */
    int32_t log_level;      /* trace 0 .. error 4, INT32_MAX when logging is off */
    uint32_t abi_version;
    /* ABI 2: vars served by the kernel. The host places the table below the heap and persists it between
     * instances; 0 capacity means the host serves vars itself. */
    uint64_t vars_offset;   /* var table: entries {u32 key_len, u32 value_len, key, value}, packed */
    uint64_t vars_capacity; /* bytes reserved for the table */
    uint64_t vars_used;     /* bytes of the table in use */
    uint64_t var_bytes;     /* the Extism count: key + value + VAR_OVERHEAD per entry */
    uint64_t max_var_bytes; /* Extism's memory.max_var_bytes; 0 disables vars */
    uint32_t host_error;    /* set before a deliberate trap: 1 vars disabled, 2 var store full */
    uint32_t reserved;
    /* ABI 3: the most bytes of memory the kernel may grow to for the plugin's blocks (0: no limit of its own).
     * The host sets it so that everything a plugin can make the kernel hold counts against the plugin's budget. */
    uint64_t memory_limit;
} ctl_t;

#define VAR_OVERHEAD 48u

extern unsigned char __heap_base;
static ctl_t ctl = {.abi_version = 3, .log_level = 0x7fffffff};

EXPORT(edged_ctl) ctl_t *edged_ctl_ptr(void) { return &ctl; }

static inline uint64_t mem_size(void) { return (uint64_t)__builtin_wasm_memory_size(0) * PAGE; }
static inline header_t *hdr_at(uint64_t off) { return (header_t *)(uintptr_t)off; }

static void lazy_init(void) {
    if (ctl.heap_start == 0) {
        uint64_t base = ((uint64_t)(uintptr_t)&__heap_base + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
        ctl.heap_start = base;
        ctl.heap_top = base;
    }
}

/* Called once by the host after instantiation: fixes heap_start and returns it. */
EXPORT(edged_init) uint64_t edged_init(void) {
    lazy_init();
    return ctl.heap_start;
}

/* Returns the header of the active block whose data starts at `h`, or 0. Walks the block list, so a handle that
 * points into the middle of a block, at a freed block or outside the heap is rejected exactly. */
static header_t *active_block(uint64_t h) {
    if (h < ctl.heap_start + HDR || h > ctl.heap_top) return 0;
    uint64_t p = ctl.heap_start;
    while (p < ctl.heap_top) {
        header_t *b = hdr_at(p);
        uint64_t data = p + HDR;
        /* a plugin can rewrite headers with store_u64: a length beyond the block's capacity is no block */
        if (data == h) return b->status == BLOCK_USED && b->length <= b->capacity ? b : 0;
        if (data > h) return 0;
        p = data + b->capacity;
    }
    return 0;
}

static int ensure_memory(uint64_t end) {
    uint64_t size = mem_size();
    if (end <= size) return 1;
    if (ctl.memory_limit && end > ctl.memory_limit) return 0;
    uint64_t pages = (end - size + PAGE - 1) / PAGE;
    return __builtin_wasm_memory_grow(0, (uintptr_t)pages) != (uintptr_t)-1;
}

EXPORT(alloc) uint64_t k_alloc(uint64_t n) {
    lazy_init();
    if (n == 0 || n > 0xffff0000u) return 0;
    uint64_t cap = (n + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);

    if (ctl.free_blocks) {
        /* first fit among freed blocks; split when the rest is big enough to be worth a block of its own */
        for (uint64_t p = ctl.heap_start; p < ctl.heap_top;) {
            header_t *b = hdr_at(p);
            if (b->status == BLOCK_FREE && b->capacity >= cap) {
                uint64_t rest = b->capacity - cap;
                if (rest >= SPLIT_MIN + HDR) {
                    header_t *tail = hdr_at(p + HDR + cap);
                    tail->status = BLOCK_FREE;
                    tail->capacity = (uint32_t)(rest - HDR);
                    tail->length = 0;
                    b->capacity = (uint32_t)cap;
                } else {
                    ctl.free_blocks--;
                }
                b->status = BLOCK_USED;
                b->length = n;
                __builtin_memset((void *)(uintptr_t)(p + HDR), 0, n); /* blocks start zeroed, as in Extism */
                return p + HDR;
            }
            p += HDR + b->capacity;
        }
    }

    uint64_t p = ctl.heap_top;
    uint64_t end = p + HDR + cap;
    if (!ensure_memory(end)) return 0;
    header_t *b = hdr_at(p);
    b->status = BLOCK_USED;
    b->capacity = (uint32_t)cap;
    b->length = n;
    ctl.heap_top = end;
    __builtin_memset((void *)(uintptr_t)(p + HDR), 0, n);
    return p + HDR;
}

EXPORT(free) void k_free(uint64_t h) {
    header_t *b = active_block(h);
    if (!b) return;
    b->status = BLOCK_FREE;
    b->length = 0;
    if (h == ctl.input_offset) ctl.input_length = 0;
    if (h + b->capacity == ctl.heap_top) {
        ctl.heap_top = h - HDR; /* the last block goes back to the bump region */
    } else {
        ctl.free_blocks++;
    }
}

EXPORT(length) uint64_t k_length(uint64_t h) {
    header_t *b = active_block(h);
    return b ? b->length : 0;
}

EXPORT(length_unsafe) uint64_t k_length_unsafe(uint64_t h) {
    if (h < ctl.heap_start + HDR || h > ctl.heap_top) return 0;
    return hdr_at(h - HDR)->length;
}

/* Loads and stores are confined to the live block heap [heap_start, heap_top): out of bounds reads 0 and writes
 * nothing. Not to the end of memory: memory keeps its bytes across resets, so space past heap_top would let a
 * plugin build data (an output, say) in memory it never allocated and that no budget counts. The bounds are
 * written as differences so that an offset near 2^64 cannot wrap past the test. */
static inline int in_heap(uint64_t p, uint64_t n) {
    return p >= ctl.heap_start && p < ctl.heap_top && ctl.heap_top - p >= n;
}

EXPORT(load_u8) uint32_t k_load_u8(uint64_t p) {
    if (!in_heap(p, 1)) return 0;
    return *(uint8_t *)(uintptr_t)p;
}

EXPORT(load_u64) uint64_t k_load_u64(uint64_t p) {
    if (!in_heap(p, 8)) return 0;
    return *(uint64_t *)(uintptr_t)p;
}

EXPORT(store_u8) void k_store_u8(uint64_t p, uint32_t v) {
    if (!in_heap(p, 1)) return;
    *(uint8_t *)(uintptr_t)p = (uint8_t)v;
}

EXPORT(store_u64) void k_store_u64(uint64_t p, uint64_t v) {
    if (!in_heap(p, 8)) return;
    *(uint64_t *)(uintptr_t)p = v;
}

EXPORT(input_length) uint64_t k_input_length(void) { return ctl.input_length; }
EXPORT(input_offset) uint64_t k_input_offset(void) { return ctl.input_offset; }

/* The input is read only inside the live heap too: a plugin may point input_set anywhere (as in Extism), but never
 * at the control block or the config and var tables below the heap. */
EXPORT(input_load_u8) uint32_t k_input_load_u8(uint64_t off) {
    uint64_t p = ctl.input_offset + off;
    if (off >= ctl.input_length || !in_heap(p, 1)) return 0;
    return *(uint8_t *)(uintptr_t)p;
}

EXPORT(input_load_u64) uint64_t k_input_load_u64(uint64_t off) {
    uint64_t p = ctl.input_offset + off;
    if (ctl.input_length < 8 || off > ctl.input_length - 8 || !in_heap(p, 8)) return 0;
    return *(uint64_t *)(uintptr_t)p;
}

EXPORT(input_set) void k_input_set(uint64_t h, uint64_t n) {
    ctl.input_offset = h;
    ctl.input_length = n;
}

EXPORT(output_set) void k_output_set(uint64_t h, uint64_t n) {
    ctl.output_offset = h;
    ctl.output_length = n;
}

EXPORT(output_length) uint64_t k_output_length(void) { return ctl.output_length; }
EXPORT(output_offset) uint64_t k_output_offset(void) { return ctl.output_offset; }

EXPORT(error_set) void k_error_set(uint64_t h) { ctl.error = h; }
EXPORT(error_get) uint64_t k_error_get(void) { return ctl.error; }

EXPORT(reset) void k_reset(void) {
    lazy_init();
    ctl.heap_top = ctl.heap_start;
    ctl.free_blocks = 0;
    ctl.input_offset = ctl.input_length = 0;
    ctl.output_offset = ctl.output_length = 0;
    ctl.error = 0;
}

EXPORT(memory_bytes) uint64_t k_memory_bytes(void) { return mem_size(); }

EXPORT(get_log_level) int32_t k_get_log_level(void) { return ctl.log_level; }

static int bytes_equal(const uint8_t *a, const uint8_t *b, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/*
 * Config table, written once by the host at config_offset:
 *   u32 count, then per entry: u32 key_len, u32 value_len, key bytes, value bytes (no padding).
 * config_get consumes the key handle and returns a new block holding the value, or 0 if the key is missing.
 */
EXPORT(config_get) uint64_t k_config_get(uint64_t key) {
    header_t *kb = active_block(key);
    if (!kb) return 0;
    uint64_t klen = kb->length;
    const uint8_t *k = (const uint8_t *)(uintptr_t)key;
    uint64_t found = 0, found_len = 0;
    if (ctl.config_offset) {
        const uint8_t *t = (const uint8_t *)(uintptr_t)ctl.config_offset;
        uint32_t count = *(const uint32_t *)t;
        t += 4;
        for (uint32_t i = 0; i < count; i++) {
            uint32_t kl = ((const uint32_t *)t)[0], vl = ((const uint32_t *)t)[1];
            const uint8_t *ek = t + 8;
            if (kl == klen && bytes_equal(ek, k, kl)) {
                found = (uint64_t)(uintptr_t)(ek + kl);
                found_len = vl;
                break;
            }
            t = ek + kl + vl;
        }
    }
    k_free(key);
    if (!found) return 0;
    uint64_t h = k_alloc(found_len ? found_len : 1);
    if (!h) return 0;
    if (found_len) __builtin_memcpy((void *)(uintptr_t)h, (const void *)(uintptr_t)found, found_len);
    hdr_at(h - HDR)->length = found_len;
    return h;
}

/* --- vars ----------------------------------------------------------------------------------------------------
 * The same observable semantics as the host's own var functions (edged/runtime/_env.py): both handles are consumed,
 * an empty or missing value reads as 0, a value handle of 0 removes the key, and a store over max_var_bytes or a
 * disabled store fails the call with Extism's messages (the host turns host_error into the error after the trap).
 */
static uint8_t *var_find(const uint8_t *k, uint64_t klen) {
    uint8_t *t = (uint8_t *)(uintptr_t)ctl.vars_offset, *end = t + ctl.vars_used;
    while (t < end) {
        uint32_t kl = ((uint32_t *)t)[0], vl = ((uint32_t *)t)[1];
        if (kl == klen && bytes_equal(t + 8, k, kl)) return t;
        t += 8 + kl + vl;
    }
    return 0;
}

EXPORT(edged_var_get) uint64_t k_var_get(uint64_t key) {
    header_t *kb = active_block(key);
    if (!kb) return 0;
    uint8_t *e = var_find((const uint8_t *)(uintptr_t)key, kb->length);
    k_free(key);
    if (!e) return 0;
    uint32_t kl = ((uint32_t *)e)[0], vl = ((uint32_t *)e)[1];
    if (!vl) return 0;
    uint64_t h = k_alloc(vl);
    if (!h) return 0;
    __builtin_memcpy((void *)(uintptr_t)h, e + 8 + kl, vl);
    return h;
}

EXPORT(edged_var_set) void k_var_set(uint64_t key, uint64_t value) {
    header_t *kb = active_block(key);
    header_t *vb = value ? active_block(value) : 0;
    uint64_t klen = kb ? kb->length : 0;
    int remove = value == 0;
    uint64_t vlen = vb ? vb->length : 0;
    if (ctl.max_var_bytes == 0) {
        k_free(key);
        if (value) k_free(value);
        ctl.host_error = 1;
        __builtin_trap();
    }
    const uint8_t *k = (const uint8_t *)(uintptr_t)key;
    uint8_t *old = var_find(k, klen);
    uint64_t old_size = 0, old_span = 0;
    if (old) {
        uint32_t okl = ((uint32_t *)old)[0], ovl = ((uint32_t *)old)[1];
        old_size = okl + ovl + VAR_OVERHEAD;
        old_span = 8 + okl + ovl;
    }
    if (!remove) {
        uint64_t new_size = klen + vlen + VAR_OVERHEAD;
        if (ctl.var_bytes - old_size + new_size > ctl.max_var_bytes ||
            ctl.vars_used - old_span + 8 + klen + vlen > ctl.vars_capacity) {
            k_free(key);
            k_free(value);
            ctl.host_error = 2;
            __builtin_trap();
        }
    }
    if (old) { /* close the gap: entries stay packed */
        uint8_t *end = (uint8_t *)(uintptr_t)ctl.vars_offset + ctl.vars_used;
        __builtin_memmove(old, old + old_span, (uint64_t)(end - (old + old_span)));
        ctl.vars_used -= old_span;
        ctl.var_bytes -= old_size;
    }
    if (!remove) {
        uint8_t *e = (uint8_t *)(uintptr_t)ctl.vars_offset + ctl.vars_used;
        ((uint32_t *)e)[0] = (uint32_t)klen;
        ((uint32_t *)e)[1] = (uint32_t)vlen;
        __builtin_memcpy(e + 8, k, klen);
        if (vlen) __builtin_memcpy(e + 8 + klen, (const void *)(uintptr_t)value, vlen);
        ctl.vars_used += 8 + klen + vlen;
        ctl.var_bytes += klen + vlen + VAR_OVERHEAD;
    }
    k_free(key);
    if (value) k_free(value);
}
