/* echo against the legacy Extism 0.x ABI (env::extism_* imports), as released Matricks plugins were built. */
#include <stdint.h>

#define LEGACY(name) __attribute__((import_module("env"), import_name("extism_" name)))

LEGACY("input_length") uint64_t input_length(void);
LEGACY("input_load_u8") uint8_t input_load_u8(uint64_t offset);
LEGACY("alloc") uint64_t extism_alloc(uint64_t length);
LEGACY("store_u8") void store_u8(uint64_t offset, uint8_t value);
LEGACY("output_set") void output_set(uint64_t handle, uint64_t length);

__attribute__((export_name("echo"))) int32_t echo(void) {
  uint64_t n = input_length();
  uint64_t h = extism_alloc(n);
  for (uint64_t i = 0; i < n; i++) store_u8(h + i, input_load_u8(i));
  output_set(h, n);
  return 0;
}
