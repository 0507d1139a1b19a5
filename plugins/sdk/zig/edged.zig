//! edged: the Zig SDK for edged plugins (wasm32-freestanding, no allocator needed).
//!
//! `const edged = @import("edged");` (plugins/build passes this file as the module "edged"). It declares the
//! Extism kernel and edged's host functions (docs/plugin-abi.md) and wraps the frame protocol: `edged.tick()` reads
//! the 32-byte tick record, `edged.Frame.begin(t)` gives a cleared RGB frame, `frame.send()` outputs it. A host
//! function only becomes an import of the module if the plugin calls it, so a plugin imports exactly what its
//! capabilities cover.

const kernel = struct {
    extern "extism:host/env" fn input_length() u64;
    extern "extism:host/env" fn input_load_u8(offset: u64) u8;
    extern "extism:host/env" fn input_load_u64(offset: u64) u64;
    extern "extism:host/env" fn alloc(length: u64) u64;
    extern "extism:host/env" fn length(handle: u64) u64;
    extern "extism:host/env" fn free(handle: u64) void;
    extern "extism:host/env" fn load_u8(offset: u64) u8;
    extern "extism:host/env" fn store_u8(offset: u64, value: u8) void;
    extern "extism:host/env" fn store_u64(offset: u64, value: u64) void;
    extern "extism:host/env" fn output_set(handle: u64, length: u64) void;
    extern "extism:host/env" fn error_set(handle: u64) void;
    extern "extism:host/env" fn config_get(key: u64) u64;
    extern "extism:host/env" fn log_info(handle: u64) void;
};

const host = struct {
    extern "extism:host/user" fn edged_time_us() i64;
    extern "extism:host/user" fn edged_gpio_read_i(pin: i32) i32;
    extern "extism:host/user" fn edged_gpio_write_i(pin: i32, level: i32) void;
    extern "extism:host/user" fn edged_gpio_pwm_i(pin: i32, permille: i32) void;
    extern "extism:host/user" fn edged_gpio_watch_i(pin: i32, edges: i32) void;
    extern "extism:host/user" fn edged_sensor_read_f(name: u64) f64;
    extern "extism:host/user" fn edged_value_set(key: u64, value: u64) void;
    extern "extism:host/user" fn edged_value_get(key: u64) u64;
};

/// Largest display the frame buffer holds (256x256, or any other shape of 65536 pixels). The buffer is
/// zero-initialised static memory: no bytes in the .wasm, and only the pages a frame touches are backed.
pub const max_pixels = 256 * 256;

// ---- kernel blocks -----------------------------------------------------------------------------------------------

/// Copies bytes into a new kernel block; returns its handle.
pub fn block(bytes: []const u8) u64 {
    const h = kernel.alloc(bytes.len);
    var i: usize = 0;
    while (i + 8 <= bytes.len) : (i += 8) kernel.store_u64(h + i, @bitCast(bytes[i..][0..8].*));
    while (i < bytes.len) : (i += 1) kernel.store_u8(h + i, bytes[i]);
    return h;
}

/// Copies a kernel block into buf; returns the part that fits.
pub fn readBlock(handle: u64, buf: []u8) []u8 {
    const n: usize = @intCast(@min(kernel.length(handle), buf.len));
    for (0..n) |i| buf[i] = kernel.load_u8(handle + i);
    return buf[0..n];
}

// ---- input, output, logs -----------------------------------------------------------------------------------------

/// Copies this call's input into buf; returns the part that fits.
pub fn input(buf: []u8) []u8 {
    const n: usize = @intCast(@min(kernel.input_length(), buf.len));
    for (0..n) |i| buf[i] = kernel.input_load_u8(i);
    return buf[0..n];
}

pub fn output(bytes: []const u8) void {
    kernel.output_set(block(bytes), bytes.len);
}

/// Fails the current call with this message; return the result from the export.
pub fn fail(message: []const u8) i32 {
    kernel.error_set(block(message));
    return 1;
}

pub fn log(message: []const u8) void {
    const h = block(message);
    kernel.log_info(h);
    kernel.free(h);
}

// ---- the tick record -----------------------------------------------------------------------------------------------

pub const Tick = struct {
    frame: u64 = 0,
    time_us: u64 = 0,
    dt_us: u32 = 0,
    width: u16 = 0,
    height: u16 = 0,
    first: bool = false,

    pub fn seconds(self: Tick) f32 {
        return @as(f32, @floatFromInt(self.time_us)) / 1e6;
    }
};

/// This call's tick record (docs/plugin-abi.md).
pub fn tick() Tick {
    if (kernel.input_length() < 32) return .{};
    const w2 = kernel.input_load_u64(16);
    return .{
        .frame = kernel.input_load_u64(0),
        .time_us = kernel.input_load_u64(8),
        .dt_us = @truncate(w2),
        .width = @truncate(w2 >> 32),
        .height = @truncate(w2 >> 48),
        .first = kernel.input_load_u64(24) & 1 != 0,
    };
}

// ---- frames ---------------------------------------------------------------------------------------------------------

pub const Rgb = struct { r: u8 = 0, g: u8 = 0, b: u8 = 0 };

var framebuffer: [max_pixels * 3]u8 = undefined;

pub const Frame = struct {
    width: u16,
    height: u16,
    rgb: []u8,

    /// A frame of the tick's size, cleared to black (clamped to max_pixels).
    pub fn begin(t: Tick) Frame {
        const w: u32 = t.width;
        var h: u32 = t.height;
        if (w * h > max_pixels) h = max_pixels / @max(w, 1);
        const n = w * h * 3;
        @memset(framebuffer[0..n], 0);
        return .{ .width = @intCast(w), .height = @intCast(h), .rgb = framebuffer[0..n] };
    }

    pub fn set(self: *Frame, x: i32, y: i32, c: Rgb) void {
        if (x < 0 or y < 0 or x >= self.width or y >= self.height) return;
        const i: usize = (@as(usize, @intCast(y)) * self.width + @as(usize, @intCast(x))) * 3;
        self.rgb[i] = c.r;
        self.rgb[i + 1] = c.g;
        self.rgb[i + 2] = c.b;
    }

    pub fn fill(self: *Frame, c: Rgb) void {
        var i: usize = 0;
        while (i < self.rgb.len) : (i += 3) {
            self.rgb[i] = c.r;
            self.rgb[i + 1] = c.g;
            self.rgb[i + 2] = c.b;
        }
    }

    /// Makes the frame this call's output; returns 0 for the export to return.
    pub fn send(self: *const Frame) i32 {
        output(self.rgb);
        return 0;
    }
};

/// "Done": no output, the playlist moves on. Return it from `frame`.
pub fn done() i32 {
    return 0;
}

// ---- config -----------------------------------------------------------------------------------------------------------

/// config[key] copied into buf, or null when the key is not set.
pub fn config(key: []const u8, buf: []u8) ?[]u8 {
    const h = kernel.config_get(block(key)); // config_get consumes the key block
    if (h == 0) return null;
    defer kernel.free(h);
    return readBlock(h, buf);
}

pub fn parseInt(s: []const u8) ?i64 {
    if (s.len == 0) return null;
    var neg = false;
    var i: usize = 0;
    if (s[0] == '-' or s[0] == '+') {
        neg = s[0] == '-';
        i = 1;
        if (s.len == 1) return null;
    }
    var v: i64 = 0;
    while (i < s.len) : (i += 1) {
        if (s[i] < '0' or s[i] > '9') return null;
        v = v * 10 + (s[i] - '0');
    }
    return if (neg) -v else v;
}

/// config[key] as an integer, or def when unset or not a number.
pub fn configInt(key: []const u8, def: i64) i64 {
    var buf: [32]u8 = undefined;
    const s = config(key, &buf) orelse return def;
    return parseInt(s) orelse def;
}

/// Parses "#rrggbb" or "rrggbb".
pub fn parseColor(s0: []const u8) ?Rgb {
    const s = if (s0.len > 0 and s0[0] == '#') s0[1..] else s0;
    if (s.len != 6) return null;
    var v: u32 = 0;
    for (s) |c| {
        const d: u32 = switch (c) {
            '0'...'9' => c - '0',
            'a'...'f' => c - 'a' + 10,
            'A'...'F' => c - 'A' + 10,
            else => return null,
        };
        v = v << 4 | d;
    }
    return .{ .r = @truncate(v >> 16), .g = @truncate(v >> 8), .b = @truncate(v) };
}

/// config[key] as a colour, or def.
pub fn configColor(key: []const u8, def: Rgb) Rgb {
    var buf: [16]u8 = undefined;
    const s = config(key, &buf) orelse return def;
    return parseColor(s) orelse def;
}

// ---- host functions ------------------------------------------------------------------------------------------------

/// µs since the plugin started (monotonic; no capability needed).
pub fn timeUs() i64 {
    return host.edged_time_us();
}

pub const Edges = enum(i32) { rising = 1, falling = 2, both = 3 };

/// Subscribes to edge events on a pin (needs `gpio.events`); they arrive through the `on_gpio` export.
pub fn gpioWatch(pin: i32, edges: Edges) void {
    host.edged_gpio_watch_i(pin, @intFromEnum(edges));
}

/// The pin's level (needs `gpio.read`).
pub fn gpioRead(pin: i32) i32 {
    return host.edged_gpio_read_i(pin);
}

/// Drives an output pin (needs `gpio.write`).
pub fn gpioWrite(pin: i32, level: i32) void {
    host.edged_gpio_write_i(pin, level);
}

/// A GPIO edge event, the input of `on_gpio`.
pub const GpioEvent = struct { pin: i32 = -1, rising: bool = false };

/// Parses `{"pin": 17, "edge": "rising", "t": 1.5}`.
pub fn gpioEvent() GpioEvent {
    var buf: [128]u8 = undefined;
    const s = input(&buf);
    var ev: GpioEvent = .{};
    if (indexOf(s, "\"pin\"")) |i| {
        var j = i + 5;
        while (j < s.len and (s[j] < '0' or s[j] > '9')) j += 1;
        var v: i32 = 0;
        while (j < s.len and s[j] >= '0' and s[j] <= '9') : (j += 1) v = v * 10 + (s[j] - '0');
        ev.pin = v;
    }
    ev.rising = indexOf(s, "\"rising\"") != null;
    return ev;
}

fn indexOf(s: []const u8, needle: []const u8) ?usize {
    if (s.len < needle.len) return null;
    var i: usize = 0;
    while (i + needle.len <= s.len) : (i += 1) {
        var ok = true;
        for (needle, 0..) |c, k| {
            if (s[i + k] != c) {
                ok = false;
                break;
            }
        }
        if (ok) return i;
    }
    return null;
}

/// A sensor's current value, NaN if unavailable (needs `sensors`).
pub fn sensor(name: []const u8) f64 {
    const h = block(name);
    defer kernel.free(h);
    return host.edged_sensor_read_f(h);
}

/// Publishes bytes under key (needs `publish`).
pub fn publish(key: []const u8, value: []const u8) void {
    const k = block(key);
    const v = block(value);
    host.edged_value_set(k, v);
    kernel.free(k);
    kernel.free(v);
}

/// A shared value copied into buf, or null if never set (needs `subscribe`).
pub fn subscribe(key: []const u8, buf: []u8) ?[]u8 {
    const k = block(key);
    const h = host.edged_value_get(k);
    kernel.free(k);
    if (h == 0) return null;
    defer kernel.free(h);
    return readBlock(h, buf);
}

// ---- colour and randomness ---------------------------------------------------------------------------------------

/// HSV, each channel 0-255, to RGB (the same integer maths as the C and AssemblyScript SDKs).
pub fn hsv(h: u8, s: u8, v: u8) Rgb {
    const region: u32 = h / 43;
    const rem: u32 = (h - region * 43) * 6;
    const vv: u32 = v;
    const ss: u32 = s;
    const p: u8 = @intCast(vv * (255 - ss) / 255);
    const q: u8 = @intCast(vv * (255 - ss * rem / 255) / 255);
    const t: u8 = @intCast(vv * (255 - ss * (255 - rem) / 255) / 255);
    return switch (region) {
        0 => .{ .r = v, .g = t, .b = p },
        1 => .{ .r = q, .g = v, .b = p },
        2 => .{ .r = p, .g = v, .b = t },
        3 => .{ .r = p, .g = q, .b = v },
        4 => .{ .r = t, .g = p, .b = v },
        else => .{ .r = v, .g = p, .b = q },
    };
}

/// xorshift32, seeded like the C and AssemblyScript SDKs.
pub const Rng = struct {
    s: u32,

    pub fn init(seed: u32) Rng {
        const s = (seed *% 2654435761) ^ 0x9e3779b9;
        return .{ .s = if (s == 0) 1 else s };
    }

    pub fn next(self: *Rng) u32 {
        var x = self.s;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.s = x;
        return x;
    }

    /// Uniform in [0, n).
    pub fn below(self: *Rng, n: u32) u32 {
        return if (n == 0) 0 else self.next() % n;
    }
};
