/* A WASI reactor plugin that reads and writes files, to test the host's WASI preopens (allowed_paths, ro:).
   read_file: input is a path, output is the file's bytes.  write_file: input is "path\ncontents". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IMPORT(name) __attribute__((import_module("extism:host/env"), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))

IMPORT("input_length") uint64_t input_length(void);
IMPORT("input_load_u8") uint8_t input_load_u8(uint64_t offset);
IMPORT("alloc") uint64_t extism_alloc(uint64_t length);
IMPORT("store_u8") void store_u8(uint64_t offset, uint8_t value);
IMPORT("output_set") void output_set(uint64_t handle, uint64_t length);
IMPORT("error_set") void error_set(uint64_t handle);

static char *read_input(uint64_t *len) {
  uint64_t n = input_length();
  char *buf = malloc(n + 1);
  for (uint64_t i = 0; i < n; i++) buf[i] = (char)input_load_u8(i);
  buf[n] = 0;
  *len = n;
  return buf;
}

static uint64_t put(const char *s, uint64_t n) {
  uint64_t h = extism_alloc(n);
  for (uint64_t i = 0; i < n; i++) store_u8(h + i, (uint8_t)s[i]);
  return h;
}

static int32_t fail(const char *what, const char *path) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s %s failed", what, path);
  error_set(put(msg, strlen(msg)));
  return 1;
}

EXPORT("read_file") int32_t read_file(void) {
  uint64_t n;
  char *path = read_input(&n);
  FILE *f = fopen(path, "rb");
  if (!f) return fail("open", path);
  static char data[65536];
  size_t got = fread(data, 1, sizeof data, f);
  fclose(f);
  output_set(put(data, got), got);
  free(path);
  return 0;
}

EXPORT("write_file") int32_t write_file(void) {
  uint64_t n;
  char *input = read_input(&n);
  char *nl = strchr(input, '\n');
  if (!nl) return fail("parse", "input");
  *nl = 0;
  FILE *f = fopen(input, "wb");
  if (!f) return fail("open", input);
  size_t len = n - (uint64_t)(nl + 1 - input);
  size_t wrote = fwrite(nl + 1, 1, len, f);
  fclose(f);
  free(input);
  if (wrote != len) return fail("write", "file");
  return 0;
}

EXPORT("hello_stdout") int32_t hello_stdout(void) {
  printf("hello from wasi stdout\n");
  fflush(stdout);
  return 0;
}
