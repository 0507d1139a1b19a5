//! button_modes: a push button cycles the display through four modes: solid colour, breathing, rainbow and
//! sparkle. Each press moves to the next mode; dots in the top-left corner show which mode is on.
//! The button is watched through edged_gpio_watch and its presses arrive as `on_gpio` edge events.
//! Config: pin (BCM pin of the button, default 17; the manifest's gpio.events must grant it), press_edge
//! ("falling" for a button wired to GND with a pull-up, the usual way, or "rising"; default "falling"),
//! color (#rrggbb for the solid and breathing modes, default #ff5000), seed (sparkle's PRNG seed, default 1).
const edged = @import("edged");

const modes = 4;

var ready = false;
var pin: i32 = 17;
var press_rising = false;
var color: edged.Rgb = .{ .r = 255, .g = 80, .b = 0 };
var rng: edged.Rng = edged.Rng.init(1);
var mode: u32 = 0;

fn setup() void {
    pin = @intCast(edged.configInt("pin", 17));
    var buf: [16]u8 = undefined;
    if (edged.config("press_edge", &buf)) |edge| press_rising = edge.len == 6 and edge[0] == 'r';
    color = edged.configColor("color", color);
    rng = edged.Rng.init(@truncate(@as(u64, @bitCast(edged.configInt("seed", 1)))));
    edged.gpioWatch(pin, .both);
    ready = true;
}

export fn on_gpio() i32 {
    const ev = edged.gpioEvent();
    if (ev.pin == pin and ev.rising == press_rising) mode = (mode + 1) % modes;
    return 0;
}

fn scale(c: edged.Rgb, level: u32) edged.Rgb {
    return .{
        .r = @intCast(@as(u32, c.r) * level / 255),
        .g = @intCast(@as(u32, c.g) * level / 255),
        .b = @intCast(@as(u32, c.b) * level / 255),
    };
}

export fn frame() i32 {
    if (!ready) setup();
    const t = edged.tick();
    var f = edged.Frame.begin(t);
    const ms: u64 = t.time_us / 1000;
    switch (mode) {
        0 => f.fill(color),
        1 => {
            // a triangle wave with a 2 s period, never fully dark
            const phase: u32 = @intCast(ms % 2000);
            const level: u32 = 40 + (if (phase < 1000) phase else 2000 - phase) * 215 / 1000;
            f.fill(scale(color, level));
        },
        2 => {
            var y: i32 = 0;
            while (y < f.height) : (y += 1) {
                var x: i32 = 0;
                while (x < f.width) : (x += 1) {
                    const hue: u8 = @truncate(@as(u64, @intCast(@divTrunc(x * 256, @max(f.width, 1)))) + ms / 8);
                    f.set(x, y, edged.hsv(hue, 255, 200));
                }
            }
        },
        else => {
            const n = @max(1, @as(u32, f.width) * f.height / 16);
            for (0..n) |_| {
                const x: i32 = @intCast(rng.below(f.width));
                const y: i32 = @intCast(rng.below(f.height));
                f.set(x, y, edged.hsv(@truncate(rng.next()), 80, 255));
            }
        },
    }
    // mode indicator: mode+1 white dots along the top-left edge, on a black strip
    var i: i32 = 0;
    while (i < modes * 2) : (i += 1) f.set(i, 0, .{});
    i = 0;
    while (i <= mode) : (i += 1) f.set(i * 2, 0, .{ .r = 255, .g = 255, .b = 255 });
    return f.send();
}
