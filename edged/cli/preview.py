"""``edged preview PLUGIN``: render an animation plugin in emulation, as a GIF, a PNG or live in the terminal.

Frames go through the same pixel pipeline as on a device (with ``--profile``, that profile's display model:
wiring, brightness, gamma, current limiter) into the emulated backend, and the renderers show what the LEDs would.
For ``--gif`` and ``--png`` time is simulated: frames are computed as fast as possible on a grid of 1/fps seconds.
``--terminal`` (the default on a terminal) plays live at ``--fps``, fitted to the terminal's size; with stdout not a
terminal, give ``--gif`` or ``--png``. ``--serve`` plays it live in the browser on the daemon's page
(http://127.0.0.1:8081/, ``--port``), reloading it whenever its files change (a rebuilt ``.wasm``). A profile with
``[gpio]`` or ``[sensors]`` gives the plugin an emulated board (gpiozero's MockFactory) with exactly those pins and
sensors granted, and ``--scenario`` scripts it (button presses, sensor curves) on the frames' time. Exit code 0 on
success, 1 when the plugin fails (message on stderr), 2 for bad usage or a plugin that cannot load.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..bundled import bundled_dir
from ..daemon.plugins import plugin_in_folder
from ..errors import ConfigError, PluginError, PluginLoadError, UsageError
from ..hardware.backends import EmulatedBackend
from ..hardware.geometry import DisplayConfig
from ..hardware.gpio import GpioBoard
from ..hardware.output import LedOutput
from ..hardware.profile import HardwareProfile, load_profile
from ..hardware.render import TerminalRenderer, emulated_image, save_gif, save_png
from ..hardware.scenario import ScenarioPlayer, load_scenario
from ..host.capabilities import DevicePolicy
from ..host.frames import Tick
from ..host.functions import DisplayInfo
from ..host.plugin import DevicePlugin
from .exitcodes import ExitCode

#: A frame that takes longer than this in a preview has hung: the preview stops with an error instead of waiting.
DEFAULT_FRAME_TIMEOUT_MS = 1000

log = logging.getLogger("edged.cli")

#: show a progress bar for --gif/--png from this many frames on
PROGRESS_FROM = 200


def register(sub: Any) -> None:
    p = sub.add_parser("preview", help="render a plugin in emulation (GIF, PNG or terminal)", description=__doc__)
    p.add_argument(
        "plugin",
        help="a .wasm file, a manifest .json, a plugin folder or a shipped demo plugin's name (fire, plasma, ...)",
    )
    p.add_argument("--frames", "-n", type=int, default=60, metavar="N", help="frames to render (default 60)")
    p.add_argument("--fps", type=float, default=30.0, metavar="F", help="frame rate (default 30)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--gif", metavar="OUT", help="write an animated GIF of the frames")
    out.add_argument("--png", metavar="OUT", help="write a PNG of the last frame")
    out.add_argument(
        "--terminal",
        action="store_true",
        help="play live in the terminal, fitted to its size (the default when stdout is a terminal)",
    )
    out.add_argument("--serve", action="store_true", help="play live in the browser, reloading when rebuilt")
    p.add_argument("--port", type=int, default=8081, metavar="N", help="with --serve: the port (default 8081)")
    p.add_argument("--size", metavar="WxH", help="display size (default 16x16, or the profile's)")
    p.add_argument("--profile", metavar="NAME", help="use a hardware profile's display model (NAME or NAME:DISPLAY)")
    p.add_argument("--scenario", metavar="FILE", help="emulation scenario (needs a --profile with [gpio]/[sensors])")
    p.add_argument("--config", "-c", metavar="K=V", action="append", default=[], help="config key (repeatable)")
    p.add_argument("--seed", type=int, metavar="S", help="passed to the plugin as config key 'seed'")
    p.add_argument("--scale", type=int, default=None, metavar="N", help="pixels per LED in images (default 16)")
    p.add_argument("--dots", action="store_true", help="draw LEDs as round dots in images")
    p.add_argument("--fuel", type=int, metavar="N", help="fuel limit per frame")
    p.add_argument(
        "--timeout-ms",
        type=int,
        metavar="N",
        default=DEFAULT_FRAME_TIMEOUT_MS,
        help=f"wall-clock limit per frame (default {DEFAULT_FRAME_TIMEOUT_MS}): a plugin that loops fails, never hangs",
    )
    p.set_defaults(handler=run)


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1 or int(w) * int(h) > 65536:
        raise UsageError(f"--size expects WxH with positive sizes (at most 65536 LEDs), got {text!r}")
    return int(w), int(h)


def _display(args: argparse.Namespace) -> tuple[DisplayConfig, HardwareProfile | None]:
    if args.profile:
        name, _, which = args.profile.partition(":")
        profile = load_profile(name)
        if not profile.displays:
            raise UsageError(f"profile {profile.name!r} has no displays")
        if which and which not in profile.displays:
            raise UsageError(f"profile {profile.name!r} has no display {which!r} (has: {', '.join(profile.displays)})")
        display = profile.displays[which or next(iter(profile.displays))].display
        if args.size:
            w, h = _size(args.size)
            display = DisplayConfig.model_validate({**display.model_dump(), "width": w, "height": h})
        return display, profile
    w, h = _size(args.size or "16x16")
    return DisplayConfig(width=w, height=h, color_order="RGB"), None


def _policy(profile: HardwareProfile | None) -> DevicePolicy:
    """Drawing and WASI; with a profile, also exactly its GPIO devices (by direction) and sensors."""
    if profile is None:
        return DevicePolicy(wasi=True)
    devices = profile.gpio.values()
    return DevicePolicy(
        gpio_read=sorted(d.pin for d in devices if d.type != "pwm_out"),
        gpio_write=sorted(d.pin for d in devices if d.type == "digital_out"),
        gpio_pwm=sorted(d.pin for d in devices if d.type == "pwm_out"),
        gpio_events=sorted(d.pin for d in devices if d.type in ("digital_in", "button")),
        sensors=sorted(profile.sensors),
        reserved_pins=sorted(profile.led_pins()),
        wasi=True,
    )


def _config(args: argparse.Namespace) -> dict[str, str]:
    config: dict[str, str] = {}
    for item in args.config:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--config expects K=V, got {item!r}")
        config[key] = value
    if args.seed is not None:
        config["seed"] = str(args.seed)
    return config


def _source(plugin: str) -> str:
    """The plugin to load: the path given, or for a plugin folder the manifest or wasm the daemon would pick; a bare
    name that is no file (``fire``) is one of the demo plugins edged ships."""
    path = Path(plugin)
    if not path.exists() and len(path.parts) == 1 and (bundled_dir("plugins") / plugin).is_dir():
        path = bundled_dir("plugins") / plugin
    if not path.is_dir():
        return plugin
    found = plugin_in_folder(path.resolve())
    if found is None:
        name = path.resolve().name
        raise UsageError(
            f"no plugin in the folder {plugin}: expected {name}.manifest.json, manifest.json or {name}.wasm"
        )
    return str(found)


def _check_args(args: argparse.Namespace) -> None:
    if args.fps <= 0 or args.fps > 1000:
        raise UsageError("--fps must be above 0 and at most 1000")
    if args.frames < 0 or (args.frames == 0 and not _live(args)):
        raise UsageError("--frames must be at least 1 (0 plays forever, only with --terminal)")
    if args.scale is not None and not 1 <= args.scale <= 64:
        raise UsageError("--scale must be between 1 and 64")
    if _live(args) and not args.terminal and not sys.stdout.isatty():
        # the live view is escape codes for a terminal: into a file or a pipe they are garbage
        raise UsageError("stdout is not a terminal: pass --gif OUT or --png OUT (or --terminal to write it anyway)")
    for option, value in (("--gif", args.gif), ("--png", args.png)):
        if value:  # before rendering: a typo in the folder must not cost the whole render
            folder = Path(value).expanduser().parent
            if not folder.is_dir():
                raise UsageError(f"{option} {value}: the folder {folder} does not exist")
            if Path(value).is_dir():
                raise UsageError(f"{option} {value}: is a folder; give a file name")


def _live(args: argparse.Namespace) -> bool:
    return not (args.gif or args.png)


def _serve(args: argparse.Namespace) -> int:
    import threading

    from ..web.preview import PreviewServer, serve
    from .stopsignals import stop_on_signals

    try:
        display, profile = _display(args)
        server = PreviewServer(
            Path(_source(args.plugin)),
            display,
            fps=args.fps,
            policy=_policy(profile),
            config=_config(args),
            port=args.port,
            profile=profile,
        )
    except (UsageError, ConfigError, OSError, ValueError) as exc:
        print(f"edged preview: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    stop = threading.Event()
    # our own handlers, as `edged run` has: SIGTERM stops it too, and so does Ctrl-C when the parent started it with
    # SIGINT ignored (Python then installs no KeyboardInterrupt handler and the server would never stop); the
    # previous ones come back when it returns
    try:
        with stop_on_signals(stop):
            return serve(server, sys.stderr, stop)
    except OSError as exc:
        print(f"edged preview: cannot serve on port {args.port}: {exc.strerror or exc} (try --port)", file=sys.stderr)
        return ExitCode.USAGE


def run(args: argparse.Namespace) -> int:
    if args.serve:
        return _serve(args)
    with contextlib.ExitStack() as stack:
        try:
            _check_args(args)
            display, profile = _display(args)
            config = _config(args)
            board = None
            if profile is not None and (profile.gpio or profile.sensors):
                board = stack.enter_context(GpioBoard(profile.gpio_config(), emulated=True))
            if args.scenario and board is None:
                raise UsageError("--scenario needs a --profile with [gpio] or [sensors] to drive")
            scenario = load_scenario(args.scenario, config=board.config) if args.scenario and board else None
            # plugins draw in logical pixels; the pipeline maps serpentine wiring, so (as in the daemon) the
            # Matricks key `serpentine` is always "false"
            info = DisplayInfo(display.width, display.height, args.fps, False, display.brightness)
            plugin = stack.enter_context(
                DevicePlugin(
                    _source(args.plugin),
                    policy=_policy(profile),
                    io=board,
                    display=info,
                    config=config,
                    fuel=args.fuel,
                    timeout_ms=args.timeout_ms,
                )
            )
        except (UsageError, ConfigError, PluginLoadError, OSError) as exc:
            print(f"edged preview: {exc}", file=sys.stderr)
            return ExitCode.USAGE
        except PluginError as exc:  # a capability the preview cannot grant
            print(f"edged preview: {exc}", file=sys.stderr)
            return ExitCode.USAGE
        if plugin.kind not in ("animation", "matricks"):
            print(f"edged preview: {plugin.name} is a {plugin.kind} plugin; it does not draw frames", file=sys.stderr)
            return ExitCode.USAGE
        # scripted edges are stamped on the plugin's own time line, so on_gpio sees the scenario's times
        player = ScenarioPlayer(scenario, board, start=plugin.ctx.started) if scenario and board else None
        backend = EmulatedBackend(history=2)
        output = stack.enter_context(LedOutput(display, backend))
        try:
            if _live(args):
                return _play(args, plugin, output, backend, player)
            return _render(args, plugin, output, backend, player)
        except PluginError as exc:
            print(f"edged preview: {plugin.name}: {exc}", file=sys.stderr)
            return ExitCode.FAILED


def _frames(
    args: argparse.Namespace,
    plugin: DevicePlugin,
    output: LedOutput,
    backend: EmulatedBackend,
    player: ScenarioPlayer | None,
) -> Any:
    """Yield the emulated image of each frame the plugin draws, on a simulated 1/fps grid (the scenario, if any,
    advanced to each frame's time first)."""
    w, h = output.display.width, output.display.height
    dt = round(1e6 / args.fps)
    i = 0
    while args.frames == 0 or i < args.frames:
        if player is not None:
            player.advance(i * dt / 1e6)
        frame = plugin.frame(Tick(i, i * dt, 0 if i == 0 else dt, w, h, i == 0))
        if frame is None:
            log.info("plugin finished", extra={"plugin": plugin.name, "frames": i})
            return
        output.show(frame)
        image = emulated_image(output.pipeline, backend)
        assert image is not None
        yield image
        i += 1


def _render(
    args: argparse.Namespace,
    plugin: DevicePlugin,
    output: LedOutput,
    backend: EmulatedBackend,
    player: ScenarioPlayer | None,
) -> int:
    scale = args.scale or 16
    bar = tqdm(total=args.frames, file=sys.stderr, unit="frame", disable=args.frames < PROGRESS_FROM, leave=False)
    images: list[np.ndarray] = []
    with bar:
        for image in _frames(args, plugin, output, backend, player):
            if args.gif:
                images.append(image)
            else:
                images[:] = [image]
            bar.update()
    if not images:
        print(f"edged preview: {plugin.name} drew no frames", file=sys.stderr)
        return ExitCode.FAILED
    out = Path(args.gif or args.png)
    try:
        if args.gif:
            save_gif(images, out, args.fps, scale, args.dots)
        else:
            save_png(images[-1], out, scale, args.dots)
    except OSError as exc:
        print(f"edged preview: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def _play(
    args: argparse.Namespace,
    plugin: DevicePlugin,
    output: LedOutput,
    backend: EmulatedBackend,
    player: ScenarioPlayer | None,
) -> int:
    renderer = TerminalRenderer(sys.stdout, args.scale or 1, title=f"{plugin.name} at {args.fps:g} fps")
    period = 1.0 / args.fps
    next_at = time.monotonic()
    try:
        for image in _frames(args, plugin, output, backend, player):
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            renderer.draw(image)
            next_at = max(next_at + period, time.monotonic() - period)  # drop the backlog after a stall
    except KeyboardInterrupt:
        pass
    finally:
        renderer.close()
    if renderer.frames == 0:
        print(f"edged preview: {plugin.name} drew no frames", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK
