// edged: the AssemblyScript SDK for edged plugins, on top of the official @extism/as-pdk.
//
// `import { ... } from "edged"` (plugins/build passes `--path plugins/sdk/assemblyscript`). It wraps the frame
// protocol (tick record in, whole RGB frame out, 0 bytes = done), edged's host functions (docs/plugin-abi.md) and a
// few helpers (HSV colours, a seeded PRNG, config parsing). Plugins are built with `--runtime stub`, which never
// frees, so everything called once per frame here allocates nothing: the tick, the frame buffer and the GPIO event
// are reused, and keys are encoded once (see Key).
import { Config, Host, LogLevel } from "@extism/as-pdk";
import {
  alloc,
  free,
  input_length,
  input_load_u64,
  input_load_u8,
  length,
  load_u8,
  output_set,
  store_u64,
  store_u8,
} from "@extism/as-pdk/lib/env";

export { Config, Host, LogLevel };

// ---- edged host functions (extism:host/user); only those a plugin calls become imports -------------------------

@external("extism:host/user", "edged_display_info")
declare function edged_display_info(): u64;
@external("extism:host/user", "edged_time_us")
declare function edged_time_us(): i64;
@external("extism:host/user", "edged_gpio_read_i")
declare function edged_gpio_read_i(pin: i32): i32;
@external("extism:host/user", "edged_gpio_write_i")
declare function edged_gpio_write_i(pin: i32, level: i32): void;
@external("extism:host/user", "edged_gpio_pwm_i")
declare function edged_gpio_pwm_i(pin: i32, permille: i32): void;
@external("extism:host/user", "edged_gpio_watch_i")
declare function edged_gpio_watch_i(pin: i32, edges: i32): void;
@external("extism:host/user", "edged_sensor_read_f")
declare function edged_sensor_read_f(name: u64): f64;
@external("extism:host/user", "edged_value_set")
declare function edged_value_set(key: u64, value: u64): void;
@external("extism:host/user", "edged_value_get")
declare function edged_value_get(key: u64): u64;

/** Largest display the frame buffer holds (pixels): 256x256, or any other shape of 65536 pixels. */
export const MAX_PIXELS: i32 = 256 * 256;

// ---- kernel blocks ------------------------------------------------------------------------------------------------

function blockFrom(ptr: usize, len: i32): u64 {
  const h = alloc(<u64>len);
  let i = 0;
  for (; i + 8 <= len; i += 8) store_u64(h + <u64>i, load<u64>(ptr + <usize>i));
  for (; i < len; i++) store_u8(h + <u64>i, load<u8>(ptr + <usize>i));
  return h;
}

/** A key (sensor name, shared-value key) encoded once, so per-frame calls allocate nothing. */
export class Key {
  readonly bytes: Uint8Array;
  constructor(readonly name: string) {
    this.bytes = Uint8Array.wrap(String.UTF8.encode(name));
  }
  block(): u64 {
    return blockFrom(this.bytes.dataStart, this.bytes.length);
  }
}

// ---- the tick record ----------------------------------------------------------------------------------------------

/** One frame's timing (docs/plugin-abi.md): the input of `frame` and `tick`. */
export class Tick {
  frame: u64 = 0;
  timeUs: u64 = 0;
  dtUs: u32 = 0;
  width: i32 = 0;
  height: i32 = 0;
  first: bool = false;
  /** Seconds since this play started. */
  get seconds(): f64 {
    return <f64>this.timeUs / 1e6;
  }
}

const theTick = new Tick();

/** Reads this call's tick record (the same object every call). */
export function readTick(): Tick {
  const t = theTick;
  if (input_length() < 32) return t;
  const w2 = input_load_u64(16);
  t.frame = input_load_u64(0);
  t.timeUs = input_load_u64(8);
  t.dtUs = <u32>w2;
  t.width = <i32>((w2 >> 32) & 0xffff);
  t.height = <i32>((w2 >> 48) & 0xffff);
  t.first = (input_load_u64(24) & 1) != 0;
  return t;
}

// ---- frames --------------------------------------------------------------------------------------------------------

/** The whole frame, RGB888 row-major from the top-left; send() makes it the call's output. */
export class Frame {
  width: i32 = 0;
  height: i32 = 0;
  /** Sized to the display at the first frame (and only grown, once, if the display grows: the stub runtime never
   * frees), so a small display does not pay for the largest one. */
  rgb: Uint8Array = new Uint8Array(0);

  /** Clears to black at the tick's size (clamped to MAX_PIXELS). */
  begin(t: Tick): Frame {
    this.width = t.width;
    this.height = t.width > 0 && t.width * t.height > MAX_PIXELS ? MAX_PIXELS / t.width : t.height;
    const n = this.width * this.height * 3;
    if (this.rgb.length < n) this.rgb = new Uint8Array(n);
    memory.fill(this.rgb.dataStart, 0, <usize>n);
    return this;
  }

  @inline set(x: i32, y: i32, r: i32, g: i32, b: i32): void {
    if (<u32>x >= <u32>this.width || <u32>y >= <u32>this.height) return;
    const p = this.rgb.dataStart + <usize>((y * this.width + x) * 3);
    store<u8>(p, <u8>r);
    store<u8>(p + 1, <u8>g);
    store<u8>(p + 2, <u8>b);
  }

  /** Sets a pixel from a packed 0xRRGGBB colour. */
  @inline setColor(x: i32, y: i32, rgb: u32): void {
    this.set(x, y, (rgb >> 16) & 0xff, (rgb >> 8) & 0xff, rgb & 0xff);
  }

  fill(rgb: u32): void {
    for (let y = 0; y < this.height; y++) for (let x = 0; x < this.width; x++) this.setColor(x, y, rgb);
  }

  /** Makes this frame the call's output; returns 0 for the export to return. */
  send(): i32 {
    const n = this.width * this.height * 3;
    output_set(blockFrom(this.rgb.dataStart, n), <u64>n);
    return 0;
  }
}

const theFrame = new Frame();

/** The frame for this tick, cleared to black (the same buffer every call). */
export function beginFrame(t: Tick): Frame {
  return theFrame.begin(t);
}

/** Says "done": no output, the playlist moves on. Return its value from `frame`. */
export function done(): i32 {
  return 0;
}

/** Sets the call's output to the first `len` bytes of `data`. */
export function outputBytes(data: Uint8Array, len: i32): void {
  output_set(blockFrom(data.dataStart, len), <u64>len);
}

/** Sets the call's output to UTF-8 text. */
export function outputText(s: string): void {
  const bytes = String.UTF8.encode(s);
  output_set(blockFrom(changetype<usize>(bytes), bytes.byteLength), <u64>bytes.byteLength);
}

// ---- config -----------------------------------------------------------------------------------------------------------

/** config[key] as a string, or `def` when the key is not set. */
export function config(key: string, def: string): string {
  const v = Config.get(key);
  return v == null ? def : v!;
}

/** config[key] as an integer, or `def` when unset or not a number. */
export function configInt(key: string, def: i64): i64 {
  const v = Config.get(key);
  if (v == null || v!.length == 0) return def;
  const s = v!;
  let i = s.charCodeAt(0) == 45 ? 1 : 0; // '-'
  if (i == s.length) return def;
  let n: i64 = 0;
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return def;
    n = n * 10 + <i64>(c - 48);
  }
  return s.charCodeAt(0) == 45 ? -n : n;
}

/** config[key] as "#rrggbb" or "rrggbb", packed 0xRRGGBB, or `def`. */
export function configColor(key: string, def: u32): u32 {
  const v = Config.get(key);
  if (v == null) return def;
  let s = v!;
  if (s.startsWith("#")) s = s.substring(1);
  if (s.length != 6) return def;
  let n: u32 = 0;
  for (let i = 0; i < 6; i++) {
    const c = s.charCodeAt(i);
    let d: i32 = -1;
    if (c >= 48 && c <= 57) d = c - 48;
    else if (c >= 97 && c <= 102) d = c - 87;
    else if (c >= 65 && c <= 70) d = c - 55;
    if (d < 0) return def;
    n = (n << 4) | <u32>d;
  }
  return n;
}

// ---- host functions -------------------------------------------------------------------------------------------------

/** µs since the plugin started (monotonic; no capability needed). */
export function timeUs(): i64 {
  return edged_time_us();
}

/** The display's info JSON: {"width","height","fps","serpentine","brightness"} (needs `led`). */
export function displayInfo(): string {
  const h = edged_display_info();
  const n = <i32>length(h);
  const buf = new Uint8Array(n);
  for (let i = 0; i < n; i++) buf[i] = load_u8(h + <u64>i);
  free(h);
  return String.UTF8.decode(buf.buffer);
}

export const RISING: i32 = 1;
export const FALLING: i32 = 2;
export const BOTH: i32 = 3;

/** Subscribes to edge events on a pin (needs `gpio.events`); they arrive through the `on_gpio` export. */
export function gpioWatch(pin: i32, edges: i32 = BOTH): void {
  edged_gpio_watch_i(pin, edges);
}

/** The pin's level, 0 or 1 (needs `gpio.read`). */
export function gpioRead(pin: i32): i32 {
  return edged_gpio_read_i(pin);
}

/** Drives an output pin (needs `gpio.write`). */
export function gpioWrite(pin: i32, level: i32): void {
  edged_gpio_write_i(pin, level);
}

/** PWM duty from 0.0 to 1.0 (needs `gpio.pwm`). */
export function gpioPwm(pin: i32, duty: f64): void {
  edged_gpio_pwm_i(pin, <i32>Math.round(Math.max(0.0, Math.min(1.0, duty)) * 1000.0));
}

/** A GPIO edge event, as given to `on_gpio`. */
export class GpioEvent {
  pin: i32 = -1;
  rising: bool = false;
  /** seconds since the plugin started */
  t: f64 = 0;
}

const theEvent = new GpioEvent();
const eventBuf = new Uint8Array(256);

/** Parses the input of `on_gpio` ({"pin": 17, "edge": "rising", "t": 1.5}); the same object every call. */
export function readGpioEvent(): GpioEvent {
  const n = <i32>min<u64>(input_length(), <u64>eventBuf.length);
  for (let i = 0; i < n; i++) eventBuf[i] = input_load_u8(<u64>i);
  const ev = theEvent;
  const pin = valueAfter(n, '"pin"');
  ev.pin = pin < 0 ? -1 : <i32>parseNumber(pin, n);
  const edge = valueAfter(n, '"edge"');
  ev.rising = edge >= 0 && edge + 1 < n && eventBuf[edge] == 34 && eventBuf[edge + 1] == 114; // "r
  const t = valueAfter(n, '"t"');
  ev.t = t < 0 ? 0 : parseNumber(t, n);
  return ev;
}

/** Where the value of a JSON key starts in eventBuf (after the colon and spaces), or -1. */
function valueAfter(n: i32, key: string): i32 {
  const k = key.length;
  for (let i = 0; i + k <= n; i++) {
    let match = true;
    for (let j = 0; j < k; j++) {
      if (<i32>eventBuf[i + j] != key.charCodeAt(j)) {
        match = false;
        break;
      }
    }
    if (!match) continue;
    let at = i + k;
    while (at < n && (eventBuf[at] == 32 || eventBuf[at] == 58)) at++; // spaces and ':'
    return at;
  }
  return -1;
}

function parseNumber(at: i32, n: i32): f64 {
  let i = at;
  let neg = false;
  if (i < n && eventBuf[i] == 45) {
    neg = true;
    i++;
  }
  let v: f64 = 0;
  let scale: f64 = 0;
  for (; i < n; i++) {
    const c = eventBuf[i];
    if (c == 46 && scale == 0) {
      scale = 1;
      continue;
    }
    if (c < 48 || c > 57) break;
    if (scale > 0) {
      scale /= 10;
      v += <f64>(c - 48) * scale;
    } else {
      v = v * 10 + <f64>(c - 48);
    }
  }
  return neg ? -v : v;
}

/** A sensor's current value, NaN if unavailable (needs `sensors`). */
export function sensorRead(name: Key): f64 {
  const h = name.block();
  const v = edged_sensor_read_f(h);
  free(h);
  return v;
}

const valueBuf = new Uint8Array(256);

/** Publishes text under a shared-value key (needs `publish`). */
export function valueSet(key: Key, value: string): void {
  const k = key.block();
  const bytes = String.UTF8.encode(value);
  const v = blockFrom(changetype<usize>(bytes), bytes.byteLength);
  edged_value_set(k, v);
  free(k);
  free(v);
}

/** A shared value as text, or null if it was never set (needs `subscribe`). Allocates: for per-frame reads of
 * numbers use valueGetNumber. */
export function valueGet(key: Key): string | null {
  const k = key.block();
  const h = edged_value_get(k);
  free(k);
  if (h == 0) return null;
  const n = <i32>length(h);
  const buf = new Uint8Array(n);
  for (let i = 0; i < n; i++) buf[i] = load_u8(h + <u64>i);
  free(h);
  return String.UTF8.decode(buf.buffer);
}

/** A shared value parsed as a number, or NaN if it was never set or is not a number (needs `subscribe`). */
export function valueGetNumber(key: Key): f64 {
  const k = key.block();
  const h = edged_value_get(k);
  free(k);
  if (h == 0) return NaN;
  const n = <i32>Math.min(<f64>length(h), <f64>valueBuf.length);
  let v: f64 = 0;
  let scale: f64 = 0;
  let neg = false;
  let digits = 0;
  for (let i = 0; i < n; i++) {
    const c = load_u8(h + <u64>i);
    if (i == 0 && c == 45) {
      neg = true;
      continue;
    }
    if (c == 46 && scale == 0) {
      scale = 1;
      continue;
    }
    if (c < 48 || c > 57) {
      free(h);
      return NaN;
    }
    digits++;
    if (scale > 0) {
      scale /= 10;
      v += <f64>(c - 48) * scale;
    } else {
      v = v * 10 + <f64>(c - 48);
    }
  }
  free(h);
  if (digits == 0) return NaN;
  return neg ? -v : v;
}

/** Logs through the host's logger for this plugin. */
export function log(message: string): void {
  Host.log(LogLevel.Info, message);
}

// ---- colour and randomness --------------------------------------------------------------------------------------------

/** HSV (each 0-255) to packed 0xRRGGBB. */
export function hsv(h: i32, s: i32, v: i32): u32 {
  h &= 255;
  const region = h / 43;
  const rem = (h - region * 43) * 6;
  const p = (v * (255 - s)) / 255;
  const q = (v * (255 - (s * rem) / 255)) / 255;
  const t = (v * (255 - (s * (255 - rem)) / 255)) / 255;
  let r = 0,
    g = 0,
    b = 0;
  if (region == 0) {
    r = v; g = t; b = p;
  } else if (region == 1) {
    r = q; g = v; b = p;
  } else if (region == 2) {
    r = p; g = v; b = t;
  } else if (region == 3) {
    r = p; g = q; b = v;
  } else if (region == 4) {
    r = t; g = p; b = v;
  } else {
    r = v; g = p; b = q;
  }
  return (<u32>r << 16) | (<u32>g << 8) | <u32>b;
}

/** xorshift32 seeded like the C and Zig SDKs, so a seed means the same sequence in every language. */
export class Rng {
  s: u32;
  constructor(seed: u32) {
    let s = seed * 2654435761 ^ 0x9e3779b9;
    this.s = s == 0 ? 1 : s;
  }
  next(): u32 {
    let x = this.s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    this.s = x;
    return x;
  }
  /** Uniform in [0, n). */
  below(n: u32): u32 {
    return n == 0 ? 0 : this.next() % n;
  }
}

/** Standard abort handler: plugins/build passes `--use abort=<module>/myAbort`; re-export it from your plugin. */
export function abortHandler(message: string | null, fileName: string | null, line: u32, column: u32): void {
  Host.log(LogLevel.Error, "abort: " + (message == null ? "" : message!));
  unreachable();
}
