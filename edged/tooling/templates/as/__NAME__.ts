// __NAME__: an edged animation plugin (AssemblyScript). A colour wash with a dot bouncing across the display.
// Config: color (#rrggbb of the dot, default #ffffff), speed (pixels per second, default 10).
import { Host, LogLevel } from "@extism/as-pdk";
import { beginFrame, configColor, configInt, hsv, readTick } from "edged";

// plugins/build passes --use abort=<this module>/myAbort, so AssemblyScript's aborts end up in the plugin's log
function myAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  Host.log(LogLevel.Error, "abort: " + (message == null ? "" : message!));
  unreachable();
}

let ready = false;
let color: u32 = 0xffffff;
let speed: i64 = 10;

export function frame(): i32 {
  if (!ready) {
    color = configColor("color", 0xffffff);
    speed = configInt("speed", 10);
    ready = true;
  }
  const t = readTick();
  const f = beginFrame(t);
  const seconds = <i32>(t.timeUs / 1000000);
  for (let y = 0; y < f.height; y++) {
    for (let x = 0; x < f.width; x++) f.setColor(x, y, hsv(x * 4 + y * 4 + seconds * 16, 255, 60));
  }
  // the dot bounces: position goes 0 .. width-1 .. 0
  const span = max<i32>(1, f.width - 1);
  const pos = <i32>((<i64>t.timeUs * speed / 1000000) % (2 * span));
  const x = pos < span ? pos : 2 * span - pos;
  f.setColor(x, f.height / 2, color);
  return f.send();
}
