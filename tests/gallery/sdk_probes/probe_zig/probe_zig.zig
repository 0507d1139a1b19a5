//! SDK probe (Zig): the SDK's helpers, one export each, so the tests can compare the three SDKs.
const edged = @import("edged");

var out: [1024]u8 = undefined;

export fn rng() i32 {
    var r = edged.Rng.init(@truncate(@as(u64, @bitCast(edged.configInt("seed", 0)))));
    for (0..16) |i| out[i * 4 ..][0..4].* = @bitCast(r.next());
    edged.output(out[0..64]);
    return 0;
}

export fn hsv_table() i32 {
    for (0..256) |h| {
        const c = edged.hsv(@intCast(h), 200, 180);
        out[h * 3] = c.r;
        out[h * 3 + 1] = c.g;
        out[h * 3 + 2] = c.b;
    }
    edged.output(out[0..768]);
    return 0;
}

export fn config() i32 {
    out[0..8].* = @bitCast(edged.configInt("n", -1));
    const c = edged.configColor("c", .{ .r = 1, .g = 2, .b = 3 });
    out[8] = c.r;
    out[9] = c.g;
    out[10] = c.b;
    edged.output(out[0..11]);
    return 0;
}

export fn gpio() i32 {
    const ev = edged.gpioEvent();
    out[0..4].* = @bitCast(ev.pin);
    out[4] = @intFromBool(ev.rising);
    edged.output(out[0..5]);
    return 0;
}

export fn tick() i32 {
    const t = edged.tick();
    out[0..8].* = @bitCast(t.frame);
    out[8..16].* = @bitCast(t.time_us);
    out[16..20].* = @bitCast(t.dt_us);
    out[20..22].* = @bitCast(t.width);
    out[22..24].* = @bitCast(t.height);
    out[24] = @intFromBool(t.first);
    edged.output(out[0..25]);
    return 0;
}

/// publishes the input under "k" and reads it back
export fn value() i32 {
    var in: [64]u8 = undefined;
    edged.publish("k", edged.input(&in));
    var back: [64]u8 = undefined;
    const got = edged.subscribe("k", &back) orelse back[0..0];
    edged.output(got);
    return 0;
}
