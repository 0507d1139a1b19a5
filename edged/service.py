"""The composition root of ``edged run``: one object that starts the device's parts in order and stops them in
reverse.

The parts, in start order: signal handlers (SIGTERM/SIGINT stop, SIGHUP reloads), the hardware, the daemon and its
frame threads, the MQTT deploy agent with its deploy target (with ``[mqtt]``), the web page and Home Assistant
bridge, the control socket, and systemd's notifications. Each step is logged as it starts and stops. When a step
fails to start, the steps already started are stopped, last first, and :class:`ServiceStartError` says which step
failed; stopping is idempotent. The CLI (:mod:`edged.cli.run`) only parses arguments, builds the config, runs this
and turns errors into exit codes.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from .daemon.config import DaemonConfig
from .daemon.control import ControlServer
from .daemon.daemon import Daemon
from .daemon.deploy import DaemonTarget
from .daemon.hardware import DeviceHardware, Renderer
from .daemon.systemd import SdNotify, ServiceHealth, watchdog_interval
from .errors import EdgedError, ServiceStartError
from .fsutil import atomic_write

if TYPE_CHECKING:
    from .deploy.agent import DeviceAgent
    from .web.face import Face

log = logging.getLogger("edged.service")


@dataclass(frozen=True)
class RunOptions:
    """What ``edged run``'s command line adds to the config."""

    #: the config file (None: the embedded default, fitted to the profile's first display)
    config_path: Path | None = None
    emulate: bool = False
    #: a hardware profile (name or path) overriding the config's ``daemon.hardware``
    profile: str | None = None
    frames: int | None = None
    render: Renderer = "headless"
    scenario: str | None = None
    control: bool = True
    http: bool = True
    #: install SIGTERM/SIGINT/SIGHUP handlers (only possible on the main thread)
    signals: bool = True
    #: save each emulated display's last frame here before stopping
    snapshot: Path | None = None
    #: write the final statistics here after stopping
    stats: Path | None = None


@dataclass
class _Step:
    name: str
    start: Callable[[], None]
    stop: Callable[[], None]


class EdgeService:
    """``edged run``'s device: :meth:`start`, then :meth:`wait` until stopped (a signal, ``--frames``, the agent
    dying), then :meth:`stop`. Also a context manager (``with EdgeService(cfg) as s: s.wait()``)."""

    def __init__(self, config: DaemonConfig, options: RunOptions | None = None) -> None:
        self.config = config
        self.options = options or RunOptions()
        #: set to stop: by a signal, or when the deploy agent's worker dies
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.hardware: DeviceHardware | None = None
        self.daemon: Daemon | None = None
        self.agent: DeviceAgent | None = None
        self.target: DaemonTarget | None = None
        self.face: Face | None = None
        self.control: ControlServer | None = None
        self.health: ServiceHealth | None = None
        #: outputs that could not be written at the end (``--snapshot``, ``--stats``), as messages
        self.output_failures: list[str] = []
        self._previous: dict[signal.Signals, Any] = {}
        self._running: list[_Step] = []
        self._steps = [
            _Step("signals", self._start_signals, self._stop_signals),
            _Step("hardware", self._start_hardware, self._stop_hardware),
            _Step("daemon", self._start_daemon, self._stop_daemon),
            _Step("deploy agent", self._start_agent, self._stop_agent),
            _Step("web", self._start_face, self._stop_face),
            _Step("control socket", self._start_control, self._stop_control),
            _Step("systemd", self._start_systemd, self._stop_systemd),
        ]

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every step in order; if one fails, stop those already started (last first) and raise
        :class:`ServiceStartError`."""
        for step in self._steps:
            log.info("starting %s", step.name, extra={"step": step.name})
            try:
                step.start()
            except (EdgedError, OSError) as exc:
                # the caller reports the error (edged run prints one line): here only what happens next
                log.info("%s did not start; stopping what started", step.name, extra={"step": step.name})
                self.stop()
                if isinstance(exc, ServiceStartError):
                    raise
                raise ServiceStartError(step.name, str(exc)) from exc
            self._running.append(step)

    def wait(self) -> None:
        """Run until :attr:`stop_requested` is set or every display finished its ``frames``; SIGHUP reloads here.
        Then save the ``snapshot``, if asked for (before stopping blanks the LEDs)."""
        assert self.daemon is not None, "start() first"
        daemon = self.daemon

        def poll() -> None:
            if self.health is not None:
                self.health.poll()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                log.warning("SIGHUP: reloading", extra={"report": daemon.reload()})

        daemon.wait(self.stop_requested, poll)
        if self.options.snapshot is not None:
            try:
                self._snapshot(self.options.snapshot)
            except OSError as exc:  # the folder went away while running, or the disk is full
                self.output_failures.append(f"--snapshot {self.options.snapshot}: {exc.strerror or exc}")

    def stop(self) -> None:
        """Stop what was started, last first, then write the final statistics. Idempotent."""
        while self._running:
            step = self._running.pop()
            log.info("stopping %s", step.name, extra={"step": step.name})
            try:
                step.stop()
            except Exception:  # one part that fails to stop must not keep the others (the LEDs) running
                log.exception("%s did not stop cleanly", step.name, extra={"step": step.name})
        if self.daemon is not None and self.daemon.started:
            self._write_stats(self.daemon)

    def __enter__(self) -> EdgeService:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def started(self) -> list[str]:
        """The steps that run now, in start order (what :meth:`stop` undoes, last first)."""
        return [step.name for step in self._running]

    @property
    def agent_died(self) -> bool:
        """True when the deploy agent's worker died (``edged run`` exits non-zero)."""
        return self.agent is not None and self.agent.dead.is_set()

    # --- the steps ---------------------------------------------------------------------------------------------

    def _start_signals(self) -> None:
        if not self.options.signals:
            return

        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("stopping on %s", signal.Signals(signum).name)
            self.stop_requested.set()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            self.reload_requested.set()

        for s in (signal.SIGTERM, signal.SIGINT):
            self._previous[s] = signal.signal(s, on_stop)
        self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)

    def _stop_signals(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _start_hardware(self) -> None:
        o = self.options
        try:
            self.hardware = DeviceHardware(
                o.profile or self.config.daemon.hardware, emulate=o.emulate, renderer=o.render, scenario=o.scenario
            )
        except EdgedError as exc:
            where = "--profile" if o.profile else f"{o.config_path or 'the default config'}: daemon.hardware"
            raise ServiceStartError("hardware", f"{where}: {exc}") from exc
        if o.config_path is None:
            self.config = _fit_default(self.config, self.hardware)

    def _stop_hardware(self) -> None:
        if self.hardware is not None and (self.daemon is None or not self.daemon.started):
            self.hardware.close()  # a daemon that started closes it itself

    def _start_daemon(self) -> None:
        assert self.hardware is not None
        cfg = self.config
        daemon = self.daemon = Daemon(
            cfg, self.hardware, config_path=self.options.config_path, frames=self.options.frames
        )
        notify = SdNotify()
        if notify.enabled:  # a Type=notify service: READY once started and drawing, watchdog pings while frames flow
            self.health = ServiceHealth(
                daemon,
                notify,
                mqtt_connected=(lambda: self.agent is not None and self.agent.connected.is_set()) if cfg.mqtt else None,
                watchdog_s=watchdog_interval(),
            )
            daemon.on_frame = self.health.frame
        http = self.options.http and cfg.http.enabled
        if http or (cfg.mqtt is not None and cfg.mqtt.home_assistant.enabled):
            # before the frame threads start: importing FastAPI and building the app would hold the GIL for a while
            from .web.face import Face

            self.face = Face(daemon, cfg, http=http)
        try:
            daemon.start()
        except BaseException:
            daemon.stop()  # what it built, and the hardware
            raise

    def _stop_daemon(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()

    def _start_agent(self) -> None:
        """The MQTT deploy agent, deploying into the daemon (it reconnects by itself). If its worker dies, the
        service stops, and ``edged run`` exits non-zero rather than run on without an agent."""
        m = self.config.mqtt
        if m is None:
            return
        from .deploy.agent import DeviceAgent
        from .deploy.store import PluginStore
        from .deploy.trust import TrustStore

        assert self.daemon is not None
        cfg = self.config
        try:
            self.target = DaemonTarget(self.daemon, cfg.state_dir)
            agent = DeviceAgent(
                m.device_id,
                m.broker,
                PluginStore(m.store or cfg.state_dir / "store", keep=m.keep_versions),
                TrustStore.from_file(m.trust),
                self.target,
                cfg.policy,
                m.groups,
                chunk_size=m.chunk_size,
                health_frames=m.health_frames,
                health_timeout_s=m.health_timeout_s,
                state_dir=cfg.state_dir,
                on_fatal=lambda exc: self.stop_requested.set(),
            )
            agent.start()
        except (EdgedError, OSError) as exc:
            if self.target is not None:
                self.target.close()
            raise ServiceStartError("deploy agent", f"mqtt: {exc}") from exc
        self.agent = agent
        connection = agent.connection
        self.daemon.mqtt_state = lambda: connection.state.as_dict()

    def _stop_agent(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        if self.target is not None:
            self.target.close()

    def _start_face(self) -> None:
        if self.face is not None:
            self.face.agent = self.agent
            self.face.start()

    def _stop_face(self) -> None:
        if self.face is not None:
            self.face.close()

    def _start_control(self) -> None:
        if not self.options.control:
            return
        assert self.daemon is not None
        path = self.config.control_socket
        try:
            self.control = ControlServer(self.daemon, path, self.face.local if self.face else None)
            self.control.start()
        except OSError as exc:
            raise ServiceStartError("control socket", f"control socket {path}: {exc}") from exc

    def _stop_control(self) -> None:
        if self.control is not None:
            self.control.close()

    def _start_systemd(self) -> None:
        """Last: every other part runs, so READY=1 may go out (with the first frame, if none was drawn yet); and
        on the way down STOPPING=1 goes out first."""
        if self.health is not None:
            self.health.service_started()

    def _stop_systemd(self) -> None:
        if self.health is not None:
            self.health.stopping()

    # --- outputs -----------------------------------------------------------------------------------------------

    def _snapshot(self, path: Path) -> None:
        """Save what each emulated display shows now (before stopping blanks it)."""
        from .hardware.backends import EmulatedBackend
        from .hardware.render import emulated_image, save_png

        outputs = self.hardware.outputs if self.hardware is not None else {}
        for name, output in outputs.items():
            if not isinstance(output.backend, EmulatedBackend):
                continue
            image = emulated_image(output.pipeline, output.backend)
            if image is None:
                continue
            target = path if len(outputs) == 1 else path.with_name(f"{path.stem}-{name}{path.suffix}")
            save_png(image, target, scale=1)
            log.info("snapshot saved", extra={"display": name, "path": str(target)})

    def _write_stats(self, daemon: Daemon) -> None:
        stats = daemon.stats()
        if self.options.stats is not None:
            try:
                _write_json(self.options.stats, stats)
            except OSError as exc:
                self.output_failures.append(f"--stats {self.options.stats}: {exc.strerror or exc}")
        try:
            _write_json(self.config.state_dir / "state.json", {"stopped": "clean", "stats": stats})
        except OSError as exc:
            log.warning("could not write state: %s", exc)


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
