"""``edged agent``: run the MQTT deploy agent alone, over an emulated display, until SIGTERM or SIGINT.

For trying deployments and for tests; on a device the agent runs inside ``edged run`` (its ``[mqtt]`` config).
Exit code 0 when stopped, 1 when the agent's worker died, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .exitcodes import ExitCode
from .stopsignals import stop_on_signals

log = logging.getLogger("edged.deploy.agent")


def _chunk_size(text: str) -> int:
    from ..deploy.broker import check_chunk_size
    from ..errors import ConfigError

    try:
        return check_chunk_size(int(text))
    except (ValueError, ConfigError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def register(sub: Any) -> None:
    from ..deploy.broker import DEFAULT_CHUNK_SIZE

    p = sub.add_parser("agent", help="run the deploy agent alone, over an emulated display", description=__doc__)
    p.add_argument("--device", required=True, help="this device's id")
    p.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT", help="default 127.0.0.1:1883")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--store", required=True, type=Path, help="store directory")
    p.add_argument("--trust", required=True, type=Path, help="trust store JSON")
    p.add_argument("--policy", type=Path, help="device policy JSON (default: deny all but LEDs)")
    p.add_argument("--group", action="append", default=[], help="a group this device belongs to (repeatable)")
    p.add_argument("--chunk-size", type=_chunk_size, default=DEFAULT_CHUNK_SIZE, metavar="BYTES")
    p.add_argument("--health-frames", type=int, default=30, metavar="N", help="frames that make a version healthy")
    p.add_argument("--health-timeout", type=float, default=10.0, metavar="S", help="seconds to reach them")
    p.add_argument("--fps", type=float, default=60.0, help="the emulated display's frame rate")
    p.add_argument("--stall", type=float, default=3.0, metavar="S", help="seconds without progress before asking again")
    p.add_argument("--window", type=int, default=16, metavar="N", help="chunks in flight")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, *, checkpoint: Callable[[str], None] | None = None) -> int:
    """Run one agent with an emulated target until SIGTERM/SIGINT (``checkpoint``: the store's crash points, for
    tests)."""
    from ..deploy.agent import DeviceAgent
    from ..deploy.broker import BrokerConfig
    from ..deploy.store import PluginStore
    from ..deploy.target import EmulatedTarget
    from ..deploy.trust import TrustStore
    from ..host.capabilities import DevicePolicy

    host, _, port = args.broker.rpartition(":")
    policy = DevicePolicy.model_validate_json(args.policy.read_text()) if args.policy else DevicePolicy()
    target = EmulatedTarget(fps=args.fps, policy=policy)
    done = threading.Event()
    agent = DeviceAgent(
        args.device,
        BrokerConfig(host=host or "127.0.0.1", port=int(port), username=args.username, password=args.password),
        PluginStore(args.store, checkpoint=checkpoint),
        TrustStore.from_file(args.trust),
        target,
        policy,
        args.group,
        chunk_size=args.chunk_size,
        health_frames=args.health_frames,
        health_timeout_s=args.health_timeout,
        stall_s=args.stall,
        window=args.window,
        on_fatal=lambda exc: done.set(),
    )
    with stop_on_signals(done):  # the previous handlers come back when it returns (in-process callers: tests)
        agent.start()
        done.wait()
    agent.stop()
    target.close()
    if agent.dead.is_set():
        log.critical("exiting: the agent's worker died", extra={"device": args.device})
        return ExitCode.FAILED
    return ExitCode.OK
