/* matrix_rain: falling green glyph trails with bright heads, one drop per column, each with its own speed and
   length. Config: seed (default 1), speed (rows per second of the fastest drops, default 20), color (head-to-tail
   hue of the trail as #rrggbb, default #00ff46). */
#include <edged.h>

#define MAX_COLS 256

typedef struct {
  int32_t head_q8;  /* head row in 1/256 rows */
  int32_t speed_q8; /* rows per second in 1/256 */
  uint8_t length;
} drop_t;

static drop_t drops[MAX_COLS];
static uint8_t glyph[EDGED_MAX_PIXELS]; /* per-cell brightness jitter: the "characters" */
static edged_rng_t rng;
static int speed;
static uint8_t color[3] = {0, 255, 70};
static bool ready;
static uint64_t last_us;

static void respawn(drop_t *d, int h, bool anywhere) {
  d->length = (uint8_t)(h / 4 + 2 + edged_rand_below(&rng, (uint32_t)(h / 2 + 1)));
  d->speed_q8 = (int32_t)((speed * 256) / 3 + edged_rand_below(&rng, (uint32_t)(speed * 256 * 2 / 3 + 1)));
  d->head_q8 = anywhere ? (int32_t)(edged_rand_below(&rng, (uint32_t)(2 * h)) * 256) - h * 256 : -(int32_t)d->length * 256;
}

EDGED_EXPORT("frame") int32_t frame(void) {
  edged_tick_t t = edged_tick();
  edged_frame_t f = edged_frame(&t);
  int w = f.width < MAX_COLS ? f.width : MAX_COLS, h = f.height;
  if (!ready) {
    rng = edged_rng((uint32_t)edged_config_int("seed", 1));
    speed = (int)edged_config_int("speed", 20);
    if (speed < 1) speed = 1;
    char buf[16];
    if (edged_config("color", buf, sizeof buf) >= 0) edged_parse_color(buf, color);
    for (int x = 0; x < w; x++) respawn(&drops[x], h, true);
    for (int i = 0; i < w * h; i++) glyph[i] = (uint8_t)(160 + edged_rand_below(&rng, 96));
    ready = true;
  }
  uint64_t dt = t.time_us - last_us;
  last_us = t.time_us;
  for (int x = 0; x < w; x++) {
    drop_t *d = &drops[x];
    d->head_q8 += (int32_t)((uint64_t)d->speed_q8 * dt / 1000000);
    int head = d->head_q8 >> 8;
    if (head - d->length > h) respawn(d, h, false), head = d->head_q8 >> 8;
    /* a few glyphs flicker each frame */
    glyph[edged_rand_below(&rng, (uint32_t)(w * h))] = (uint8_t)(160 + edged_rand_below(&rng, 96));
    for (int k = 0; k < d->length; k++) {
      int y = head - k;
      if (y < 0 || y >= h) continue;
      uint32_t level = (uint32_t)glyph[y * w + x] * (uint32_t)(d->length - k) / d->length;
      if (k == 0)
        edged_set(&f, x, y, 220, 255, 220);
      else
        edged_set(&f, x, y, (uint8_t)(color[0] * level / 255), (uint8_t)(color[1] * level / 255),
                  (uint8_t)(color[2] * level / 255));
    }
  }
  return edged_send(&f);
}
