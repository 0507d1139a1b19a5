// SDK probe (AssemblyScript): exposes the SDK's helpers one export each, so the tests can compare the three SDKs.
import { Host, LogLevel } from "@extism/as-pdk";
import {
  Key,
  Rng,
  configColor,
  configInt,
  hsv,
  outputBytes,
  outputText,
  readGpioEvent,
  readTick,
  sensorRead,
  valueGet,
  valueGetNumber,
  valueSet,
} from "edged";

function myAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  Host.log(LogLevel.Error, "abort: " + (message == null ? "" : message!));
  unreachable();
}

const out = new Uint8Array(1024);

// 16 u32 from Rng(config seed)
export function rng(): i32 {
  const r = new Rng(<u32>configInt("seed", 0));
  for (let i = 0; i < 16; i++) store<u32>(out.dataStart + <usize>(i * 4), r.next());
  outputBytes(out, 64);
  return 0;
}

// hsv(h, 200, 180) for h = 0..255, as RGB
export function hsv_table(): i32 {
  const buf = new Uint8Array(768);
  for (let h = 0; h < 256; h++) {
    const c = hsv(h, 200, 180);
    buf[h * 3] = <u8>(c >> 16);
    buf[h * 3 + 1] = <u8>(c >> 8);
    buf[h * 3 + 2] = <u8>c;
  }
  outputBytes(buf, 768);
  return 0;
}

// i64 configInt("n", -1), then configColor("c", 0x010203) as RGB
export function config(): i32 {
  store<i64>(out.dataStart, configInt("n", -1));
  const c = configColor("c", 0x010203);
  out[8] = <u8>(c >> 16);
  out[9] = <u8>(c >> 8);
  out[10] = <u8>c;
  outputBytes(out, 11);
  return 0;
}

// the on_gpio input parsed: i32 pin, u8 rising, f64 t
export function gpio(): i32 {
  const ev = readGpioEvent();
  store<i32>(out.dataStart, ev.pin);
  out[4] = ev.rising ? 1 : 0;
  store<f64>(out.dataStart + 5, ev.t);
  outputBytes(out, 13);
  return 0;
}

// the tick parsed: frame u64, time u64, dt u32, w u16, h u16, first u8
export function tick(): i32 {
  const t = readTick();
  store<u64>(out.dataStart, t.frame);
  store<u64>(out.dataStart + 8, t.timeUs);
  store<u32>(out.dataStart + 16, t.dtUs);
  store<u16>(out.dataStart + 20, <u16>t.width);
  store<u16>(out.dataStart + 22, <u16>t.height);
  out[24] = t.first ? 1 : 0;
  outputBytes(out, 25);
  return 0;
}

const KEY = new Key("k");

// publishes the input text under "k", then reads it back as a number (f64)
export function value(): i32 {
  valueSet(KEY, Host.inputString());
  store<f64>(out.dataStart, valueGetNumber(KEY));
  outputBytes(out, 8);
  return 0;
}

// the shared value "k" as text, or "<unset>"
export function value_text(): i32 {
  const v = valueGet(KEY);
  outputText(v == null ? "<unset>" : v!);
  return 0;
}

const DISTANCE = new Key("distance");

// the sensor "distance" as f64
export function sensor(): i32 {
  store<f64>(out.dataStart, sensorRead(DISTANCE));
  outputBytes(out, 8);
  return 0;
}
