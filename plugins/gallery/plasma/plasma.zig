//! plasma: the classic demo effect, a sum of moving sine waves mapped through a hue palette.
//! Config: speed (percent, default 100), scale (feature size in percent of the display, default 100),
//! seed (shifts the waves' phases, default 0).
const edged = @import("edged");

var speed: f32 = 1.0;
var scale: f32 = 1.0;
var phase: f32 = 0.0;
var ready = false;

fn setup() void {
    speed = @as(f32, @floatFromInt(edged.configInt("speed", 100))) / 100.0;
    scale = @max(0.05, @as(f32, @floatFromInt(edged.configInt("scale", 100))) / 100.0);
    var rng = edged.Rng.init(@truncate(@as(u64, @bitCast(edged.configInt("seed", 0)))));
    phase = @as(f32, @floatFromInt(rng.below(6283))) / 1000.0;
    ready = true;
}

export fn frame() i32 {
    if (!ready) setup();
    const t = edged.tick();
    var f = edged.Frame.begin(t);
    const time = t.seconds() * speed;
    // waves are laid out on a 16-unit square whatever the display size, so every size shows the same picture
    const sx = 16.0 / (@as(f32, @floatFromInt(@max(f.width, 1))) * scale);
    const sy = 16.0 / (@as(f32, @floatFromInt(@max(f.height, 1))) * scale);
    var y: i32 = 0;
    while (y < f.height) : (y += 1) {
        const fy = @as(f32, @floatFromInt(y)) * sy;
        var x: i32 = 0;
        while (x < f.width) : (x += 1) {
            const fx = @as(f32, @floatFromInt(x)) * sx;
            const cx = fx - 8.0 + 4.0 * @sin(time * 0.7 + phase);
            const cy = fy - 8.0 + 4.0 * @cos(time * 0.5);
            const v = @sin(fx * 0.5 + time) + @sin((fy * 0.5 + time) * 0.8 + phase) +
                @sin((fx + fy) * 0.35 + time * 1.3) + @sin(@sqrt(cx * cx + cy * cy) * 0.6 - time);
            const hue: u8 = @intFromFloat(@mod((v + 4.0) * 32.0 + time * 20.0, 256.0));
            f.set(x, y, edged.hsv(hue, 255, 255));
        }
    }
    return f.send();
}
