/* clock: the time as HH:MM in a small 3x5 bitmap font, scaled to fit, with a blinking colon.
   Wall-clock time comes from WASI's realtime clock (so the manifest asks for the `wasi` capability): edged's own
   edged_time_us is monotonic since the plugin started and knows no date or time of day.
   Config: format ("24h" or "12h", default "24h"; 12h shows a dot in the bottom-right corner for PM),
   tz_offset (minutes east of UTC, default 0), color (#rrggbb, default #40c0ff),
   time ("HH:MM" or "HH:MM:SS": start from this time instead of the clock, then advance with the play time;
   for demos and tests). */
#include <edged.h>

/* 3x5 digits, one row per byte (bit 2 = left column). */
static const uint8_t DIGITS[10][5] = {
    {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 3, 1, 7}, {5, 5, 7, 1, 1},
    {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 2, 2, 2}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7},
};

static bool ready, twelve;
static int64_t tz_minutes, fixed_start_s = -1;
static uint8_t color[3] = {64, 192, 255};

static void rect(edged_frame_t *f, int x, int y, int w, int h) {
  for (int j = 0; j < h; j++)
    for (int i = 0; i < w; i++) edged_set_rgb(f, x + i, y + j, color);
}

static void digit(edged_frame_t *f, int d, int x, int y, int s) {
  for (int row = 0; row < 5; row++)
    for (int col = 0; col < 3; col++)
      if (DIGITS[d][row] & (4 >> col)) rect(f, x + col * s, y + row * s, s, s);
}

/* "HH:MM" or "HH:MM:SS" to seconds, -1 if malformed. */
static int64_t parse_time(const char *s) {
  int64_t part[3] = {0, 0, 0};
  int n = 0;
  for (; n < 3; n++) {
    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9') return -1;
    part[n] = (s[0] - '0') * 10 + (s[1] - '0');
    s += 2;
    if (*s != ':') break;
    s++;
  }
  if (*s || n < 1 || part[0] > 23 || part[1] > 59 || part[2] > 59) return -1;
  return part[0] * 3600 + part[1] * 60 + part[2];
}

EDGED_EXPORT("frame") int32_t frame(void) {
  edged_tick_t t = edged_tick();
  edged_frame_t f = edged_frame(&t);
  if (!ready) {
    char buf[16];
    twelve = edged_config("format", buf, sizeof buf) >= 0 && edged_streq(buf, "12h");
    tz_minutes = edged_config_int("tz_offset", 0);
    if (edged_config("color", buf, sizeof buf) >= 0) edged_parse_color(buf, color);
    if (edged_config("time", buf, sizeof buf) >= 0) fixed_start_s = parse_time(buf);
    ready = true;
  }
  int64_t now_s = fixed_start_s >= 0 ? fixed_start_s + (int64_t)(t.time_us / 1000000)
                                     : (int64_t)(edged_wall_clock_ns() / 1000000000ull) + tz_minutes * 60;
  int64_t day_s = ((now_s % 86400) + 86400) % 86400;
  int hour = (int)(day_s / 3600), minute = (int)(day_s / 60 % 60);
  bool pm = hour >= 12, colon = day_s % 2 == 0;
  if (twelve) hour = hour % 12 == 0 ? 12 : hour % 12;

  int W = f.width, H = f.height;
  if (W >= 17) { /* one line: HH:MM, 17 units wide and 5 tall */
    int s = W / 17 < H / 5 ? W / 17 : H / 5;
    if (s < 1) s = 1;
    int x = (W - 17 * s) / 2, y = (H - 5 * s) / 2;
    if (!twelve || hour >= 10) digit(&f, hour / 10, x, y, s);
    digit(&f, hour % 10, x + 4 * s, y, s);
    if (colon) rect(&f, x + 8 * s, y + s, s, s), rect(&f, x + 8 * s, y + 3 * s, s, s);
    digit(&f, minute / 10, x + 10 * s, y, s), digit(&f, minute % 10, x + 14 * s, y, s);
  } else { /* two lines: HH over MM, 7 units wide and 11 tall */
    int s = W / 7 < H / 11 ? W / 7 : H / 11;
    if (s < 1) s = 1;
    int x = (W - 7 * s) / 2, y = (H - 11 * s) / 2;
    if (!twelve || hour >= 10) digit(&f, hour / 10, x, y, s);
    digit(&f, hour % 10, x + 4 * s, y, s);
    digit(&f, minute / 10, x, y + 6 * s, s), digit(&f, minute % 10, x + 4 * s, y + 6 * s, s);
    if (colon) rect(&f, W - 1, 0, 1, 1);
  }
  if (twelve && pm) rect(&f, W - 1, H - 1, 1, 1);
  return edged_send(&f);
}
