/* SDK probe (C): the SDK's helpers, one export each, so the tests can compare the three SDKs. */
#include <edged.h>

static uint8_t out[1024];

EDGED_EXPORT("rng") int32_t rng(void) {
  edged_rng_t r = edged_rng((uint32_t)edged_config_int("seed", 0));
  for (int i = 0; i < 16; i++) {
    uint32_t v = edged_rand(&r);
    memcpy(out + i * 4, &v, 4);
  }
  edged_output(out, 64);
  return 0;
}

EDGED_EXPORT("hsv_table") int32_t hsv_table(void) {
  for (int h = 0; h < 256; h++) edged_hsv((uint8_t)h, 200, 180, out + h * 3);
  edged_output(out, 768);
  return 0;
}

EDGED_EXPORT("config") int32_t config(void) {
  int64_t n = edged_config_int("n", -1);
  memcpy(out, &n, 8);
  uint8_t rgb[3] = {1, 2, 3};
  char buf[16];
  if (edged_config("c", buf, sizeof buf) >= 0) edged_parse_color(buf, rgb);
  memcpy(out + 8, rgb, 3);
  edged_output(out, 11);
  return 0;
}

EDGED_EXPORT("tick") int32_t tick(void) {
  edged_tick_t t = edged_tick();
  memcpy(out, &t.frame, 8);
  memcpy(out + 8, &t.time_us, 8);
  memcpy(out + 16, &t.dt_us, 4);
  memcpy(out + 20, &t.width, 2);
  memcpy(out + 22, &t.height, 2);
  out[24] = t.first;
  edged_output(out, 25);
  return 0;
}

/* publishes the input under "k" and reads it back as text */
EDGED_EXPORT("value") int32_t value(void) {
  char in[64];
  size_t n = edged_input(in, sizeof in);
  edged_publish("k", in, n);
  char back[64];
  int32_t len = edged_subscribe("k", back, sizeof back);
  edged_output(back, len < 0 ? 0 : (size_t)len);
  return 0;
}
