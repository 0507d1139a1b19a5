/* count_vowels in freestanding C (zig cc, wasm32-freestanding), against the raw Extism kernel ABI.
   Same output shape as plugins/examples/count_vowels: {"count":N,"total":N,"vowels":"aeiouAEIOU","thing":..,"a":..}
   Every handle given to an env function is consumed, so each key is allocated afresh for each use. */
#include <stdint.h>

#define IMPORT(name) __attribute__((import_module("extism:host/env"), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))

IMPORT("input_length") uint64_t input_length(void);
IMPORT("input_load_u8") uint8_t input_load_u8(uint64_t offset);
IMPORT("input_load_u64") uint64_t input_load_u64(uint64_t offset);
IMPORT("alloc") uint64_t extism_alloc(uint64_t length);
IMPORT("length") uint64_t extism_length(uint64_t handle);
IMPORT("load_u8") uint8_t load_u8(uint64_t offset);
IMPORT("store_u8") void store_u8(uint64_t offset, uint8_t value);
IMPORT("output_set") void output_set(uint64_t handle, uint64_t length);
IMPORT("config_get") uint64_t config_get(uint64_t key);
IMPORT("var_get") uint64_t var_get(uint64_t key);
IMPORT("var_set") void var_set(uint64_t key, uint64_t value);

static uint64_t put(const char *s, uint64_t n) {
  uint64_t h = extism_alloc(n);
  for (uint64_t i = 0; i < n; i++) store_u8(h + i, (uint8_t)s[i]);
  return h;
}

static uint64_t cstrlen(const char *s) {
  uint64_t n = 0;
  while (s[n]) n++;
  return n;
}

static uint64_t put_str(const char *s) { return put(s, cstrlen(s)); }

static char out[512];
static uint64_t out_len;

static void emit(const char *s) {
  while (*s && out_len < sizeof out) out[out_len++] = *s++;
}

static void emit_u64(uint64_t v) {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n && out_len < sizeof out) out[out_len++] = digits[--n];
}

/* Emits the bytes behind a handle as a JSON string (escaping quotes and backslashes), or null for handle 0. */
static void emit_handle_json(uint64_t h) {
  if (!h) {
    emit("null");
    return;
  }
  emit("\"");
  uint64_t n = extism_length(h);
  for (uint64_t i = 0; i < n && out_len + 2 < sizeof out; i++) {
    char c = (char)load_u8(h + i);
    if (c == '"' || c == '\\') out[out_len++] = '\\';
    out[out_len++] = c;
  }
  emit("\"");
}

static int is_vowel(uint8_t c) {
  switch (c) {
  case 'a': case 'e': case 'i': case 'o': case 'u':
  case 'A': case 'E': case 'I': case 'O': case 'U':
    return 1;
  }
  return 0;
}

static uint64_t parse_u64_handle(uint64_t h) {
  uint64_t v = 0, n = h ? extism_length(h) : 0;
  for (uint64_t i = 0; i < n; i++) v = v * 10 + (uint64_t)(load_u8(h + i) - '0');
  return v;
}

EXPORT("count_vowels") int32_t count_vowels(void) {
  uint64_t n = input_length(), count = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word = input_load_u64(i);
    for (int b = 0; b < 8; b++) count += (uint64_t)is_vowel((uint8_t)(word >> (8 * b)));
  }
  for (; i < n; i++) count += (uint64_t)is_vowel(input_load_u8(i));

  uint64_t total = parse_u64_handle(var_get(put_str("total"))) + count;
  char digits[24];
  int nd = 0;
  uint64_t t = total;
  do {
    digits[nd++] = (char)('0' + t % 10);
    t /= 10;
  } while (t);
  char text[24];
  for (int k = 0; k < nd; k++) text[k] = digits[nd - 1 - k];
  var_set(put_str("total"), put(text, (uint64_t)nd));

  var_set(put_str("a"), put_str("this is var a"));
  uint64_t a = var_get(put_str("a"));

  out_len = 0;
  emit("{\"count\":");
  emit_u64(count);
  emit(",\"total\":");
  emit_u64(total);
  emit(",\"vowels\":\"aeiouAEIOU\",\"thing\":");
  emit_handle_json(config_get(put_str("thing")));
  emit(",\"a\":");
  emit_handle_json(a);
  emit("}");
  var_set(put_str("a"), 0);

  output_set(put(out, out_len), out_len);
  return 0;
}
