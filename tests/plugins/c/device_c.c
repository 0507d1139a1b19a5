/* A test plugin in freestanding C (plugins/sdk/c/edged.h) that calls edged's GPIO, sensor, shared-value and display
   host functions, one export each, so tests can drive every one granted and denied through a real toolchain.

   Inputs are raw bytes: pin numbers and levels as single bytes, a per-mille duty as a little-endian u16, names as
   UTF-8 text. tests/host/test_c_plugin.py uses it. */
#include "edged.h"

static uint8_t in[256];

/* read: input [pin] -> output [level] */
EDGED_EXPORT("read") int32_t read(void) {
  edged_input(in, 1);
  uint8_t level = (uint8_t)edged_gpio_read(in[0]);
  edged_output(&level, 1);
  return 0;
}

/* write: input [pin, level] */
EDGED_EXPORT("write") int32_t write(void) {
  edged_input(in, 2);
  edged_gpio_write(in[0], in[1]);
  return 0;
}

/* pwm: input [pin, permille lo, permille hi] */
EDGED_EXPORT("pwm") int32_t pwm(void) {
  edged_input(in, 3);
  edged_gpio_pwm(in[0], in[1] | in[2] << 8);
  return 0;
}

/* watch: input [pin, edges (1 rising, 2 falling, 3 both)] */
EDGED_EXPORT("watch") int32_t watch(void) {
  edged_input(in, 2);
  edged_gpio_watch(in[0], in[1]);
  return 0;
}

/* on_gpio: publishes each event's JSON under "edge" */
EDGED_EXPORT("on_gpio") int32_t on_gpio(void) {
  size_t n = edged_input(in, sizeof in - 1);
  edged_publish("edge", in, n < sizeof in - 1 ? n : sizeof in - 1);
  return 0;
}

/* sensor: input name -> output the value as a little-endian f64 */
EDGED_EXPORT("sensor") int32_t sensor(void) {
  size_t n = edged_input(in, sizeof in - 1);
  in[n < sizeof in - 1 ? n : sizeof in - 1] = 0;
  double v = edged_sensor((const char *)in);
  edged_output(&v, sizeof v);
  return 0;
}

/* publish: input "key=value" */
EDGED_EXPORT("publish") int32_t publish(void) {
  size_t n = edged_input(in, sizeof in - 1), eq = 0;
  if (n > sizeof in - 1) n = sizeof in - 1;
  in[n] = 0;
  while (eq < n && in[eq] != '=') eq++;
  if (eq == n) return edged_fail("publish: expected key=value");
  in[eq] = 0;
  edged_publish((const char *)in, in + eq + 1, n - eq - 1);
  return 0;
}

/* subscribe: input key -> output the value, or "<unset>" */
EDGED_EXPORT("subscribe") int32_t subscribe(void) {
  size_t n = edged_input(in, sizeof in - 1);
  in[n < sizeof in - 1 ? n : sizeof in - 1] = 0;
  char value[128];
  int32_t len = edged_subscribe((const char *)in, value, sizeof value);
  if (len < 0) {
    edged_output("<unset>", 7);
  } else {
    edged_output(value, (size_t)len);
  }
  return 0;
}

/* display: output edged_display_info's JSON */
EDGED_EXPORT("display") int32_t display(void) {
  uint64_t h = edged_display_info_json();
  extism_output_set(h, extism_length(h));
  return 0;
}

/* frame: pixel 0 is red while GPIO 17 reads high, pixel 1's green is the distance sensor in cm (capped at 255) */
EDGED_EXPORT("frame") int32_t frame(void) {
  edged_tick_t t = edged_tick();
  edged_frame_t f = edged_frame(&t);
  edged_set(&f, 0, 0, edged_gpio_read(17) ? 255 : 0, 0, 0);
  double cm = edged_sensor("distance") * 100.0;
  edged_set(&f, 1, 0, 0, cm != cm || cm < 0 ? 0 : cm > 255 ? 255 : (uint8_t)cm, 0);
  return edged_send(&f);
}
