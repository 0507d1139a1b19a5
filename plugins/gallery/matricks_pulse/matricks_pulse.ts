// matricks_pulse: a plugin written to Matricks' interface, to prove the compatibility path. `setup` reads the
// display size from Matricks' config keys; every `update` returns JSON rows of [B, G, R, W] pixels (rings of colour
// pulsing out from the centre) and, after `frames` updates, JSON null: "done". It knows nothing of edged.
// Config: width, height (set by the host, as Matricks does), frames (updates before done, 0 = forever, default 0).
import { Config, Host, LogLevel } from "@extism/as-pdk";
import { hsv, outputBytes } from "edged";

function myAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  Host.log(LogLevel.Error, "abort: " + (message == null ? "" : message!));
  unreachable();
}

let width = 0;
let height = 0;
let limit = 0;
let count = 0;
let json = new Uint8Array(0);

function configNumber(key: string, def: i32): i32 {
  const v = Config.get(key);
  if (v == null) return def;
  const n = I32.parseInt(v);
  return isNaN(<f64>n) ? def : n;
}

export function setup(): i32 {
  width = max<i32>(0, configNumber("width", 16));
  height = max<i32>(0, configNumber("height", 16));
  limit = configNumber("frames", 0);
  // at most "[255,255,255,0]," per pixel, brackets and commas per row
  json = new Uint8Array(width * height * 16 + height * 3 + 8);
  count = 0;
  return 0;
}

let at = 0;

@inline function put(c: i32): void {
  unchecked((json[at++] = <u8>c));
}

function putNumber(v: i32): void {
  if (v >= 100) put(48 + v / 100);
  if (v >= 10) put(48 + (v / 10) % 10);
  put(48 + (v % 10));
}

export function update(): i32 {
  if (json.length == 0) setup(); // a host that skips setup still gets frames
  if (limit > 0 && count >= limit) {
    outputBytes(Uint8Array.wrap(String.UTF8.encode("null")), 4);
    return 0;
  }
  const cx = <f64>(width - 1) / 2.0,
    cy = <f64>(height - 1) / 2.0;
  const scale = 32.0 / <f64>max<i32>(1, min<i32>(width, height));
  at = 0;
  put(91); // [
  for (let y = 0; y < height; y++) {
    if (y > 0) put(44);
    put(91);
    for (let x = 0; x < width; x++) {
      if (x > 0) put(44);
      const d = Math.sqrt((<f64>x - cx) * (<f64>x - cx) + (<f64>y - cy) * (<f64>y - cy)) * scale;
      const rgb = hsv(<i32>(d * 8.0) - count * 6, 255, 255);
      put(91);
      putNumber(<i32>(rgb & 0xff)); // B
      put(44);
      putNumber(<i32>((rgb >> 8) & 0xff)); // G
      put(44);
      putNumber(<i32>((rgb >> 16) & 0xff)); // R
      put(44);
      put(48); // W: unused on RGB displays
      put(93);
    }
    put(93);
  }
  put(93);
  count++;
  outputBytes(json, at);
  return 0;
}
