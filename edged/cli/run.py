"""``edged run``: drive the displays and plugins of a config until stopped.

Without ``--config`` it runs the embedded default: the bundled demo plugins on an emulated 16×16 matrix. SIGTERM and
SIGINT stop cleanly (LEDs blanked, state flushed); SIGHUP reloads plugins and config without touching displays
whose setup did not change. Exit code 0 after a clean stop, 2 for a config or hardware that cannot start.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..daemon.config import DaemonConfig, load_config
from ..daemon.hardware import Renderer
from ..daemon.systemd import JournalFormatter, under_journal
from ..errors import EdgedError, ServiceStartError
from ..service import EdgeService, RunOptions
from .exitcodes import ExitCode

log = logging.getLogger("edged.run")


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


def run(args: argparse.Namespace) -> int:
    for option, value in (("--stats", args.stats), ("--snapshot", args.snapshot)):
        if (problem := _output_problem(option, value)) is not None:
            print(f"edged run: {problem}", file=sys.stderr)
            return ExitCode.USAGE
    try:
        cfg = load_config(args.config)
    except EdgedError as exc:
        print(f"edged run: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    _configure_logging(cfg, explicit=args.log_level_explicit)
    render: Renderer = args.render or ("terminal" if args.emulate and sys.stdout.isatty() else "headless")
    if render == "terminal" and not args.log_level_explicit and sys.stderr.isatty():
        # info lines on the same terminal would scroll the live picture away
        logging.getLogger("edged").setLevel(logging.WARNING)
    options = RunOptions(
        config_path=Path(args.config) if args.config else None,
        emulate=args.emulate,
        profile=args.profile,
        frames=args.frames,
        render=render,
        scenario=args.scenario,
        control=not args.no_control,
        http=not args.no_http,
        snapshot=Path(args.snapshot) if args.snapshot else None,
        stats=Path(args.stats) if args.stats else None,
    )
    service = EdgeService(cfg, options)
    reported = 0
    json_logs = cfg.logging.format == "json"

    def say(message: str) -> None:
        # with JSON logs, stderr stays one JSON document a line: the message goes through the log instead
        if json_logs:
            log.error(message)
        else:
            print(f"edged run: {message}", file=sys.stderr)

    def report_problems() -> None:  # say them as they come, not only at exit: a typo should not go unnoticed
        nonlocal reported
        problems = service.daemon.problems if service.daemon is not None else []
        if not json_logs:  # JSON logs carry each problem already, as it was recorded
            for problem in problems[reported:]:
                print(f"edged run: {problem.where}: {problem.message}", file=sys.stderr)
        reported = len(problems)

    try:
        service.start()
    except ServiceStartError as exc:
        say(str(exc))
        report_problems()
        return ExitCode.USAGE
    try:
        report_problems()
        service.wait()
    finally:
        service.stop()
    report_problems()
    code: int = ExitCode.OK
    if service.agent_died:
        assert service.agent is not None
        say(f"the deploy agent died ({service.agent.fatal!r}); see the log")
        code = ExitCode.FAILED
    for failure in service.output_failures:
        say(str(failure))
        code = ExitCode.FAILED
    return code
