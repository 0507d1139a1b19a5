// Test plugin built with the official Extism AssemblyScript PDK. Each export exercises one part of the host ABI, so
// that the same wasm can be run on edged and on the official SDK and the outcomes compared.
import { Config, Host, LogLevel, Memory, Var } from "@extism/as-pdk";
import { error_set, http_request } from "@extism/as-pdk/lib/env";

@external("extism:host/user", "reflect")
declare function host_reflect(data: u64): u64;
@external("extism:host/user", "hello")
declare function host_hello(name: u64): u64;
@external("extism:host/user", "add")
declare function host_add(a: i64, b: i64): i64;

function myAbort(message: string | null, fileName: string | null, lineNumber: u32, columnNumber: u32): void {
  Host.log(LogLevel.Error, "abort: " + (message == null ? "" : message!));
  unreachable();
}

function setError(message: string): i32 {
  error_set(Memory.allocateString(message).offset);
  return 1;
}

function outputUtf8(s: string): void {
  Host.output(Uint8Array.wrap(String.UTF8.encode(s)));
}

export function noop(): i32 {
  return 0;
}

export function echo(): i32 {
  Host.output(Host.input());
  return 0;
}

export function consume(): i32 {
  Host.input();
  return 0;
}

export function fail(): i32 {
  return setError("something went wrong");
}

export function fail_rc0(): i32 {
  setError("failed, but returned 0");
  return 0;
}

export function rc7(): i32 {
  return 7;
}

export function trap(): i32 {
  unreachable();
  return 0;
}

export function loop_forever(): i32 {
  let n: u64 = 0;
  while (true) {
    n += 1;
  }
  return <i32>n;
}

export function counter(): i32 {
  const stored = Var.getString("count");
  const n = stored == null ? 1 : I32.parseInt(stored!) + 1;
  const text = n.toString();
  Var.set("count", Uint8Array.wrap(String.UTF8.encode(text)));
  outputUtf8(text);
  return 0;
}

export function get_config(): i32 {
  const value = Config.get(Host.inputString());
  outputUtf8(value == null ? "<none>" : value!);
  return 0;
}

export function var_get(): i32 {
  const value = Var.getString(Host.inputString());
  outputUtf8(value == null ? "<none>" : value!);
  return 0;
}

// "key=value" sets a var; "key=" removes it.
export function var_set(): i32 {
  const text = Host.inputString();
  const eq = text.indexOf("=");
  if (eq < 0) return setError("expected key=value");
  const key = text.substring(0, eq);
  const value = text.substring(eq + 1);
  if (value.length == 0) {
    Var.remove(key);
  } else {
    Var.set(key, Uint8Array.wrap(String.UTF8.encode(value)));
  }
  return 0;
}

// Sets var "big" to N bytes, N given as decimal input.
export function big_var(): i32 {
  const n = I32.parseInt(Host.inputString());
  const mem = Memory.allocate(<u64>n);
  Var.set("big", mem.toUint8Array());
  return 0;
}

export function log_all(): i32 {
  Host.log(LogLevel.Debug, "a debug line");
  Host.log(LogLevel.Info, "an info line");
  Host.log(LogLevel.Warn, "a warning line");
  Host.log(LogLevel.Error, "an error line");
  return 0;
}

// GET the URL given as input; output the body.
export function http_get(): i32 {
  const req = '{"url":"' + Host.inputString() + '","method":"GET","headers":{}}';
  const reqMem = Memory.allocateString(req);
  const res = http_request(reqMem.offset, 0);
  if (res == 0) {
    outputUtf8("");
    return 0;
  }
  Host.outputMemory(new Memory(res, lengthOf(res)));
  return 0;
}

@external("extism:host/env", "length")
declare function lengthOf(offset: u64): u64;

// Allocates blocks of the input's decimal size until told to stop: "SIZE COUNT".
export function alloc_many(): i32 {
  const parts = Host.inputString().split(" ");
  const size = <u64>I64.parseInt(parts[0]);
  const count = I32.parseInt(parts[1]);
  for (let i = 0; i < count; i++) Memory.allocate(size);
  outputUtf8(count.toString());
  return 0;
}

export function reflect(): i32 {
  const input = Memory.allocateBytes(Host.input());
  const out = host_reflect(input.offset);
  Host.outputMemory(new Memory(out, lengthOf(out)));
  return 0;
}

export function hello_host(): i32 {
  const out = host_hello(Memory.allocateString("edged").offset);
  Host.outputMemory(new Memory(out, lengthOf(out)));
  return 0;
}

export function add_host(): i32 {
  outputUtf8(host_add(2, 40).toString());
  return 0;
}

// Outputs N bytes of 'x', N given as decimal input.
export function output_size(): i32 {
  const n = I32.parseInt(Host.inputString());
  const out = new Uint8Array(n);
  out.fill(0x78);
  Host.output(out);
  return 0;
}

export function unicode(): i32 {
  const text = "Grüße, 世界 ✓";
  outputUtf8(text);
  return 0;
}
