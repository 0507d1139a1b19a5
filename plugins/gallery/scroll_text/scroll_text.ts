// scroll_text: text scrolling right to left in a 6x11 bitmap font covering printable ASCII and Latin-1.
// The text comes from config as UTF-8 (decoded properly); characters outside Latin-1 are shown as "?".
// Config: text (default "Hello from edged!"), color (#rrggbb, default #ffb000), speed (font pixels per second,
// default 12), loop ("true" or "false": when false, the plugin is done after one pass; default "true").
import { Host, LogLevel } from "@extism/as-pdk";
import { beginFrame, config, configColor, configInt, done, readTick } from "edged";
import { FONT, FONT_H, FONT_W } from "./font";

function myAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  Host.log(LogLevel.Error, "abort: " + (message == null ? "" : message!));
  unreachable();
}

let ready = false;
let glyphs: Uint8Array = new Uint8Array(0);
let color: u32 = 0;
let speed: i64 = 12;
let looping = true;

function setup(): void {
  const text = config("text", "Hello from edged!");
  glyphs = new Uint8Array(text.length);
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) i++; // a surrogate pair is one character
    glyphs[n++] = <u8>(c <= 0xff && (c >= 0xa0 || (c >= 0x20 && c < 0x7f)) ? c : 0x3f); // "?"
  }
  glyphs = glyphs.subarray(0, n);
  color = configColor("color", 0xffb000);
  speed = max<i64>(1, configInt("speed", 12));
  looping = config("loop", "true") != "false";
  ready = true;
}

export function frame(): i32 {
  if (!ready) setup();
  const t = readTick();
  const f = beginFrame(t);
  const scale = max<i32>(1, f.height / 16);
  const textWidth = glyphs.length * FONT_W * scale;
  const travel = <i64>(f.width + textWidth);
  let offset = (<i64>t.timeUs * speed * <i64>scale) / 1000000;
  if (offset >= travel) {
    if (!looping) return done();
    offset %= travel;
  }
  const x0 = f.width - <i32>offset;
  const y0 = (f.height - FONT_H * scale) / 2;
  const r = (color >> 16) & 0xff,
    g = (color >> 8) & 0xff,
    b = color & 0xff;
  for (let i = 0; i < glyphs.length; i++) {
    const gx = x0 + i * FONT_W * scale;
    if (gx >= f.width || gx + FONT_W * scale <= 0) continue;
    const base = <i32>glyphs[i] * FONT_H;
    for (let row = 0; row < FONT_H; row++) {
      const bits = <i32>unchecked(FONT[base + row]);
      if (bits == 0) continue;
      for (let col = 0; col < FONT_W; col++) {
        if ((bits & (1 << (FONT_W - 1 - col))) == 0) continue;
        for (let dy = 0; dy < scale; dy++)
          for (let dx = 0; dx < scale; dx++) f.set(gx + col * scale + dx, y0 + row * scale + dy, r, g, b);
      }
    }
  }
  return f.send();
}
