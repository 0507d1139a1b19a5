// rainbow: a hue gradient across the display that scrolls with time.
// Config: speed (hue steps per second, 0-255 is one full turn; default 64), spread (how many full rainbows fit
// across the diagonal, default 1), saturation (0-255, default 255).
import { Host, LogLevel } from "@extism/as-pdk";
import { beginFrame, configInt, hsv, readTick } from "edged";

function myAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  Host.log(LogLevel.Error, "abort: " + (message == null ? "" : message!));
  unreachable();
}

let ready = false;
let speed: i64 = 0;
let spread: i64 = 0;
let saturation: i32 = 0;

export function frame(): i32 {
  const t = readTick();
  if (!ready) {
    ready = true;
    speed = configInt("speed", 64);
    spread = max<i64>(1, configInt("spread", 1));
    saturation = <i32>min<i64>(255, max<i64>(0, configInt("saturation", 255)));
  }
  const f = beginFrame(t);
  const shift = <i32>((<i64>t.timeUs * speed) / 1000000);
  const diagonal = max<i32>(1, f.width + f.height - 2);
  for (let y = 0; y < f.height; y++) {
    for (let x = 0; x < f.width; x++) {
      const hue = <i32>((<i64>(x + y) * 256 * spread) / diagonal) + shift;
      f.setColor(x, y, hsv(hue, saturation, 255));
    }
  }
  return f.send();
}
