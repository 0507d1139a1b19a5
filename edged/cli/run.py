"""``edged run``: drive the displays and plugins of a config until stopped.

Without ``--config`` it runs the embedded default: the bundled demo plugins on an emulated 16×16 matrix. SIGTERM and
SIGINT stop cleanly (LEDs blanked, state flushed); SIGHUP reloads plugins and config without touching displays
whose setup did not change. Exit code 0 after a clean stop, 2 for a config or hardware that cannot start.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..daemon.config import DaemonConfig, load_config
from ..daemon.control import ControlServer
from ..daemon.daemon import Daemon
from ..daemon.deploy import DaemonTarget
from ..daemon.hardware import DeviceHardware
from ..daemon.systemd import JournalFormatter, SdNotify, ServiceHealth, under_journal, watchdog_interval
from ..deploy.agent import DeviceAgent
from ..deploy.store import PluginStore
from ..deploy.trust import TrustStore, atomic_write
from ..errors import EdgedError

if TYPE_CHECKING:
    from ..web.face import Face

log = logging.getLogger("edged.daemon")


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the daemon", description=__doc__)
    p.add_argument("--config", metavar="FILE", help="edged.toml (default: the embedded demo config)")
    p.add_argument("--emulate", action="store_true", help="emulated LEDs and mock GPIO; no hardware needed")
    p.add_argument("--profile", metavar="NAME", help="hardware profile (name or path), overriding the config's")
    p.add_argument("--frames", type=int, metavar="N", help="stop after N frames on every display")
    p.add_argument("--stats", metavar="FILE", help="write frame and plugin statistics as JSON on exit")
    p.add_argument(
        "--render",
        choices=["terminal", "headless"],
        help="with --emulate: draw the displays live in this terminal (default when stdout is a terminal)",
    )
    p.add_argument("--scenario", metavar="FILE", help="with --emulate: script the mock inputs (docs/gpio.md)")
    p.add_argument(
        "--snapshot",
        metavar="FILE.png",
        help="with --emulate: on exit, save each display's last frame as a PNG (FILE-DISPLAY.png with several)",
    )
    p.add_argument("--no-control", action="store_true", help="do not open the control socket")
    p.add_argument("--no-http", action="store_true", help="do not serve the web page, HTTP API and /metrics")
    p.set_defaults(handler=run)


def _configure_logging(cfg: DaemonConfig, explicit: bool) -> None:
    if cfg.logging.format == "json":  # whatever the level: --log-level changes how much is said, not how
        from ..daemon.logs import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    elif under_journal(sys.stderr):  # a systemd service: priorities and context the journal keeps
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JournalFormatter())
    if explicit:  # --log-level on the command line wins over the config's levels
        return
    logging.getLogger("edged").setLevel(cfg.logging.level.upper())
    logging.getLogger("edged.plugin").setLevel(cfg.logging.plugin_level.upper())


def _output_problem(option: str, value: str | None) -> str | None:
    """Why ``value`` cannot be written (its folder is missing or not a folder), or None. Checked before the daemon
    starts: a typo must not cost a whole run, nor create folders nobody asked for."""
    if not value:
        return None
    folder = Path(value).expanduser().parent
    if not folder.is_dir():
        return f"{option} {value}: the folder {folder} does not exist"
    if Path(value).is_dir():
        return f"{option} {value}: is a folder; give a file name"
    return None


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically: a reader (or a power cut) sees the old file or the new one, never half of one."""
    atomic_write(path, json.dumps(doc, indent=2, default=str).encode())


def _fit_default(cfg: DaemonConfig, hardware: DeviceHardware) -> DaemonConfig:
    """The embedded demo plays on the profile's first display, whatever the profile names it."""
    names = list(hardware.profile.displays)
    if not names or not cfg.displays or cfg.displays[0].name in names:
        return cfg
    display = cfg.displays[0].model_copy(update={"name": names[0]})
    return cfg.model_copy(update={"displays": [display, *cfg.displays[1:]]})


def _snapshot(hardware: DeviceHardware, path: Path) -> None:
    """Save what each emulated display shows now (before stopping blanks it)."""
    from ..hardware.backends import EmulatedBackend
    from ..hardware.render import emulated_image, save_png

    outputs = hardware.outputs
    for name, output in outputs.items():
        if not isinstance(output.backend, EmulatedBackend):
            continue
        image = emulated_image(output.pipeline, output.backend)
        if image is None:
            continue
        target = path if len(outputs) == 1 else path.with_name(f"{path.stem}-{name}{path.suffix}")
        save_png(image, target, scale=1)
        log.info("snapshot saved", extra={"display": name, "path": str(target)})


def _start_agent(cfg: DaemonConfig, daemon: Daemon, stop: threading.Event) -> DeviceAgent:
    """The MQTT deploy agent, deploying into ``daemon`` (started: it reconnects by itself). If its worker dies,
    ``stop`` is set: the daemon stops and ``edged run`` exits non-zero rather than run on without an agent."""
    m = cfg.mqtt
    assert m is not None
    target = DaemonTarget(daemon, cfg.state_dir)
    agent = DeviceAgent(
        m.device_id,
        m.broker,
        PluginStore(m.store or cfg.state_dir / "store", keep=m.keep_versions),
        TrustStore.from_file(m.trust),
        target,
        cfg.policy,
        m.groups,
        chunk_size=m.chunk_size,
        health_frames=m.health_frames,
        health_timeout_s=m.health_timeout_s,
        state_dir=cfg.state_dir,
        on_fatal=lambda exc: stop.set(),
    )
    agent.start()
    return agent


def run(args: argparse.Namespace) -> int:
    for option, value in (("--stats", args.stats), ("--snapshot", args.snapshot)):
        if (problem := _output_problem(option, value)) is not None:
            print(f"edged run: {problem}", file=sys.stderr)
            return 2
    try:
        cfg = load_config(args.config)
    except EdgedError as exc:
        print(f"edged run: {exc}", file=sys.stderr)
        return 2
    _configure_logging(cfg, explicit=args.log_level_explicit)
    render = args.render or ("terminal" if args.emulate and sys.stdout.isatty() else "headless")
    if render == "terminal" and not args.log_level_explicit and sys.stderr.isatty():
        # info lines on the same terminal would scroll the live picture away
        logging.getLogger("edged").setLevel(logging.WARNING)
    try:
        hardware = DeviceHardware(
            args.profile or cfg.daemon.hardware, emulate=args.emulate, renderer=render, scenario=args.scenario
        )
    except EdgedError as exc:
        where = "--profile" if args.profile else f"{args.config or 'the default config'}: daemon.hardware"
        print(f"edged run: {where}: {exc}", file=sys.stderr)
        return 2
    if args.config is None:
        cfg = _fit_default(cfg, hardware)
    daemon = Daemon(cfg, hardware, config_path=Path(args.config) if args.config else None, frames=args.frames)
    agent: DeviceAgent | None = None
    health: ServiceHealth | None = None
    notify = SdNotify()
    if notify.enabled:  # a Type=notify service: READY after the first frame, watchdog pings from the frame path
        health = ServiceHealth(
            daemon,
            notify,
            mqtt_connected=(lambda: agent is not None and agent.connected.is_set()) if cfg.mqtt else None,
            watchdog_s=watchdog_interval(),
        )
        daemon.on_frame = health.frame

    stop = threading.Event()
    reload_requested = threading.Event()

    def on_stop(signum: int, _frame: object) -> None:
        log.info("stopping on %s", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: object) -> None:
        reload_requested.set()

    previous = {s: signal.signal(s, on_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)

    def poll() -> None:
        if health is not None:
            health.poll()
        if reload_requested.is_set():
            reload_requested.clear()
            log.warning("SIGHUP: reloading", extra={"report": daemon.reload()})

    control: ControlServer | None = None
    face: Face | None = None
    reported = 0
    failed_output: str | None = None
    if (not args.no_http and cfg.http.enabled) or (cfg.mqtt is not None and cfg.mqtt.home_assistant.enabled):
        # before the frame threads start: importing FastAPI and building the app would hold the GIL for a while
        from ..web.face import Face

        face = Face(daemon, cfg, http=not args.no_http and cfg.http.enabled)
    try:
        try:
            daemon.start()
        except EdgedError as exc:
            print(f"edged run: {exc}", file=sys.stderr)
            return 2
        reported = len(daemon.problems)
        for problem in daemon.problems:  # say it now, not only at exit: a typo should not go unnoticed
            print(f"edged run: {problem.where}: {problem.message}", file=sys.stderr)
        if cfg.mqtt is not None:
            try:
                agent = _start_agent(cfg, daemon, stop)
            except (EdgedError, OSError) as exc:
                print(f"edged run: mqtt: {exc}", file=sys.stderr)
                return 2
            connection = agent.connection
            daemon.mqtt_state = lambda: connection.state.as_dict()
        if face is not None:
            face.agent = agent
            face.start()
            for problem in daemon.problems[reported:]:
                print(f"edged run: {problem.where}: {problem.message}", file=sys.stderr)
            reported = len(daemon.problems)
        if not args.no_control:
            try:
                control = ControlServer(daemon, cfg.control_socket, face.local if face else None)
                control.start()
            except OSError as exc:
                print(f"edged run: control socket {cfg.control_socket}: {exc}", file=sys.stderr)
                return 2
        daemon.wait(stop, poll)
        if args.snapshot:
            try:
                _snapshot(hardware, Path(args.snapshot))
            except OSError as exc:  # the folder went away while running, or the disk is full
                failed_output = f"--snapshot {args.snapshot}: {exc.strerror or exc}"
    finally:
        if health is not None:
            health.stopping()
        if face is not None:
            face.close()
        if agent is not None:
            agent.stop()
            target = agent.target
            if isinstance(target, DaemonTarget):
                target.close()
        if control is not None:
            control.close()
        daemon.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        stats = daemon.stats()
        if args.stats:
            try:
                _write_json(Path(args.stats), stats)
            except OSError as exc:
                failed_output = f"--stats {args.stats}: {exc.strerror or exc}"
        try:
            _write_json(cfg.state_dir / "state.json", {"stopped": "clean", "stats": stats})
        except OSError as exc:
            log.warning("could not write state: %s", exc)
    for problem in daemon.problems[reported:]:
        print(f"edged run: {problem.where}: {problem.message}", file=sys.stderr)
    code = 0
    if agent is not None and agent.dead.is_set():
        print(f"edged run: the deploy agent died ({agent.fatal!r}); see the log", file=sys.stderr)
        code = 1
    if failed_output is not None:
        print(f"edged run: {failed_output}", file=sys.stderr)
        code = 1
    return code
