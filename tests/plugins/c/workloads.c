/* The benchmark workloads of Extism's own benches, in freestanding C against the raw kernel ABI: noop, consume
   (read the whole input), echo (input to output) and reflect (round-trip through a host function). Bulk copies use
   the 8-byte kernel loads and stores, as the Rust PDK does, so the hosts' overhead is what gets measured. */
#include <stdint.h>

#define IMPORT(name) __attribute__((import_module("extism:host/env"), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))

IMPORT("input_length") uint64_t input_length(void);
IMPORT("input_load_u8") uint8_t input_load_u8(uint64_t offset);
IMPORT("input_load_u64") uint64_t input_load_u64(uint64_t offset);
IMPORT("alloc") uint64_t extism_alloc(uint64_t length);
IMPORT("length") uint64_t extism_length(uint64_t handle);
IMPORT("store_u8") void store_u8(uint64_t offset, uint8_t value);
IMPORT("store_u64") void store_u64(uint64_t offset, uint64_t value);
IMPORT("free") void extism_free(uint64_t handle);
IMPORT("output_set") void output_set(uint64_t handle, uint64_t length);

__attribute__((import_module("extism:host/user"), import_name("reflect"))) uint64_t host_reflect(uint64_t handle);

static volatile uint64_t sink;

/* Copies the input into a new kernel block and returns its handle. */
static uint64_t input_to_block(uint64_t n) {
  uint64_t h = extism_alloc(n), i = 0;
  for (; i + 8 <= n; i += 8) store_u64(h + i, input_load_u64(i));
  for (; i < n; i++) store_u8(h + i, input_load_u8(i));
  return h;
}

EXPORT("noop") int32_t noop(void) { return 0; }

EXPORT("consume") int32_t consume(void) {
  uint64_t n = input_length(), acc = 0, i = 0;
  for (; i + 8 <= n; i += 8) acc ^= input_load_u64(i);
  for (; i < n; i++) acc ^= input_load_u8(i);
  sink = acc;
  return 0;
}

EXPORT("echo") int32_t echo(void) {
  uint64_t n = input_length();
  output_set(input_to_block(n), n);
  return 0;
}

EXPORT("reflect") int32_t reflect(void) {
  uint64_t n = input_length();
  uint64_t in = input_to_block(n);
  uint64_t out = host_reflect(in);
  extism_free(in);
  output_set(out, extism_length(out));
  return 0;
}
