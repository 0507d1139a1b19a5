//! __NAME__: an edged animation plugin (Zig). A colour wash with a dot bouncing across the display.
//! Config: color (#rrggbb of the dot, default #ffffff), speed (pixels per second, default 10).
const edged = @import("edged");

var ready = false;
var color: edged.Rgb = .{ .r = 255, .g = 255, .b = 255 };
var speed: u64 = 10;

export fn frame() i32 {
    if (!ready) {
        color = edged.configColor("color", color);
        speed = @intCast(@max(0, edged.configInt("speed", 10)));
        ready = true;
    }
    const t = edged.tick();
    var f = edged.Frame.begin(t);
    const seconds: u64 = t.time_us / 1_000_000;
    var y: i32 = 0;
    while (y < f.height) : (y += 1) {
        var x: i32 = 0;
        while (x < f.width) : (x += 1) {
            const hue: u8 = @truncate(@as(u64, @intCast(x * 4 + y * 4)) + seconds * 16);
            f.set(x, y, edged.hsv(hue, 255, 60));
        }
    }
    // the dot bounces: position goes 0 .. width-1 .. 0
    const span: u64 = @max(1, @as(u64, f.width) -| 1);
    const pos = (t.time_us * speed / 1_000_000) % (2 * span);
    const x: i32 = @intCast(if (pos < span) pos else 2 * span - pos);
    f.set(x, @divTrunc(@as(i32, f.height), 2), color);
    return f.send();
}
