/* fire: the classic heat-diffusion fire. The bottom row is kept hot, heat rises with random drift and cooling,
   and a black-red-yellow-white palette turns heat into colour.
   Config: seed (PRNG seed, default 1), cooling (0-100, higher gives shorter flames, default 30). */
#include <edged.h>

static uint8_t heat[EDGED_MAX_PIXELS];
static edged_rng_t rng;
static int cooling;
static bool ready;
static uint64_t steps;

static void palette(uint8_t h, uint8_t rgb[3]) {
  /* three ramps: black->red, red->yellow, yellow->white */
  if (h < 85) rgb[0] = (uint8_t)(h * 3), rgb[1] = 0, rgb[2] = 0;
  else if (h < 170) rgb[0] = 255, rgb[1] = (uint8_t)((h - 85) * 3), rgb[2] = 0;
  else rgb[0] = 255, rgb[1] = 255, rgb[2] = (uint8_t)((h - 170) * 3);
}

static void step(int w, int h) {
  for (int x = 0; x < w; x++) heat[(h - 1) * w + x] = (uint8_t)(200 + edged_rand_below(&rng, 56));
  /* flames burn out over about 70% of the height at the default cooling, whatever the display size */
  int decay_max = 1 + 510 * (cooling + 20) / (35 * (h > 0 ? h : 1));
  for (int y = 0; y < h - 1; y++) {
    for (int x = 0; x < w; x++) {
      int src = (y + 1) * w + x;
      uint32_t r = edged_rand(&rng);
      int dx = (int)(r & 3) - 1; /* -1..2, biased like a draught */
      int decay = (int)((r >> 8) % (uint32_t)(decay_max + 1));
      int tx = x + dx;
      if (tx < 0) tx = 0;
      if (tx >= w) tx = w - 1;
      int v = heat[src] - decay;
      heat[y * w + tx] = (uint8_t)(v < 0 ? 0 : v);
    }
  }
}

EDGED_EXPORT("frame") int32_t frame(void) {
  edged_tick_t t = edged_tick();
  edged_frame_t f = edged_frame(&t);
  if (!ready) {
    rng = edged_rng((uint32_t)edged_config_int("seed", 1));
    cooling = (int)edged_config_int("cooling", 30);
    if (cooling < 0) cooling = 0;
    if (cooling > 100) cooling = 100;
    memset(heat, 0, (size_t)f.width * f.height);
    ready = true;
  }
  /* the fire advances at 30 steps per second of play time, whatever the frame rate; after a pause it skips
     ahead instead of catching up, so no frame costs more than two steps */
  uint64_t target = t.time_us * 30 / 1000000 + 1;
  int guard = 2;
  while (steps < target && guard--) step(f.width, f.height), steps++;
  steps = target;
  uint8_t rgb[3];
  for (int y = 0; y < f.height; y++)
    for (int x = 0; x < f.width; x++) palette(heat[y * f.width + x], rgb), edged_set_rgb(&f, x, y, rgb);
  return edged_send(&f);
}
