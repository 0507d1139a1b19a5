/* distance_sensor: a sensor plugin. Every tick it reads the "distance" sensor (metres) and publishes it as decimal
   text under the shared value "distance_m", for displays such as bar_graph. A reading the hardware cannot give
   (NaN) publishes nothing, so displays keep the last good value. */
#include <edged.h>

/* Formats v >= 0 with three decimals ("1.234"); returns the length. */
static size_t format_milli(double v, char *out) {
  uint64_t milli = (uint64_t)(v * 1000.0 + 0.5);
  char digits[24];
  size_t n = 0, len = 0;
  uint64_t whole = milli / 1000;
  do digits[n++] = (char)('0' + whole % 10), whole /= 10;
  while (whole);
  while (n) out[len++] = digits[--n];
  out[len++] = '.';
  out[len++] = (char)('0' + milli / 100 % 10);
  out[len++] = (char)('0' + milli / 10 % 10);
  out[len++] = (char)('0' + milli % 10);
  return len;
}

EDGED_EXPORT("tick") int32_t tick(void) {
  double metres = edged_sensor("distance");
  if (metres != metres) return 0; /* NaN: nothing measured this time */
  if (metres < 0) metres = 0;
  char text[32];
  edged_publish("distance_m", text, format_milli(metres, text));
  return 0;
}
