/* edged.h: the edged plugin SDK for freestanding C (wasm32, no libc).

   One header, no library: include it in your plugin's single .c file. It declares the Extism kernel
   (extism:host/env) and edged's host functions (extism:host/user), and gives small helpers for the frame protocol
   (tick record in, whole RGB frame out), config, shared values, colours and a seeded PRNG. A host function only
   becomes an import of your module if you call it, so a plugin imports exactly what its capabilities cover.

   Build: plugins/build (python -m ziglang cc --target=wasm32-freestanding -nostdlib -I plugins/sdk/c ...).
   See docs/plugin-abi.md for the ABI and docs/writing-plugins.md for a tutorial. */
#ifndef EDGED_H
#define EDGED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EDGED_EXPORT(name) __attribute__((export_name(name)))
#define EDGED_KERNEL(name) __attribute__((import_module("extism:host/env"), import_name(name)))
#define EDGED_HOST(name) __attribute__((import_module("extism:host/user"), import_name(name)))

/* Largest display the static frame buffer holds (256x256, or any other shape of 65536 pixels); define
   EDGED_MAX_PIXELS before including to change it. The buffer is zero-initialised (bss): it costs no bytes in the
   .wasm, and the host only backs the pages a frame actually touches, so a 16x16 display pays for 16x16. */
#ifndef EDGED_MAX_PIXELS
#define EDGED_MAX_PIXELS (256 * 256)
#endif

/* ---- Extism kernel ---------------------------------------------------------------------------------------- */
EDGED_KERNEL("input_length") uint64_t extism_input_length(void);
EDGED_KERNEL("input_load_u8") uint8_t extism_input_load_u8(uint64_t offset);
EDGED_KERNEL("input_load_u64") uint64_t extism_input_load_u64(uint64_t offset);
EDGED_KERNEL("alloc") uint64_t extism_alloc(uint64_t length);
EDGED_KERNEL("length") uint64_t extism_length(uint64_t handle);
EDGED_KERNEL("free") void extism_free(uint64_t handle);
EDGED_KERNEL("load_u8") uint8_t extism_load_u8(uint64_t offset);
EDGED_KERNEL("load_u64") uint64_t extism_load_u64(uint64_t offset);
EDGED_KERNEL("store_u8") void extism_store_u8(uint64_t offset, uint8_t value);
EDGED_KERNEL("store_u64") void extism_store_u64(uint64_t offset, uint64_t value);
EDGED_KERNEL("output_set") void extism_output_set(uint64_t handle, uint64_t length);
EDGED_KERNEL("error_set") void extism_error_set(uint64_t handle);
EDGED_KERNEL("config_get") uint64_t extism_config_get(uint64_t key);
EDGED_KERNEL("log_info") void extism_log_info(uint64_t handle);
EDGED_KERNEL("log_warn") void extism_log_warn(uint64_t handle);
EDGED_KERNEL("log_error") void extism_log_error(uint64_t handle);

/* ---- edged host functions (docs/plugin-abi.md); each needs the capability in the comment ------------------ */
EDGED_HOST("edged_display_info") uint64_t edged_display_info_json(void); /* led */
EDGED_HOST("edged_time_us") int64_t edged_time_us(void);                 /* none: µs since the plugin started */
EDGED_HOST("edged_gpio_read_i") int32_t edged_gpio_read(int32_t pin);    /* gpio.read */
EDGED_HOST("edged_gpio_write_i") void edged_gpio_write(int32_t pin, int32_t level);   /* gpio.write */
EDGED_HOST("edged_gpio_pwm_i") void edged_gpio_pwm(int32_t pin, int32_t permille);    /* gpio.pwm */
EDGED_HOST("edged_gpio_watch_i") void edged_gpio_watch(int32_t pin, int32_t edges);   /* gpio.events */
EDGED_HOST("edged_sensor_read_f") double edged_sensor_read_f(uint64_t name);          /* sensors */
EDGED_HOST("edged_value_set") void edged_value_set(uint64_t key, uint64_t value);     /* publish */
EDGED_HOST("edged_value_get") uint64_t edged_value_get(uint64_t key);                 /* subscribe */

enum { EDGED_RISING = 1, EDGED_FALLING = 2, EDGED_BOTH = 3 };

/* WASI's wall clock (needs the `wasi` capability): nanoseconds since the Unix epoch, UTC. */
__attribute__((import_module("wasi_snapshot_preview1"), import_name("clock_time_get"))) uint16_t
edged__wasi_clock_time_get(uint32_t clock, uint64_t precision, uint64_t *out);

static inline uint64_t edged_wall_clock_ns(void) {
  uint64_t ns = 0;
  edged__wasi_clock_time_get(0, 1000, &ns);
  return ns;
}

/* ---- libc shims: clang lowers struct copies and big initialisers to these ---------------------------------- */
#ifndef EDGED_NO_LIBC_SHIMS
void *memset(void *dst, int c, size_t n) {
  uint8_t *d = (uint8_t *)dst;
  while (n--) *d++ = (uint8_t)c;
  return dst;
}
void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
  uint8_t *d = (uint8_t *)dst;
  const uint8_t *s = (const uint8_t *)src;
  while (n--) *d++ = *s++;
  return dst;
}
#endif

static inline size_t edged_strlen(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

/* ---- memory blocks ------------------------------------------------------------------------------------------ */

/* Copies bytes into a new kernel block; returns its handle. */
static inline uint64_t edged_block(const void *data, size_t len) {
  const uint8_t *p = (const uint8_t *)data;
  uint64_t h = extism_alloc(len), i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t v;
    memcpy(&v, p + i, 8);
    extism_store_u64(h + i, v);
  }
  for (; i < len; i++) extism_store_u8(h + i, p[i]);
  return h;
}

static inline uint64_t edged_block_str(const char *s) { return edged_block(s, edged_strlen(s)); }

/* Copies a kernel block into buf (at most cap bytes); returns the block's full length. */
static inline size_t edged_block_read(uint64_t handle, void *buf, size_t cap) {
  uint8_t *p = (uint8_t *)buf;
  size_t len = (size_t)extism_length(handle), n = len < cap ? len : cap, i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = extism_load_u64(handle + i);
    memcpy(p + i, &v, 8);
  }
  for (; i < n; i++) p[i] = extism_load_u8(handle + i);
  return len;
}

/* ---- input, output, errors, logs ------------------------------------------------------------------------------ */

/* Copies the call's input into buf (at most cap bytes); returns the input's full length. */
static inline size_t edged_input(void *buf, size_t cap) {
  uint8_t *p = (uint8_t *)buf;
  size_t len = (size_t)extism_input_length(), n = len < cap ? len : cap;
  for (size_t i = 0; i < n; i++) p[i] = extism_input_load_u8(i);
  return len;
}

static inline void edged_output(const void *data, size_t len) { extism_output_set(edged_block(data, len), len); }

/* Fails the current call with this message (return a non-zero code from the export as well). */
static inline int32_t edged_fail(const char *message) {
  extism_error_set(edged_block_str(message));
  return 1;
}

static inline void edged_log_info(const char *msg) {
  uint64_t h = edged_block_str(msg);
  extism_log_info(h);
  extism_free(h);
}

/* ---- the tick record (docs/plugin-abi.md) ---------------------------------------------------------------- */

typedef struct {
  uint64_t frame;   /* frame number since this play started */
  uint64_t time_us; /* µs since this play started, on the frame grid */
  uint32_t dt_us;   /* µs since the previous frame (0 on the first) */
  uint16_t width, height;
  bool first; /* first frame after a (re)start */
} edged_tick_t;

static inline edged_tick_t edged_tick(void) {
  edged_tick_t t = {0};
  if (extism_input_length() < 32) return t;
  uint64_t w2 = extism_input_load_u64(16), w3 = extism_input_load_u64(24);
  t.frame = extism_input_load_u64(0);
  t.time_us = extism_input_load_u64(8);
  t.dt_us = (uint32_t)w2;
  t.width = (uint16_t)(w2 >> 32);
  t.height = (uint16_t)(w2 >> 48);
  t.first = (w3 & 1) != 0;
  return t;
}

/* ---- config (strings from the manifest, playlist and display) -------------------------------------------- */

/* Copies config[key] into buf as a NUL-terminated string; returns its length, or -1 if the key is not set. */
static inline int32_t edged_config(const char *key, char *buf, size_t cap) {
  uint64_t h = extism_config_get(edged_block_str(key)); /* config_get consumes the key block */
  if (h == 0) {
    if (cap) buf[0] = 0;
    return -1;
  }
  size_t len = edged_block_read(h, buf, cap ? cap - 1 : 0);
  extism_free(h);
  if (len > cap - 1) len = cap - 1;
  buf[len] = 0;
  return (int32_t)len;
}

/* Parses a decimal integer (optional sign); returns def if s is not one. */
static inline int64_t edged_parse_int(const char *s, int64_t def) {
  int64_t sign = 1, v = 0;
  if (*s == '-' || *s == '+') sign = (*s++ == '-') ? -1 : 1;
  if (*s < '0' || *s > '9') return def;
  while (*s >= '0' && *s <= '9') v = v * 10 + (*s++ - '0');
  return *s ? def : sign * v;
}

static inline int64_t edged_config_int(const char *key, int64_t def) {
  char buf[32];
  return edged_config(key, buf, sizeof buf) < 0 ? def : edged_parse_int(buf, def);
}

static inline bool edged_streq(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

/* Parses "#rrggbb" or "rrggbb" into rgb; returns false if it is not a colour. */
static inline bool edged_parse_color(const char *s, uint8_t rgb[3]) {
  if (*s == '#') s++;
  uint32_t v = 0;
  for (int i = 0; i < 6; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return false;
    v = v << 4 | (uint32_t)d;
  }
  if (s[6]) return false;
  rgb[0] = (uint8_t)(v >> 16), rgb[1] = (uint8_t)(v >> 8), rgb[2] = (uint8_t)v;
  return true;
}

/* ---- sensors and shared values --------------------------------------------------------------------------- */

/* The sensor's current value, NaN if unavailable (needs `sensors`). */
static inline double edged_sensor(const char *name) {
  uint64_t h = edged_block_str(name);
  double v = edged_sensor_read_f(h);
  extism_free(h);
  return v;
}

/* Publishes bytes under key (needs `publish`). */
static inline void edged_publish(const char *key, const void *data, size_t len) {
  uint64_t k = edged_block_str(key), v = edged_block(data, len);
  edged_value_set(k, v);
  extism_free(k);
  extism_free(v);
}

/* Reads a shared value into buf as a NUL-terminated string; returns its length, or -1 if never set
   (needs `subscribe`). */
static inline int32_t edged_subscribe(const char *key, char *buf, size_t cap) {
  uint64_t k = edged_block_str(key);
  uint64_t h = edged_value_get(k);
  extism_free(k);
  if (h == 0) return -1;
  size_t len = edged_block_read(h, buf, cap - 1);
  extism_free(h);
  if (len > cap - 1) len = cap - 1;
  buf[len] = 0;
  return (int32_t)len;
}

/* ---- frames ------------------------------------------------------------------------------------------------ */

typedef struct {
  uint16_t width, height;
  uint8_t *rgb; /* width*height*3 bytes, row-major from the top-left */
} edged_frame_t;

__attribute__((unused)) static uint8_t edged__framebuffer[EDGED_MAX_PIXELS * 3];

/* A frame of the tick's size, cleared to black (the size is clamped to EDGED_MAX_PIXELS). */
static inline edged_frame_t edged_frame(const edged_tick_t *t) {
  edged_frame_t f = {t->width, t->height, edged__framebuffer};
  if ((uint32_t)f.width * f.height > EDGED_MAX_PIXELS) f.height = (uint16_t)(EDGED_MAX_PIXELS / (f.width ? f.width : 1));
  memset(f.rgb, 0, (size_t)f.width * f.height * 3);
  return f;
}

static inline void edged_set(edged_frame_t *f, int x, int y, uint8_t r, uint8_t g, uint8_t b) {
  if (x < 0 || y < 0 || x >= f->width || y >= f->height) return;
  uint8_t *p = f->rgb + ((size_t)y * f->width + (size_t)x) * 3;
  p[0] = r, p[1] = g, p[2] = b;
}

static inline void edged_set_rgb(edged_frame_t *f, int x, int y, const uint8_t rgb[3]) {
  edged_set(f, x, y, rgb[0], rgb[1], rgb[2]);
}

/* Sends the frame as this call's output. */
static inline int32_t edged_send(const edged_frame_t *f) {
  edged_output(f->rgb, (size_t)f->width * f->height * 3);
  return 0;
}

/* Tells the host this plugin is done (0 bytes of output): the playlist moves on. */
static inline int32_t edged_done(void) { return 0; }

/* ---- colour and randomness -------------------------------------------------------------------------------- */

/* HSV with every channel 0-255 to RGB. */
static inline void edged_hsv(uint8_t h, uint8_t s, uint8_t v, uint8_t rgb[3]) {
  uint8_t region = h / 43, rem = (uint8_t)((h - region * 43) * 6);
  uint8_t p = (uint8_t)(v * (255 - s) / 255);
  uint8_t q = (uint8_t)(v * (255 - s * rem / 255) / 255);
  uint8_t t = (uint8_t)(v * (255 - s * (255 - rem) / 255) / 255);
  uint8_t r, g, b;
  switch (region) {
    case 0: r = v, g = t, b = p; break;
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    default: r = v, g = p, b = q; break;
  }
  rgb[0] = r, rgb[1] = g, rgb[2] = b;
}

/* xorshift32: small, fast and the same on every host for a given seed. */
typedef struct {
  uint32_t s;
} edged_rng_t;

static inline edged_rng_t edged_rng(uint32_t seed) {
  edged_rng_t r = {seed * 2654435761u ^ 0x9e3779b9u};
  if (!r.s) r.s = 1;
  return r;
}

static inline uint32_t edged_rand(edged_rng_t *r) {
  uint32_t x = r->s;
  x ^= x << 13, x ^= x >> 17, x ^= x << 5;
  return r->s = x;
}

/* Uniform in [0, n). */
static inline uint32_t edged_rand_below(edged_rng_t *r, uint32_t n) { return n ? edged_rand(r) % n : 0; }

#endif /* EDGED_H */
