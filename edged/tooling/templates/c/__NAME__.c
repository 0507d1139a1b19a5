/* __NAME__: an edged animation plugin (C). A colour wash with a dot bouncing across the display.
   Config: color (#rrggbb of the dot, default #ffffff), speed (pixels per second, default 10). */
#include <edged.h>

static bool ready;
static uint8_t color[3] = {255, 255, 255};
static int64_t speed = 10;

EDGED_EXPORT("frame") int32_t frame(void) {
  if (!ready) {
    char buf[16];
    if (edged_config("color", buf, sizeof buf) >= 0) edged_parse_color(buf, color);
    speed = edged_config_int("speed", 10);
    ready = true;
  }
  edged_tick_t t = edged_tick();
  edged_frame_t f = edged_frame(&t);
  int seconds = (int)(t.time_us / 1000000);
  uint8_t rgb[3];
  for (int y = 0; y < f.height; y++)
    for (int x = 0; x < f.width; x++) edged_hsv((uint8_t)(x * 4 + y * 4 + seconds * 16), 255, 60, rgb), edged_set_rgb(&f, x, y, rgb);
  /* the dot bounces: position goes 0 .. width-1 .. 0 */
  int64_t span = f.width > 1 ? f.width - 1 : 1;
  int64_t pos = (int64_t)(t.time_us * (uint64_t)speed / 1000000) % (2 * span);
  edged_set_rgb(&f, (int)(pos < span ? pos : 2 * span - pos), f.height / 2, color);
  return edged_send(&f);
}
