// count_vowels: the classic Extism example, as an edged plugin built with the official AssemblyScript PDK.
// Input: any UTF-8 text. Output: JSON with the number of vowels in this call and the running total across calls
// (kept in a var), the config value "thing", and var "a" read back after setting it.
import { Config, Host, LogLevel, Var } from "@extism/as-pdk";

function myAbort(message: string | null, fileName: string | null, lineNumber: u32, columnNumber: u32): void {
  Host.log(LogLevel.Error, "abort: " + (message == null ? "" : message!));
  unreachable();
}

function isVowel(c: i32): bool {
  switch (c) {
    case 0x61: case 0x65: case 0x69: case 0x6f: case 0x75: // a e i o u
    case 0x41: case 0x45: case 0x49: case 0x4f: case 0x55: // A E I O U
      return true;
  }
  return false;
}

function jsonString(s: string | null): string {
  if (s == null) return "null";
  return '"' + s.replaceAll("\\", "\\\\").replaceAll('"', '\\"') + '"';
}

export function count_vowels(): i32 {
  const input = Host.input();
  let count = 0;
  for (let i = 0; i < input.length; i++) {
    if (isVowel(input[i])) count += 1;
  }

  const previous = Var.getString("total");
  const total = (previous == null ? 0 : I32.parseInt(previous)) + count;
  Var.set("total", Uint8Array.wrap(String.UTF8.encode(total.toString())));

  Var.set("a", Uint8Array.wrap(String.UTF8.encode("this is var a")));
  const a = Var.getString("a");
  Var.remove("a");

  const out =
    '{"count":' + count.toString() +
    ',"total":' + total.toString() +
    ',"vowels":"aeiouAEIOU"' +
    ',"thing":' + jsonString(Config.get("thing")) +
    ',"a":' + jsonString(a) + "}";
  Host.output(Uint8Array.wrap(String.UTF8.encode(out)));
  return 0;
}
