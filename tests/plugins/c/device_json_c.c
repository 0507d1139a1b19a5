/* A test plugin in freestanding C that calls edged's handle (JSON) host functions, the ones every PDK can call
   (Rust's #[host_fn] included), plus the clock and the Matricks log functions in both namespaces. Each export
   passes its input as the argument handle and outputs what comes back. tests/host/test_c_plugin.py uses it. */
#include "edged.h"

EDGED_HOST("edged_gpio_read") uint64_t json_gpio_read(uint64_t request);
EDGED_HOST("edged_gpio_write") void json_gpio_write(uint64_t request);
EDGED_HOST("edged_gpio_pwm") void json_gpio_pwm(uint64_t request);
EDGED_HOST("edged_gpio_watch") void json_gpio_watch(uint64_t request);
EDGED_HOST("edged_sensor_read") uint64_t json_sensor_read(uint64_t name);
EDGED_HOST("matricks_info") void user_matricks_info(uint64_t text);
__attribute__((import_module("env"), import_name("matricks_warn"))) void env_matricks_warn(uint64_t text);

static uint8_t in[1024];

static uint64_t input_block(void) {
  size_t n = edged_input(in, sizeof in);
  return edged_block(in, n < sizeof in ? n : sizeof in);
}

static void output_handle(uint64_t h) {
  if (h) extism_output_set(h, extism_length(h));
}

EDGED_EXPORT("gpio_read") int32_t gpio_read(void) {
  output_handle(json_gpio_read(input_block()));
  return 0;
}

EDGED_EXPORT("gpio_write") int32_t gpio_write(void) {
  json_gpio_write(input_block());
  return 0;
}

EDGED_EXPORT("gpio_pwm") int32_t gpio_pwm(void) {
  json_gpio_pwm(input_block());
  return 0;
}

EDGED_EXPORT("gpio_watch") int32_t gpio_watch(void) {
  json_gpio_watch(input_block());
  return 0;
}

EDGED_EXPORT("sensor_read") int32_t sensor_read(void) {
  output_handle(json_sensor_read(input_block()));
  return 0;
}

EDGED_EXPORT("display_info") int32_t display_info(void) {
  output_handle(edged_display_info_json());
  return 0;
}

EDGED_EXPORT("time_us") int32_t time_us(void) {
  int64_t t = edged_time_us();
  edged_output(&t, sizeof t);
  return 0;
}

EDGED_EXPORT("log_user") int32_t log_user(void) {
  user_matricks_info(input_block());
  return 0;
}

EDGED_EXPORT("log_env") int32_t log_env(void) {
  env_matricks_warn(input_block());
  return 0;
}
