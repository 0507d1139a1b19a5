/* sprite: plays a sprite sheet embedded at build time (generate.py draws sprite_sheet.png and turns it into
   sprites.h), scaled up to fit the display and centred.
   Config: fps (sprite frames per second, default 8), loops (stop after this many loops, 0 = forever, default 0),
   background (#rrggbb, default #000010). */
#include <edged.h>

#include "sprites.h"

static int fps, loops;
static uint8_t background[3] = {0, 0, 16};
static bool ready;

EDGED_EXPORT("frame") int32_t frame(void) {
  edged_tick_t t = edged_tick();
  edged_frame_t f = edged_frame(&t);
  if (!ready) {
    fps = (int)edged_config_int("fps", 8);
    if (fps < 1) fps = 1;
    loops = (int)edged_config_int("loops", 0);
    char buf[16];
    if (edged_config("background", buf, sizeof buf) >= 0) edged_parse_color(buf, background);
    ready = true;
  }
  uint64_t n = t.time_us * (uint64_t)fps / 1000000;
  if (loops > 0 && n >= (uint64_t)loops * SPRITE_FRAMES) return edged_done();
  int index = (int)(n % SPRITE_FRAMES);
  int scale = (f.width < f.height ? f.width : f.height) / SPRITE_SIZE;
  if (scale < 1) scale = 1;
  int ox = (f.width - SPRITE_SIZE * scale) / 2, oy = (f.height - SPRITE_SIZE * scale) / 2;
  for (int y = 0; y < f.height; y++) {
    for (int x = 0; x < f.width; x++) {
      int sx = (x - ox) / scale, sy = (y - oy) / scale;
      if (x < ox || y < oy || sx >= SPRITE_SIZE || sy >= SPRITE_SIZE) {
        edged_set_rgb(&f, x, y, background);
        continue;
      }
      const uint8_t *p = &sprite_sheet[(sy * SPRITE_SIZE * SPRITE_FRAMES + index * SPRITE_SIZE + sx) * 4];
      /* blend over the background by the sprite's alpha */
      uint8_t rgb[3];
      for (int c = 0; c < 3; c++) rgb[c] = (uint8_t)((p[c] * p[3] + background[c] * (255 - p[3])) / 255);
      edged_set_rgb(&f, x, y, rgb);
    }
  }
  return edged_send(&f);
}
