/* life: Conway's Game of Life on a torus the size of the display. Cells are coloured by age. When the pattern
   starts cycling (a still life, a blinker, a glider back where it started on the torus: any period, found by
   Brent's cycle detection on a 64-bit hash of the board) or dies out, the plugin returns "done" (0 bytes) and
   the playlist moves on.
   Config: seed (default 1), density (percent of live cells at the start, default 30), rate (generations per
   second, default 10; at most two per frame), pattern ("random", "blinker", "block" or "glider"; default "random"). */
#include <edged.h>

static uint8_t age[2][EDGED_MAX_PIXELS]; /* 0 = dead, else generations alive (saturating) */
static int cur;
/* short periods (still lifes, blinkers) end on their first repeat, seen in a ring of recent boards */
#define RECENT 16
static uint64_t recent[RECENT];
static int seen;
/* any period, by Brent's algorithm: compare each new board with a saved one, saved anew whenever the steps since
   it reach a power of two; a cycle of period p is caught within about 2 * max(p, generations before it) */
static uint64_t saved;
static uint64_t power = 1, since;
static uint64_t generation;
static bool ready, finished;
static int rate;

static void place(int w, int h, int x, int y) {
  if (w > 0 && h > 0) age[0][((y % h + h) % h) * w + ((x % w + w) % w)] = 1;
}

static void start(int w, int h) {
  char pattern[16];
  if (edged_config("pattern", pattern, sizeof pattern) < 0) pattern[0] = 0;
  int cx = w / 2, cy = h / 2;
  if (edged_streq(pattern, "blinker")) {
    place(w, h, cx - 1, cy), place(w, h, cx, cy), place(w, h, cx + 1, cy);
  } else if (edged_streq(pattern, "block")) {
    place(w, h, cx, cy), place(w, h, cx + 1, cy), place(w, h, cx, cy + 1), place(w, h, cx + 1, cy + 1);
  } else if (edged_streq(pattern, "glider")) {
    place(w, h, cx + 1, cy), place(w, h, cx + 2, cy + 1), place(w, h, cx, cy + 2), place(w, h, cx + 1, cy + 2),
        place(w, h, cx + 2, cy + 2);
  } else {
    edged_rng_t rng = edged_rng((uint32_t)edged_config_int("seed", 1));
    uint32_t density = (uint32_t)edged_config_int("density", 30);
    for (int i = 0; i < w * h; i++) age[0][i] = edged_rand_below(&rng, 100) < density ? 1 : 0;
  }
  rate = (int)edged_config_int("rate", 10);
  if (rate < 1) rate = 1;
}

/* FNV-1a over the live/dead board. */
static uint64_t board_hash(const uint8_t *b, int n) {
  uint64_t hash = 1469598103934665603ull;
  for (int i = 0; i < n; i++) hash = (hash ^ (b[i] != 0)) * 1099511628211ull;
  return hash;
}

/* Advances one generation; returns false when the board has started cycling (or everything died). */
static bool step(int w, int h) {
  const uint8_t *a = age[cur];
  uint8_t *b = age[cur ^ 1];
  int live = 0;
  for (int y = 0; y < h; y++) {
    int up = (y + h - 1) % h * w, row = y * w, down = (y + 1) % h * w;
    for (int x = 0; x < w; x++) {
      int l = (x + w - 1) % w, r = (x + 1) % w;
      int n = (a[up + l] != 0) + (a[up + x] != 0) + (a[up + r] != 0) + (a[row + l] != 0) + (a[row + r] != 0) +
              (a[down + l] != 0) + (a[down + x] != 0) + (a[down + r] != 0);
      uint8_t old = a[row + x];
      uint8_t next = (n == 3 || (n == 2 && old)) ? (uint8_t)(old < 255 ? old + 1 : 255) : 0;
      b[row + x] = next;
      live += next != 0;
    }
  }
  cur ^= 1;
  generation++;
  uint64_t hash = board_hash(b, w * h);
  if (hash == saved) return false;
  for (int i = 0; i < (seen < RECENT ? seen : RECENT); i++)
    if (recent[i] == hash) return false;
  recent[seen++ % RECENT] = hash;
  if (++since == power) saved = hash, power *= 2, since = 0;
  return live > 0;
}

EDGED_EXPORT("frame") int32_t frame(void) {
  edged_tick_t t = edged_tick();
  edged_frame_t f = edged_frame(&t);
  if (!ready) {
    start(f.width, f.height);
    saved = recent[seen++] = board_hash(age[0], f.width * f.height);
    ready = true;
  }
  if (finished) return edged_done();
  /* rounded, so a rate equal to the frame rate gives one generation per frame despite µs truncation */
  uint64_t target = (t.time_us * (uint64_t)rate + 500000) / 1000000;
  /* at most two generations per frame (a bounded cost per call); after a pause the board skips ahead */
  for (int n = 0; generation < target && n < 2; n++) {
    if (!step(f.width, f.height)) {
      finished = true;
      return edged_done();
    }
  }
  if (generation < target) generation = target;
  const uint8_t *a = age[cur];
  for (int y = 0; y < f.height; y++) {
    for (int x = 0; x < f.width; x++) {
      uint8_t g = a[y * f.width + x];
      if (!g) continue;
      /* newborn cells are white-cyan, old ones settle into blue */
      int k = g > 24 ? 24 : g;
      edged_set(&f, x, y, (uint8_t)(200 - k * 8), (uint8_t)(255 - k * 5), 255);
    }
  }
  return edged_send(&f);
}
