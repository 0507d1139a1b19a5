// bar_graph: shows the shared value "distance_m" (published by distance_sensor) as a bar rising from the bottom,
// red when something is close and green when it is far. Before any reading arrives it shows a dim outline.
// Config: max_cm (the distance that fills the display, default 200).
import { Host, LogLevel } from "@extism/as-pdk";
import { Key, beginFrame, configInt, hsv, readTick, valueGetNumber } from "edged";

function myAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  Host.log(LogLevel.Error, "abort: " + (message == null ? "" : message!));
  unreachable();
}

const DISTANCE = new Key("distance_m");
let ready = false;
let maxM: f64 = 2.0;

export function frame(): i32 {
  if (!ready) {
    maxM = <f64>max<i64>(1, configInt("max_cm", 200)) / 100.0;
    ready = true;
  }
  const t = readTick();
  const f = beginFrame(t);
  const metres = valueGetNumber(DISTANCE);
  if (isNaN(metres)) {
    for (let x = 0; x < f.width; x++) {
      f.set(x, 0, 40, 40, 40);
      f.set(x, f.height - 1, 40, 40, 40);
    }
    for (let y = 0; y < f.height; y++) {
      f.set(0, y, 40, 40, 40);
      f.set(f.width - 1, y, 40, 40, 40);
    }
    return f.send();
  }
  const fraction = Math.min(1.0, Math.max(0.0, metres / maxM));
  const filled = <i32>Math.round(fraction * <f64>f.height);
  // hue 0 (red) when close, 85 (green) when far
  const color = hsv(<i32>(fraction * 85.0), 255, 255);
  const margin = f.width >= 8 ? f.width / 8 : 0;
  for (let y = f.height - filled; y < f.height; y++) {
    for (let x = margin; x < f.width - margin; x++) f.setColor(x, y, color);
  }
  return f.send();
}
