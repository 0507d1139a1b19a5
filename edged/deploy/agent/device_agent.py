"""The device agent: reconciles this device toward the marketplace's desired state over MQTT.

It owns the MQTT session and the worker thread, and coordinates the parts: :mod:`.desired` (documents merged into
what is wanted), :mod:`.state` (what survives a restart), :mod:`.install` (the install state machine and its
:mod:`.download`), :mod:`.commands` and :mod:`.reporting`. All MQTT input is untrusted: a bad message gets an error
status and changes nothing. Network callbacks only enqueue; one worker thread does all the work, so the store and
the target see one caller.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from ...errors import EdgedError, MessageRejected, StoreError
from ...host.capabilities import DevicePolicy
from .. import topics
from ..broker import DEFAULT_CHUNK_SIZE, BrokerConfig, check_chunk_size, make_client
from ..connection import ConnectionTracker, MqttState
from ..inbox import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES, Inbox, InboxStats, ReconnectBackoff
from ..messages import Presence
from ..store import PluginStore
from ..target import DeployTarget
from ..trust import TrustStore
from .commands import Commands, open_nonces
from .desired import DEVICE, DesiredStates, Source, read_desired, short
from .install import DOWNLOAD_TIMEOUT_S, Installer, InstallSettings
from .reporting import Reporter
from .state import AgentState, Attempt

log = logging.getLogger("edged.deploy.agent")

#: QoS-1 messages the MQTT client may hold (unsent, or sent and not yet acknowledged by the broker). A broker that
#: withholds PUBACKs would otherwise make the agent's memory grow with every status it sends; beyond this bound a
#: publish is dropped and counted (``out_dropped``) and the retained reported state is sent again later.
MAX_QUEUED_OUT = 1000

#: at most this often the agent subscribes again to desired-state topics whose messages its full queue dropped
RESUBSCRIBE_S = 5.0


def _kind_of(topic: str) -> str:
    """``desired``, ``cmd``, ``chunks`` or ``other``: what the inbox counts drops by."""
    leaf = topic.rsplit("/", 1)[-1]
    return leaf if leaf in ("desired", "cmd", "chunks") else "other"


class DeviceAgent:
    """One device's deployment agent. ``start()`` connects and returns; ``stop()`` disconnects and joins.

    ``health_frames`` frames without a strike within ``health_timeout_s`` seconds make a new version healthy;
    anything else rolls it back. ``window`` chunks are in flight at a time; a transfer that makes no progress for
    ``stall_s`` seconds asks again for what is missing (this is also how it resumes after a broker restart); after
    ``max_stalls`` such requests in a row without a chunk arriving (while connected) it fails as ``missing_chunk``.
    A chunk whose sha256 does not match is asked for again, up to ``chunk_retries`` times, then the install fails as
    ``hash_mismatch``. Only a chunk not stored yet counts as progress, and a download not done ``download_timeout_s``
    after it started fails as ``download_timeout``. ``chunk_size`` is at most
    :data:`~edged.deploy.broker.MAX_CHUNK_SIZE`. These live on in :attr:`settings`.

    Inbound messages wait in a queue bounded by ``inbox_messages`` and ``inbox_bytes`` (see
    :class:`~edged.deploy.inbox.Inbox` for what is dropped). If the worker thread ever dies, the agent says so in a
    critical log line, publishes its presence ``offline``, disconnects and calls ``on_fatal`` (``edged run`` and
    ``edged agent`` then exit non-zero), so a device never looks healthy with a dead agent.
    """

    def __init__(
        self,
        device_id: str,
        broker: BrokerConfig,
        store: PluginStore,
        trust: TrustStore,
        target: DeployTarget,
        policy: DevicePolicy | None = None,
        groups: Sequence[str] = (),
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        window: int = 16,
        health_frames: int = 30,
        health_timeout_s: float = 10.0,
        max_bundle_size: int = 16 * 1024 * 1024,
        stall_s: float = 3.0,
        max_stalls: int = 10,
        chunk_retries: int = 3,
        download_timeout_s: float = DOWNLOAD_TIMEOUT_S,
        state_dir: Path | None = None,
        inbox_messages: int = DEFAULT_MAX_MESSAGES,
        inbox_bytes: int = DEFAULT_MAX_BYTES,
        on_fatal: Callable[[BaseException], None] | None = None,
        backoff: ReconnectBackoff | None = None,
    ) -> None:
        self.device_id = topics.check_id(device_id)
        self.groups = [topics.check_id(g, "group id") for g in groups]
        self.broker = broker
        self.store = store
        self.trust = trust
        self.settings = InstallSettings(
            chunk_size=check_chunk_size(chunk_size),
            window=window,
            health_frames=health_frames,
            health_timeout_s=health_timeout_s,
            max_bundle_size=max_bundle_size,
            stall_s=stall_s,
            max_stalls=max_stalls,
            chunk_retries=chunk_retries,
            download_timeout_s=download_timeout_s,
        )
        state_dir = state_dir or Path(store.root)
        self.inbox = Inbox(inbox_messages, inbox_bytes)
        self._on_fatal = on_fatal
        self.backoff = backoff or ReconnectBackoff()
        #: set when the worker thread died (the exception that killed it is in ``fatal``)
        self.dead = threading.Event()
        self.fatal: BaseException | None = None
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.connected = threading.Event()
        #: the broker connection's state, logged on every change (see :attr:`mqtt_state`)
        self.connection = ConnectionTracker(log, broker.host, broker.port, device=self.device_id)
        self.bytes_in = 0
        self.desired = DesiredStates()
        #: the playlist tried last (applied or not)
        self._playlist_tried: list[str] | None = None
        self._next_resubscribe = 0.0
        #: desired-state topics whose document could not be recorded (a full disk): subscribed again later
        self._retry_desired: set[str] = set()
        self.state = AgentState(state_dir / "agent-state.json", store, self.device_id)
        self.state.load()
        self.client = self._make_client()
        self.reports = Reporter(
            self.client,
            self.device_id,
            self.groups,
            running=lambda: self.installer.running_versions(),
            in_progress=lambda: self.installer.in_progress(),
            applied=lambda: {s.key: seq for s, seq in self.state.applied.items()},
        )
        self.installer = Installer(
            self.device_id,
            store,
            trust,
            target,
            policy or DevicePolicy(),
            self.state,
            self.reports,
            self.settings,
            self.connected.is_set,
        )
        self.commands = Commands(
            self.device_id, self.groups, trust, open_nonces(state_dir), self.installer, self.desired.wanted
        )

    # --- what others read --------------------------------------------------------------------------------------

    @property
    def target(self) -> DeployTarget:
        """Where plugins run."""
        return self.installer.target

    @target.setter
    def target(self, target: DeployTarget) -> None:
        self.installer.target = target

    @property
    def policy(self) -> DevicePolicy:
        """What a plugin's manifest may ask for on this device."""
        return self.installer.policy

    @policy.setter
    def policy(self, policy: DevicePolicy) -> None:
        self.installer.policy = policy

    @property
    def errors(self) -> int:
        """Errors reported: refused messages, failed checks, internal errors."""
        return self.reports.errors

    @property
    def bytes_out(self) -> int:
        return self.reports.bytes_out

    @property
    def outcomes(self) -> dict[tuple[str, str], int]:
        """Installs and rejected messages by outcome: (state, reason) -> count (``/metrics``)."""
        return self.reports.outcomes

    @property
    def out_dropped(self) -> int:
        """Publishes dropped because the MQTT client's outgoing queue was full (``MAX_QUEUED_OUT``)."""
        return self.reports.out_dropped

    @property
    def mqtt_state(self) -> MqttState:
        """The broker connection now: ``connecting``, ``connected``, ``disconnected``, ``unreachable``, ``refused``
        (with the broker's reason) or ``stopped``, since when, and why."""
        return self.connection.state

    @property
    def alive(self) -> bool:
        """True while the worker thread runs (False before ``start``, after it stopped, and once it is dying)."""
        return self._worker is not None and self._worker.is_alive() and self.fatal is None

    def inbox_stats(self) -> InboxStats:
        """The inbound queue's size, peaks and drops."""
        return self.inbox.stats()

    def plugin_versions(self) -> dict[str, tuple[str | None, str | None]]:
        """Each managed plugin's (installed version, version its desired state wants), for Home Assistant."""
        wanted = {n: spec.version for n, (spec, _) in self.desired.wanted().items()}
        installed = {n: r.version for n, r in dict(self.reports.report).items()}
        return {n: (installed.get(n), wanted.get(n)) for n in sorted(set(wanted) | set(installed))}

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        c = make_client(self.broker, f"edged-{self.device_id}", clean_session=False)
        c.will_set(topics.presence(self.device_id), self._presence("offline"), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self.connection.connect_failed
        c.max_queued_messages_set(MAX_QUEUED_OUT)
        return c

    def _presence(self, state: Literal["online", "offline"]) -> str:
        return Presence(device=self.device_id, state=state, groups=self.groups).model_dump_json()

    def start(self) -> None:
        """Restore what the store says is active, connect, and start the worker."""
        self.store.recover(keep_transfers=self.installer.transfers_wanted())
        self.installer.resume()
        self._worker = threading.Thread(target=self._work, name=f"agent-{self.device_id}", daemon=True)
        self._worker.start()
        self.connection.connecting()
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly (presence ``offline``) and stop the worker. Running plugins keep their state."""
        self._stop.set()
        if self.connected.is_set():
            info = self.reports.publish(topics.presence(self.device_id), self._presence("offline"), retain=True)
            with contextlib.suppress(ValueError, RuntimeError):  # not queued: the outgoing queue is full
                info.wait_for_publish(timeout=5)
        self.connection.stopped()
        self.client.disconnect()
        self.client.loop_stop()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10)

    def wait_idle(self, timeout: float = 20.0) -> bool:
        """True once no job is in progress and the queue is empty (for tests and benchmarks)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.installer.jobs and self.inbox.empty():
                return True
            time.sleep(0.02)
        return False

    # --- MQTT callbacks (network thread: enqueue only) ---------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.connection.refused(reason)
            return
        self.connection.connected()
        subs = [
            (topics.desired(self.device_id), 1),
            (topics.cmd(self.device_id), 1),
            (topics.chunks(self.device_id), 1),
            *[(topics.group_desired(g), 1) for g in self.groups],
        ]
        client.subscribe(subs)
        self.backoff.connected()
        self.inbox.put_control("connected")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        self.connection.disconnected(reason)
        if self._stop.is_set():
            return
        delay = self.backoff.next_delay()
        # paho waits its reconnect delay before the next attempt; a fixed value each time makes it ours
        # paho annotates the delays as int; it takes float seconds
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]
        log.debug(  # the state change itself is logged once by self.connection, with the reason
            "disconnected; reconnecting after a back-off",
            extra={
                "device": self.device_id,
                "reason": str(reason),
                "delay_s": round(delay, 2),
                "attempt": self.backoff.failures,
            },
        )

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.bytes_in += len(msg.payload) + len(msg.topic)
        self.inbox.put(msg.topic, bytes(msg.payload), _kind_of(msg.topic))

    # --- worker ------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                self._step()
        except BaseException as exc:  # the worker must never die silently
            self._worker_died(exc)

    def _step(self) -> None:
        """One turn of the worker: at most one message, then the periodic tick."""
        item = self.inbox.get(timeout=0.05)
        kind, topic, payload = item if item is not None else ("", "", b"")
        try:
            if kind == "connected":
                self._connected()
            elif kind == "msg":
                self._dispatch(topic, payload)
            self._tick()
        except Exception as exc:  # the agent must survive anything a message or a plugin does
            self.reports.errors += 1
            log.exception("agent error", extra={"device": self.device_id, "topic": topic or None})
            detail = f"{type(exc).__name__}: {exc}"
            self.reports.status("failed", reason="internal_error", detail=detail, topic=topic or None)

    def _worker_died(self, exc: BaseException) -> None:
        """Say so, look dead to the marketplace (presence ``offline``, disconnect) and tell the owner."""
        self.fatal = exc
        log.critical(
            "agent worker died: the deploy agent stops and the process must exit",
            exc_info=exc,
            extra={"device": self.device_id, "error": f"{type(exc).__name__}: {exc}"},
        )
        with contextlib.suppress(Exception):
            offline = self._presence("offline")
            self.reports.publish(topics.presence(self.device_id), offline, retain=True).wait_for_publish(5)
        with contextlib.suppress(Exception):
            self.client.disconnect()
        try:
            if self._on_fatal is not None:
                self._on_fatal(exc)
        finally:
            self.dead.set()  # last: whoever waits on it sees the whole of the above done

    def _connected(self) -> None:
        self.connected.set()
        self.reports.publish(topics.presence(self.device_id), self._presence("online"), retain=True)
        self.reports.publish_reported()
        self.installer.ask_again()  # resume: ask again for everything still missing

    def _dispatch(self, topic: str, payload: bytes) -> None:
        if topic == topics.chunks(self.device_id):
            self.installer.on_chunk(payload)
        elif topic == topics.cmd(self.device_id):
            self.commands.on_command(payload)
        elif topic == topics.desired(self.device_id):
            self._on_desired(DEVICE, topic, payload)
        elif (g := topics.group_of(topic)) is not None and g in self.groups:
            self._on_desired(Source.group(g), topic, payload)
        else:
            self.reports.reject(topic, "unexpected_topic", f"not a topic this agent handles: {topic}")

    def _tick(self) -> None:
        self.reports.tick(self.connected.is_set())
        self._resubscribe_dropped()
        self._sync_playlist()
        self.installer.tick()

    # --- desired state -----------------------------------------------------------------------------------------

    def _on_desired(self, source: Source, topic: str, payload: bytes) -> None:
        if not payload:  # an unsigned "clear" must not remove anything: undeploying is a signed empty plugin list
            self.reports.reject(topic, "malformed", "empty desired-state message")
            return
        try:
            doc, refused = read_desired(payload, self.trust, source, self.device_id)
        except MessageRejected as exc:
            self.reports.reject(topic, exc.reason, str(exc))
            return
        except ValidationError as exc:
            self.reports.reject(topic, "wrong_schema", short(exc))
            return
        last = self.state.applied.get(source, -1)
        if doc.seq < last:
            self.reports.reject(topic, "stale", f"desired seq {doc.seq} is older than the applied {last}")
            return
        if doc.seq == last and source in self.desired.docs:
            return  # a repeat: harmless
        try:
            self.state.apply(source, doc.seq, sorted({str(p.meta.get("wasm_sha256", "")) for p in doc.plugins}))
        except StoreError as exc:
            self._retry_desired.add(topic)  # the broker sends the retained copy again when we subscribe again
            self._next_resubscribe = max(self._next_resubscribe, time.monotonic() + RESUBSCRIBE_S)
            self.reports.reject(topic, exc.reason, f"desired seq {doc.seq} not applied (tried again soon): {exc}")
            return
        for r in refused:  # one bad entry is refused; the rest of the document applies
            self.reports.reject(topic, r.reason, f"entry {r.label} refused, the rest applies: {r.detail}")
        self.desired.record(source, doc, refused)
        self._reconcile()

    def _reconcile(self) -> None:
        """Start the installs the documents ask for and remove what a source that installed it no longer wants."""
        inst, state = self.installer, self.state
        wanted = self.desired.wanted()
        for name, (spec, source) in wanted.items():
            if state.failed.get(Attempt(name, spec.version, spec.allow_downgrade)) == state.request(source):
                continue  # failed for this very document; a newly signed one retries
            job = inst.jobs.get(name)
            if job is not None:
                if job.spec.version == spec.version:
                    continue
                inst.abandon(job)
            if inst.active_version(name) == spec.version:
                state.origin[name] = source
                continue
            inst.begin(spec, source)
        for name, source in list(state.origin.items()):
            if name not in wanted and not self.desired.keeps(name, source):
                inst.remove(name)
        inst.reclaim_transfers()
        state.save()
        self.reports.publish_reported()

    def _sync_playlist(self) -> None:
        """Apply the playlist asked for through the target, once none of its plugins is still being installed."""
        want = self.desired.playlist()
        if want == self._playlist_tried or any(name in self.installer.jobs for name in want or ()):
            return
        self._playlist_tried = want
        apply = getattr(self.target, "apply_playlist", None)
        if apply is None:
            log.info("the target cannot apply playlists", extra={"device": self.device_id, "playlist": want})
            return
        try:
            apply(list(want) if want is not None else None)
        except (EdgedError, ValueError) as exc:
            self.reports.status("failed", reason="playlist", detail=f"playlist {want}: {exc}")
            self.reports.errors += 1
            return
        self.reports.playlist = want
        log.info("playlist applied", extra={"device": self.device_id, "playlist": want})
        self.reports.publish_reported()

    def _resubscribe_dropped(self) -> None:
        """After a burst that dropped desired-state messages, subscribe to those topics again (at most every
        ``RESUBSCRIBE_S``): the broker then sends their retained documents once more, so none is lost for good."""
        now = time.monotonic()
        if now < self._next_resubscribe or not self.connected.is_set():
            return
        dropped = self.inbox.take_dropped_desired() | self._retry_desired
        self._retry_desired = set()
        if dropped:
            self._next_resubscribe = now + RESUBSCRIBE_S
            log.warning(
                "subscribing again to desired states dropped by the full queue or not recorded (full disk)",
                extra={"topics": sorted(dropped)},
            )
            self.client.subscribe([(t, 1) for t in sorted(dropped)])
