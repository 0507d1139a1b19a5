"""The device agent: reconciles this device toward the marketplace's desired state over MQTT.

It subscribes to its own desired state, its groups' desired states, its commands and its chunk replies; it
downloads bundles chunk by chunk into the store's resumable transfers, verifies them against the signed metadata and
the device policy, installs and activates them atomically, runs the health check and rolls back by itself when a new
version fails it. Everything it does is reported on its status topic (progress, errors) and its retained reported
state. All MQTT input is untrusted: a bad message gets an error status and changes nothing.

Network callbacks only enqueue; one worker thread does all the work, so the store and the target see one caller.
Run one from the command line with ``python -m edged.deploy.agent`` (an :class:`EmulatedTarget` behind it).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import math
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import (
    BundleRejected,
    ConfigError,
    DeployError,
    DiskFull,
    EdgedError,
    MessageRejected,
    MessageReplayed,
    MessageWrongTarget,
    NonceCacheFull,
    PluginError,
    StoreError,
    ValidityTooLong,
)
from ..host.capabilities import Capabilities, DevicePolicy
from . import topics
from .bundle import BundleMeta, check_manifest_digest, compare_versions, verify_bundle, verify_meta
from .connection import ConnectionTracker, MqttState
from .inbox import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES, Inbox, InboxStats, ReconnectBackoff
from .messages import (
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    ChunkRequest,
    Command,
    DesiredState,
    PluginSpec,
    Presence,
    Reply,
    Reported,
    ReportedPlugin,
    State,
    Status,
    check_plugin_name,
    check_version,
    unpack_chunk,
)
from .store import PluginStore
from .target import DeployTarget, EmulatedTarget
from .trust import NonceCache, TrustStore, fsync_dir, open_envelope, verify_envelope

log = logging.getLogger("edged.deploy.agent")

#: how long a device shows that it is being identified
IDENTIFY_SECONDS = 5.0

#: the longest a command may be signed valid for (``expires_at - issued_at``). The device remembers the nonce of
#: every command meant for it until the command expires, at most ``NONCE_CAPACITY`` of them, and refuses new
#: commands (``busy``) rather than forget one: with this bound the marketplace would have to send one device
#: more than ``NONCE_CAPACITY`` commands within 10 minutes to make it refuse. The marketplace signs commands for
#: 5 minutes (``COMMAND_TTL_S``).
MAX_COMMAND_VALIDITY_S = 600.0
#: unexpired command nonces kept (one JSON line each in ``agent-nonces.jsonl``)
NONCE_CAPACITY = 4096

#: QoS-1 messages the MQTT client may hold (unsent, or sent and not yet acknowledged by the broker). A broker that
#: withholds PUBACKs would otherwise make the agent's memory grow with every status it sends; beyond this bound a
#: publish is dropped and counted (``out_dropped``) and the retained reported state is sent again later.
MAX_QUEUED_OUT = 1000
#: rejection statuses sent one by one within ``REJECT_WINDOW_S``; beyond that a burst is coalesced: one status per
#: reason, with ``count``, when the window ends (a flood of junk costs a few statuses a second, not one per message)
REJECT_BURST = 20
REJECT_WINDOW_S = 1.0

#: a download that has not finished this long after it started fails (``download_timeout``), whatever arrives: a
#: broker re-sending chunks the device has (no progress) or trickling them cannot hold a plugin's slot for ever.
#: 30 minutes: a 10 MB bundle needs 1 KB/s.
DOWNLOAD_TIMEOUT_S = 1800.0

#: at most this often the agent subscribes again to desired-state topics whose messages its full queue dropped
RESUBSCRIBE_S = 5.0

#: AWS IoT's message limit is 128 KB; a chunk plus its header line stays below it (at most ``MAX_CHUNK_SIZE``)
DEFAULT_CHUNK_SIZE = 96 * 1024


def check_chunk_size(chunk_size: int) -> int:
    """``chunk_size`` if it is within ``MIN_CHUNK_SIZE``..``MAX_CHUNK_SIZE``, else raise :class:`ConfigError`."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ConfigError(
            f"chunk_size {chunk_size} is out of range: {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes (a chunk and its "
            f"header must fit in a 128 KB MQTT message, the limit of AWS IoT and of deploy/mosquitto.conf's chunks)"
        )
    return chunk_size


def require_target(data: Any, expected: str) -> None:
    """Raise :class:`MessageWrongTarget` unless the signed payload ``data`` names ``expected`` (``device:<id>`` or
    ``group:<g>``, derived from the topic it came in on) as its ``target``.

    The signature covers the target, so a document signed for one device or group cannot be replayed onto another's
    topic. A document without a target (signed before targets were bound) is refused too: it could be anyone's."""
    target = data.get("target") if isinstance(data, dict) else None
    if target is None:
        raise MessageWrongTarget(
            f"the document names no target (it arrived as {expected}'s); unbound documents are refused, "
            "the marketplace must sign it again"
        )
    if target != expected:
        raise MessageWrongTarget(f"the document is signed for {target!r}, but arrived as {expected}'s")


def split_bad_entries(data: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Take the plugin entries and playlist items that cannot be valid out of a desired-state payload.

    Returns the payload without them, and ``(what, reason, detail)`` for each one taken out (reason ``invalid_name``
    for a name or version that is not one, ``wrong_schema`` for any other fault of that entry). The rest of the
    document still applies."""
    refused: list[tuple[str, str, str]] = []
    out = dict(data)
    plugins = data.get("plugins")
    if isinstance(plugins, list):
        kept = []
        for i, entry in enumerate(plugins):
            label = repr(entry.get("name")) if isinstance(entry, dict) else f"#{i}"
            try:
                if isinstance(entry, dict):
                    check_plugin_name(entry.get("name"))  # type: ignore[arg-type]
                    check_version(entry.get("version"))  # type: ignore[arg-type]
            except ValueError as exc:
                refused.append((label, "invalid_name", f"plugins[{i}]: {exc}"))
                continue
            try:
                PluginSpec.model_validate(entry)
            except ValidationError as exc:
                refused.append((label, "wrong_schema", f"plugins[{i}]: {_short(exc)}"))
                continue
            kept.append(entry)
        out["plugins"] = kept
    playlist = data.get("playlist")
    if isinstance(playlist, list):
        items = []
        for i, item in enumerate(playlist):
            try:
                items.append(check_plugin_name(item))
            except ValueError as exc:
                refused.append((repr(item), "invalid_name", f"playlist[{i}]: {exc}"))
        out["playlist"] = items
    return out, refused


def _kind_of(topic: str) -> str:
    """``desired``, ``cmd``, ``chunks`` or ``other``: what the inbox counts drops by."""
    leaf = topic.rsplit("/", 1)[-1]
    return leaf if leaf in ("desired", "cmd", "chunks") else "other"


def disk_full(exc: BaseException) -> bool:
    """True for an error that means the file system is full."""
    return isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))


class BrokerConfig(BaseModel):
    """Where and how the agent connects. TLS is on when ``ca_file`` is set."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = Field(default=30, ge=5)


def make_client(broker: BrokerConfig, client_id: str, clean_session: bool) -> mqtt.Client:
    """A paho 2.x client (MQTT 3.1.1) set up with ``broker``'s credentials and TLS, reconnecting quickly."""
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311
    )
    if broker.username is not None:
        c.username_pw_set(broker.username, broker.password)
    if broker.ca_file is not None:
        c.tls_set(
            ca_certs=str(broker.ca_file),
            certfile=str(broker.cert_file) if broker.cert_file else None,
            keyfile=str(broker.key_file) if broker.key_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    c.reconnect_delay_set(min_delay=0.2, max_delay=2)
    c.max_inflight_messages_set(64)
    return c


@dataclass
class _Job:
    spec: PluginSpec
    meta: BundleMeta
    source: str
    cmd_id: str | None = None
    #: the request this job serves (see ``DeviceAgent._request``): what a failure is remembered against
    request: str = ""
    transfer: Any = None
    total: int = 0
    chunk_size: int = 0
    requested: set[int] = field(default_factory=set)
    retries: dict[int, int] = field(default_factory=dict)
    last_progress: float = 0.0
    last_percent: float = -100.0
    #: times in a row the transfer asked again without receiving a chunk in between
    stalls: int = 0
    state: str = "downloading"
    deadline: float = 0.0
    #: the target started this version (only then does its health count)
    activated: bool = False
    #: the marketplace's last error for a chunk (an unsigned header: only named in a later missing_chunk)
    last_error: str = ""


class DeviceAgent:
    """One device's deployment agent. ``start()`` connects and returns; ``stop()`` disconnects and joins.

    ``health_frames`` frames without a strike within ``health_timeout_s`` seconds make a new version healthy;
    anything else rolls it back. ``window`` chunks are in flight at a time; a transfer that makes no progress for
    ``stall_s`` seconds asks again for what is missing (this is also how it resumes after a broker restart); after
    ``max_stalls`` such requests in a row without a chunk arriving (while connected) it fails as ``missing_chunk``.
    A chunk whose sha256 does not match is asked for again, up to ``chunk_retries`` times, then the install fails as
    ``hash_mismatch``. Only a chunk not stored yet counts as progress, and a download not done ``download_timeout_s``
    after it started fails as ``download_timeout``. ``chunk_size`` is at most
    :data:`~edged.deploy.messages.MAX_CHUNK_SIZE`.

    Inbound messages wait in a queue bounded by ``inbox_messages`` and ``inbox_bytes`` (see
    :class:`~edged.deploy.inbox.Inbox` for what is dropped). If the worker thread ever dies, the agent says so in a
    critical log line, publishes its presence ``offline``, disconnects and calls ``on_fatal`` (``edged run`` and
    ``python -m edged.deploy.agent`` then exit non-zero), so a device never looks healthy with a dead agent.
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
        self.target = target
        self.policy = policy or DevicePolicy()
        self.chunk_size = check_chunk_size(chunk_size)
        self.window = window
        self.health_frames = health_frames
        self.health_timeout_s = health_timeout_s
        self.max_bundle_size = max_bundle_size
        self.stall_s = stall_s
        self.max_stalls = max_stalls
        self.chunk_retries = chunk_retries
        self.download_timeout_s = download_timeout_s
        self._state_file = (state_dir or Path(store.root)) / "agent-state.json"
        self.inbox = Inbox(inbox_messages, inbox_bytes)
        self._on_fatal = on_fatal
        self.backoff = backoff or ReconnectBackoff()
        #: set when the worker thread died (the exception that killed it is in ``fatal``)
        self.dead = threading.Event()
        self.fatal: BaseException | None = None
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._desired: dict[str, DesiredState] = {}
        self._jobs: dict[str, _Job] = {}
        #: (name, version, allow_downgrade) that failed -> the request it failed for (``<source>#<seq>`` of a
        #: desired-state document, or ``cmd:<id>``): not retried for that request, retried once for a newer one
        self._failed: dict[tuple[str, str, bool], str] = {}
        self._report: dict[str, ReportedPlugin] = {}
        self._applied: dict[str, int] = {}
        self._origin: dict[str, str] = {}
        #: versions activated whose health check has not finished (survives a crash: re-checked at start)
        self._pending: dict[str, dict[str, str]] = {}
        self._seen: set[str] = set()
        #: the playlist applied through the target (None: the device's own) and the one tried last
        self._playlist: list[str] | None = None
        self._playlist_tried: list[str] | None = None
        #: names each source's current document names but whose entry was refused (never removed for that)
        self._refused: dict[str, set[str]] = {}
        self._next_resubscribe = 0.0
        #: desired-state topics whose document could not be recorded (a full disk): subscribed again later
        self._retry_desired: set[str] = set()
        #: wasm sha256 each source's last applied document wants (persisted: recovery at start keeps only these
        #: unfinished transfers); None until known, so an older state file never makes recovery delete anything
        self._wanted_hashes: dict[str, list[str]] | None = None
        self.connected = threading.Event()
        #: the broker connection's state, logged on every change (see :attr:`mqtt_state`)
        self.connection = ConnectionTracker(log, broker.host, broker.port, device=self.device_id)
        self.errors = 0
        self.bytes_in = 0
        self.bytes_out = 0
        #: installs and rejected messages by outcome: (state, reason) -> count (``/metrics``)
        self.outcomes: dict[tuple[str, str], int] = {}
        #: publishes dropped because the MQTT client's outgoing queue was full (``MAX_QUEUED_OUT``)
        self.out_dropped = 0
        self._reported_dirty = False
        self._reject_window_end = 0.0
        self._reject_sent = 0
        #: rejections held back in this window: reason -> [count, last topic, last detail]
        self._reject_held: dict[str, list[Any]] = {}
        self._load_state()
        self._nonces = self._open_nonces()
        self.client = self._make_client()

    def _open_nonces(self) -> NonceCache:
        path = self._state_file.with_name("agent-nonces.jsonl")
        legacy = self._state_file.with_name("agent-nonces.json")  # the older format: one JSON object rewritten per add
        if legacy.exists() and not path.exists():
            with contextlib.suppress(OSError):
                os.replace(legacy, path)  # read in the old format, rewritten in lines at the next add
        with contextlib.suppress(OSError):
            legacy.unlink(missing_ok=True)
            for stale in legacy.parent.glob(f".{legacy.name}.*.tmp"):
                stale.unlink(missing_ok=True)
        return NonceCache(path, NONCE_CAPACITY)

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        c = make_client(self.broker, f"edged-{self.device_id}", clean_session=False)
        offline = Presence(device=self.device_id, state="offline", groups=self.groups)
        c.will_set(topics.presence(self.device_id), offline.model_dump_json(), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self.connection.connect_failed
        c.max_queued_messages_set(MAX_QUEUED_OUT)
        return c

    @property
    def mqtt_state(self) -> MqttState:
        """The broker connection now: ``connecting``, ``connected``, ``disconnected``, ``unreachable``, ``refused``
        (with the broker's reason) or ``stopped``, since when, and why."""
        return self.connection.state

    def start(self) -> None:
        """Restore what the store says is active, connect, and start the worker."""
        self.store.recover(keep_transfers=self._transfers_wanted())
        for name in self._active_names():
            self._start_active(name)
        for name, p in list(self._pending.items()):
            iv = self.store.active(name)
            if iv is None or iv.version != p["version"]:
                del self._pending[name]  # killed before the activation was written: nothing to check
                continue
            spec = PluginSpec(name=name, version=iv.version, meta=iv.meta.model_dump(mode="json"), manifest=iv.manifest)
            job = _Job(spec=spec, meta=iv.meta, source=p["source"], state="activating", activated=True)
            job.deadline = time.monotonic() + self.health_timeout_s
            self._jobs[name] = job
            log.info("re-checking health after a restart", extra={"plugin": name, "version": iv.version})
        self._worker = threading.Thread(target=self._work, name=f"agent-{self.device_id}", daemon=True)
        self._worker.start()
        self.connection.connecting()
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly (presence ``offline``) and stop the worker. Running plugins keep their state."""
        self._stop.set()
        if self.connected.is_set():
            info = self._publish(
                topics.presence(self.device_id),
                Presence(device=self.device_id, state="offline", groups=self.groups).model_dump_json(),
                retain=True,
            )
            with contextlib.suppress(ValueError, RuntimeError):  # not queued: the outgoing queue is full
                info.wait_for_publish(timeout=5)
        self.connection.stopped()
        self.client.disconnect()
        self.client.loop_stop()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10)

    @property
    def alive(self) -> bool:
        """True while the worker thread runs (False before ``start``, after it stopped, and once it is dying)."""
        return self._worker is not None and self._worker.is_alive() and self.fatal is None

    def inbox_stats(self) -> InboxStats:
        """The inbound queue's size, peaks and drops."""
        return self.inbox.stats()

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
            self.errors += 1
            log.exception("agent error", extra={"device": self.device_id, "topic": topic or None})
            self._status("failed", reason="internal_error", detail=f"{type(exc).__name__}: {exc}", topic=topic or None)

    def _worker_died(self, exc: BaseException) -> None:
        """Say so, look dead to the marketplace (presence ``offline``, disconnect) and tell the owner."""
        self.fatal = exc
        log.critical(
            "agent worker died: the deploy agent stops and the process must exit",
            exc_info=exc,
            extra={"device": self.device_id, "error": f"{type(exc).__name__}: {exc}"},
        )
        with contextlib.suppress(Exception):
            offline = Presence(device=self.device_id, state="offline", groups=self.groups)
            self._publish(topics.presence(self.device_id), offline.model_dump_json(), retain=True).wait_for_publish(5)
        with contextlib.suppress(Exception):
            self.client.disconnect()
        try:
            if self._on_fatal is not None:
                self._on_fatal(exc)
        finally:
            self.dead.set()  # last: whoever waits on it sees the whole of the above done

    def wait_idle(self, timeout: float = 20.0) -> bool:
        """True once no job is in progress and the queue is empty (for tests and benchmarks)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self._jobs and self.inbox.empty():
                return True
            time.sleep(0.02)
        return False

    def _connected(self) -> None:
        self.connected.set()
        online = Presence(device=self.device_id, state="online", groups=self.groups)
        self._publish(topics.presence(self.device_id), online.model_dump_json(), retain=True)
        self._publish_reported()
        for job in self._jobs.values():  # resume: ask again for everything still missing
            if job.state == "downloading":
                job.requested.clear()
                self._request_more(job)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        if topic == topics.chunks(self.device_id):
            self._on_chunk(payload)
        elif topic == topics.cmd(self.device_id):
            self._on_command(payload)
        elif topic == topics.desired(self.device_id):
            self._on_desired("device", topic, payload)
        elif (g := topics.group_of(topic)) is not None and g in self.groups:
            self._on_desired(f"group:{g}", topic, payload)
        else:
            self._reject(topic, "unexpected_topic", f"not a topic this agent handles: {topic}")

    # --- desired state -----------------------------------------------------------------------------------------

    def _on_desired(self, source: str, topic: str, payload: bytes) -> None:
        if not payload:  # an unsigned "clear" must not remove anything: undeploying is a signed empty plugin list
            self._reject(topic, "malformed", "empty desired-state message")
            return
        refused: list[tuple[str, str, str]] = []
        try:
            data = open_envelope(payload, self.trust, role="marketplace")
            require_target(data, source if source.startswith("group:") else f"device:{self.device_id}")
            if isinstance(data, dict):
                data, refused = split_bad_entries(data)
            doc = DesiredState.model_validate(data)
        except MessageRejected as exc:
            self._reject(topic, exc.reason, str(exc))
            return
        except ValidationError as exc:
            self._reject(topic, "wrong_schema", _short(exc))
            return
        last = self._applied.get(source, -1)
        if doc.seq < last:
            self._reject(topic, "stale", f"desired seq {doc.seq} is older than the applied {last}")
            return
        if doc.seq == last and source in self._desired:
            return  # a repeat: harmless
        # the new seq is on disk (fsynced) BEFORE anything is applied: otherwise a full disk would leave it in memory
        # only, and after a restart a broker could hand back an older document that the device would take
        applied = self._applied.get(source)
        wanted = None if self._wanted_hashes is None else dict(self._wanted_hashes)
        self._applied[source] = doc.seq
        if self._wanted_hashes is None:
            self._wanted_hashes = {}
        self._wanted_hashes[source] = sorted({str(p.meta.get("wasm_sha256", "")) for p in doc.plugins})
        try:
            self._save_state(required=True)
        except StoreError as exc:
            if applied is None:
                self._applied.pop(source, None)
            else:
                self._applied[source] = applied
            self._wanted_hashes = wanted
            self._retry_desired.add(topic)  # the broker sends the retained copy again when we subscribe again
            self._next_resubscribe = max(self._next_resubscribe, time.monotonic() + RESUBSCRIBE_S)
            self._reject(topic, exc.reason, f"desired seq {doc.seq} not applied (tried again soon): {exc}")
            return
        for what, reason, detail in refused:  # one bad entry is refused; the rest of the document applies
            self._reject(topic, reason, f"entry {what} refused, the rest applies: {detail}")
        self._refused[source] = {_unrepr(what) for what, _, _ in refused}
        self._desired[source] = doc
        self._seen.add(source)
        self._reconcile()

    def _wanted(self) -> dict[str, tuple[PluginSpec, str]]:
        out: dict[str, tuple[PluginSpec, str]] = {}
        for source in sorted(s for s in self._desired if s.startswith("group:")):
            for spec in self._desired[source].plugins:
                out[spec.name] = (spec, source)
        if "device" in self._desired:  # the device's own desired state wins over its groups'
            for spec in self._desired["device"].plugins:
                out[spec.name] = (spec, "device")
        return out

    def _reconcile(self) -> None:
        wanted = self._wanted()
        for name, (spec, source) in wanted.items():
            if self._failed.get((name, spec.version, spec.allow_downgrade)) == self._request(source):
                continue  # failed for this very document; a newly signed one retries
            job = self._jobs.get(name)
            if job is not None:
                if job.spec.version == spec.version:
                    continue
                self._abandon(job)
            if self._active_version(name) == spec.version:
                self._origin[name] = source
                continue
            self._begin(spec, source)
        for name, source in list(self._origin.items()):
            # only once that source has spoken in this session: a group's retained state may arrive after the
            # device's own, and must not make the device drop the group's plugins in between; and never because
            # the source's entry for it was refused (a bad version string must not uninstall what runs)
            if name not in wanted and source in self._seen and name not in self._refused.get(source, ()):
                self._remove(name)
        self._reclaim_transfers()
        self._save_state()
        self._publish_reported()

    def _transfers_wanted(self) -> set[str] | None:
        """The wasm sha256 of every unfinished download still wanted: running jobs and the documents' entries."""
        if self._wanted_hashes is None:
            return None
        keep = {h for hashes in self._wanted_hashes.values() for h in hashes}
        return keep | {job.meta.wasm_sha256 for job in self._jobs.values()}

    def _reclaim_transfers(self) -> None:
        """Delete unfinished downloads that nothing wants any more (a version switched mid-download, a plugin no
        longer asked for), so they cannot fill the store."""
        keep = self._transfers_wanted()
        if keep is None:
            return
        try:
            self.store.reclaim_transfers(keep)
        except OSError as exc:
            log.warning("cannot reclaim transfers", extra={"device": self.device_id, "error": str(exc)})

    # --- commands ----------------------------------------------------------------------------------------------

    def _on_command(self, payload: bytes) -> None:
        """Signature, validity, target, validity bound and schema are checked BEFORE the nonce is recorded: only
        commands meant for this device take room in the nonce cache, so commands for others (replayed here by a
        broker) can never push out the nonce of one of ours and let it be replayed."""
        topic = topics.cmd(self.device_id)
        try:
            env = verify_envelope(payload, self.trust, role="marketplace")
        except MessageRejected as exc:
            self._reply(None, False, exc.reason, str(exc))
            self._reject(topic, exc.reason, str(exc))
            return
        data = env.payload
        cmd_id = data.get("id") if isinstance(data.get("id"), str) else None
        try:
            require_target(data, f"device:{self.device_id}")
            if env.expires_at - env.issued_at > MAX_COMMAND_VALIDITY_S:
                raise ValidityTooLong(
                    f"signed valid for {env.expires_at - env.issued_at:.0f} s; commands may be valid for at most "
                    f"{MAX_COMMAND_VALIDITY_S:.0f} s"
                )
        except MessageRejected as exc:
            self._reply(cmd_id, False, exc.reason, str(exc))
            self._reject(topic, exc.reason, str(exc))
            return
        try:
            cmd = Command.model_validate(data)
        except ValidationError as exc:
            self._reply(cmd_id, False, "wrong_schema", _short(exc))
            self._reject(topic, "wrong_schema", _short(exc))
            return
        try:
            if not self._nonces.add(env.nonce, env.expires_at):
                raise MessageReplayed(f"nonce {env.nonce!r} was already used")
        except (MessageReplayed, NonceCacheFull) as exc:
            self._reply(cmd.id, False, exc.reason, str(exc))
            self._reject(topic, exc.reason, str(exc))
            return
        except OSError as exc:  # not remembered, so not executed: it could be replayed after a restart
            err = self.store.write_error("cannot record the command's nonce", exc, 256)
            reason = err.reason if isinstance(err, DiskFull) else "install_failed"
            self._reply(cmd.id, False, reason, f"command not executed: {err}")
            self._status("failed", reason=reason, detail=f"command {cmd.id} not executed: {err}", topic=topic)
            return
        try:
            self._execute(cmd)
        except (StoreError, PluginError, DeployError) as exc:
            if isinstance(exc, DiskFull):
                reason = exc.reason
            elif isinstance(exc, StoreError):
                reason = "unknown_plugin"
            else:
                reason = getattr(exc, "reason", None) or "failed"
            self._reply(cmd.id, False, reason, str(exc))

    def _execute(self, cmd: Command) -> None:
        if cmd.op == "identify":
            log.warning("identify requested", extra={"device": self.device_id})
            show = getattr(self.target, "identify", None)
            if callable(show):  # a target with a display blinks it (optional, like apply_playlist)
                show(IDENTIFY_SECONDS)
            self._reply(cmd.id, True, result={"groups": self.groups, "plugins": self._running_versions()})
            return
        if cmd.op == "install":
            if cmd.plugin is None:
                self._reply(cmd.id, False, "wrong_schema", "install needs 'plugin'")
                return
            self._failed.pop((cmd.plugin.name, cmd.plugin.version, cmd.plugin.allow_downgrade), None)
            if self._active_version(cmd.plugin.name) == cmd.plugin.version:
                self._reply(cmd.id, True, result={"version": cmd.plugin.version, "state": "healthy"})
                return
            if (job := self._jobs.get(cmd.plugin.name)) is not None:
                self._abandon(job)
            self._begin(cmd.plugin, f"cmd:{cmd.id}", cmd_id=cmd.id)
            return
        name = cmd.name
        if not name or (self._active_version(name) is None and name not in self._jobs):
            self._reply(cmd.id, False, "unknown_plugin", f"no plugin {name!r} on this device")
            return
        if cmd.op == "remove":
            self._remove(name)
            self._reply(cmd.id, True)
        elif cmd.op == "restart":
            self._start_active(name)
            self._reply(cmd.id, True, result={"version": self._active_version(name)})
        elif cmd.op == "rollback":
            failed = self._active_version(name)
            # a rollback names the version it rolls back from: executed once, it cannot take the device further
            # back (a replay, or the same command delivered twice, finds another version active)
            if cmd.from_version is None:
                self._reply(cmd.id, False, "wrong_schema", "rollback needs from_version: the version to roll back from")
                return
            if failed != cmd.from_version:
                self._reply(
                    cmd.id,
                    False,
                    "not_active",
                    f"rollback from {cmd.from_version} refused: {name} runs {failed}",
                    result={"version": failed},
                )
                return
            try:
                self.store.rollback(name)
            except StoreError as exc:
                self._reply(cmd.id, False, "nothing_to_rollback", str(exc))
                return
            now = self._active_version(name)
            if failed and (want := self._wanted().get(name)) is not None:
                # the desired state that asked for the version rolled back from must not reinstall it
                self._failed[(name, failed, False)] = self._request(want[1])
            self._start_active(name)
            self._set_report(name, now, "rolled_back", "command", wanted=None)
            self._status("rolled_back", name=name, version=now, reason="command")
            self._reply(cmd.id, True, result={"version": now})
        self._publish_reported()

    # --- install ------------------------------------------------------------------------------------------------

    def _begin(self, spec: PluginSpec, source: str, cmd_id: str | None = None) -> None:
        topic = topics.cmd(self.device_id) if cmd_id else topics.desired(self.device_id)
        try:
            # the publisher's signature over name, version, wasm sha256 and size, and the manifest's digest, is
            # checked before the first chunk is asked for: a forged bundle never causes a download
            meta = verify_meta(spec.meta, self.trust)
            check_manifest_digest(meta, spec.manifest)
        except BundleRejected as exc:
            self._fail_early(spec, source, cmd_id, exc.reason, str(exc), topic)
            return
        if meta.name != spec.name or meta.version != spec.version:
            self._fail_early(spec, source, cmd_id, "wrong_schema", "bundle meta names another plugin", topic)
            return
        if meta.wasm_size > self.max_bundle_size:
            self._fail_early(
                spec, source, cmd_id, "oversize", f"{meta.wasm_size} bytes > limit {self.max_bundle_size}", topic
            )
            return
        excess = self._policy_excess(spec.manifest)
        if excess:
            self._fail_early(spec, source, cmd_id, "policy_violation", excess, topic)
            return
        stored = next((iv for iv in self._installed(spec.name) if iv.version == spec.version), None)
        if stored is not None:  # kept from before: no download, but the same checks as a fresh bundle
            active = self._active_version(spec.name)
            if stored.wasm_sha256 != meta.wasm_sha256:
                self._fail_early(spec, source, cmd_id, "hash_mismatch", "installed with different wasm", topic)
                return
            if active and not spec.allow_downgrade and compare_versions(spec.version, active) < 0:
                self._fail_early(spec, source, cmd_id, "downgrade", f"{spec.version} < installed {active}", topic)
                return
        job = _Job(
            spec=spec,
            meta=meta,
            source=source,
            cmd_id=cmd_id,
            request=self._request(source),
            last_progress=time.monotonic(),
        )
        self._jobs[spec.name] = job
        if stored is not None:
            if (leftover := self.store.get_transfer(meta.wasm_sha256)) is not None:
                leftover.discard()  # killed between install and cleanup
            self._activate_installed(job)
            return
        job.chunk_size = self.chunk_size
        job.total = max(1, math.ceil(meta.wasm_size / self.chunk_size))
        job.deadline = time.monotonic() + self.download_timeout_s
        self._reclaim_transfers()  # what an earlier, abandoned download held is free for this one
        if self._space_short(meta) is not None:  # then even failed downloads kept for a retry make room
            with contextlib.suppress(OSError):
                self.store.reclaim_transfers({j.meta.wasm_sha256 for j in self._jobs.values()})
            self._gc()
        if (short := self._space_short(meta)) is not None:
            self._fail(job, "disk_full", short)
            return
        try:
            job.transfer = self.store.transfer(meta, self.chunk_size, job.total)
        except DeployError as exc:
            self._fail(job, getattr(exc, "reason", "install_failed"), str(exc))
            return
        self._progress(job, force=True)
        if not job.transfer.missing():
            self._finish_download(job)
        else:
            self._request_more(job)

    def _space_short(self, meta: BundleMeta) -> str | None:
        """Why the store cannot hold this download (its chunks still missing), or None if it can."""
        free = self.store.free_bytes()
        have = self.store.get_transfer(meta.wasm_sha256)
        got = len(have.received()) * self.chunk_size if have is not None else 0
        needed = max(0, meta.wasm_size - got)
        if free < 0 or free >= needed:
            return None
        return f"{meta.ref}: the disk is full ({free} bytes free, {needed} needed for the download)"

    def _policy_excess(self, manifest: dict[str, Any]) -> str:
        block = manifest.get("edged") if isinstance(manifest, dict) else None
        if not isinstance(block, dict):
            return ""
        try:
            caps = Capabilities.from_manifest_block(block.get("capabilities"))
        except EdgedError:
            return ""  # verify_bundle reports an invalid manifest with its own reason
        excess = self.policy.excess(caps)
        return "the device policy does not allow: " + ", ".join(excess) if excess else ""

    def _request_more(self, job: _Job) -> None:
        missing = [i for i in job.transfer.missing() if i not in job.requested]
        inflight = len(job.requested)
        want = missing[: max(0, self.window - inflight)]
        if not want:
            return
        job.requested.update(want)
        req = ChunkRequest(
            device=self.device_id,
            name=job.meta.name,
            version=job.meta.version,
            wasm_sha256=job.meta.wasm_sha256,
            chunk_size=job.chunk_size,
            indices=want,
        )
        self._publish(topics.chunk_request(self.device_id), req.model_dump_json())

    def _on_chunk(self, payload: bytes) -> None:
        try:
            header, data = unpack_chunk(payload)
        except (ValueError, ValidationError) as exc:
            self._reject(topics.chunks(self.device_id), "malformed", _short(exc))
            return
        job = self._jobs.get(header.name)
        if job is None or job.state != "downloading" or job.meta.wasm_sha256 != header.wasm_sha256:
            return  # a late duplicate of a finished or abandoned transfer
        if header.error:  # the header is not signed: anyone could send it, so it is no progress and no failure
            job.last_error = f"marketplace: {header.error} (chunk {header.index})"
            return  # the stall logic asks again, and fails as missing_chunk (with this error) after max_stalls
        if header.chunk_size != job.chunk_size or header.total != job.total or header.index >= job.total:
            self._reject(topics.chunks(self.device_id), "wrong_schema", "chunk does not fit the transfer")
            return
        job.requested.discard(header.index)
        try:
            new = job.transfer.put_chunk(header.index, data, header.sha256)
        except DiskFull as exc:  # asking again cannot help; the partial download is reclaimed
            self._fail(job, exc.reason, f"chunk {header.index}: {exc}")
            return
        except DeployError as exc:
            n = job.retries[header.index] = job.retries.get(header.index, 0) + 1
            reason = getattr(exc, "reason", "hash_mismatch")
            if n > self.chunk_retries:
                self._fail(job, reason, f"chunk {header.index} still bad after {self.chunk_retries} retries: {exc}")
                return
            self._status("downloading", name=job.meta.name, version=job.meta.version, reason=reason, detail=str(exc))
        else:
            if not new:  # a duplicate of a stored chunk (a re-sent one, or a replay): no progress
                return
            job.stalls = 0
        job.last_progress = time.monotonic()
        self._progress(job)
        if not job.transfer.missing():
            self._finish_download(job)
        elif len(job.requested) <= self.window // 2:
            self._request_more(job)

    def _progress(self, job: _Job, force: bool = False) -> None:
        pct = round(max(0.0, min(100.0, float(job.transfer.progress()) * 100)), 1)
        if force or pct - job.last_percent >= 10 or (pct >= 100 and job.last_percent < 100):
            job.last_percent = pct
            self._status("downloading", name=job.meta.name, version=job.meta.version, percent=pct)

    def _finish_download(self, job: _Job) -> None:
        name, version = job.meta.name, job.meta.version
        job.state = "verifying"
        self._status("verifying", name=name, version=version, percent=100)
        try:
            wasm = job.transfer.assemble()
        except DeployError as exc:
            missing = job.transfer.missing()
            if 0 < len(missing) < job.total:  # some stored chunks rotted on disk: fetch just those again
                log.warning("refetching corrupt chunks", extra={"plugin": name, "chunks": missing})
                job.state = "downloading"
                job.requested.clear()
                self._request_more(job)
                return
            job.transfer.discard()
            self._fail(job, getattr(exc, "reason", "hash_mismatch"), str(exc))
            return
        installed = None if job.spec.allow_downgrade else self._active_version(name)
        try:
            verify_bundle(job.meta, job.spec.manifest, wasm, self.trust, self.policy, installed)
        except BundleRejected as exc:
            job.transfer.discard()
            self._fail(job, exc.reason, str(exc))
            return
        job.state = "installing"
        self._status("installing", name=name, version=version, percent=100)
        try:
            try:
                self.store.install(job.meta, job.spec.manifest, wasm)
            except DiskFull:
                # the verified wasm is in memory: its chunks can go to make room for the blob, then try once more
                job.transfer.discard()
                self.store.install(job.meta, job.spec.manifest, wasm)
        except (DeployError, OSError) as exc:  # e.g. this version is installed with other wasm, or the disk is full
            reason = "disk_full" if disk_full(exc) else getattr(exc, "reason", "install_failed")
            self._fail(job, reason, str(exc))
            return
        job.transfer.discard()
        self._activate_installed(job)

    def _activate_installed(self, job: _Job) -> None:
        """Make the installed version active in the store, then start it; the health check follows in ``_tick``.

        The pending health check is written first and the store's record next; if either write fails (a full
        disk) nothing changed: the old version stays active and running, and the job fails with the reason."""
        name, version = job.meta.name, job.meta.version
        self._pending[name] = {"version": version, "source": job.source}
        try:
            self._save_state(required=True)
            self.store.activate(name, version)
        except (StoreError, OSError) as exc:
            self._pending.pop(name, None)
            self._save_state()
            reason = "disk_full" if disk_full(exc) else getattr(exc, "reason", "install_failed")
            self._fail(job, reason, f"cannot make {version} active, {self._active_version(name)} stays: {exc}")
            return
        job.state = "activating"
        job.deadline = time.monotonic() + self.health_timeout_s  # never activating without a deadline
        self._status("activating", name=name, version=version, percent=100)
        try:
            self._start_active(name, raise_errors=True)
        except (PluginError, DeployError, ValueError, OSError) as exc:
            self._rollback(job, "disk_full" if disk_full(exc) else "activation_failed", str(exc))
            return
        job.activated = True
        job.deadline = time.monotonic() + self.health_timeout_s

    def _effective_playlist(self) -> list[str] | None:
        """The playlist asked for: the device's own document's, else the last group's (in name order) with one."""
        found: list[str] | None = None
        for source in sorted(s for s in self._desired if s.startswith("group:")):
            found = self._desired[source].playlist or found
        if "device" in self._desired and self._desired["device"].playlist:
            found = self._desired["device"].playlist
        return found

    def _sync_playlist(self) -> None:
        """Apply the playlist asked for through the target, once none of its plugins is still being installed."""
        want = self._effective_playlist()
        if want == self._playlist_tried or any(name in self._jobs for name in want or ()):
            return
        self._playlist_tried = want
        apply = getattr(self.target, "apply_playlist", None)
        if apply is None:
            log.info("the target cannot apply playlists", extra={"device": self.device_id, "playlist": want})
            return
        try:
            apply(list(want) if want is not None else None)
        except (EdgedError, ValueError) as exc:
            self._status("failed", reason="playlist", detail=f"playlist {want}: {exc}")
            self.errors += 1
            return
        self._playlist = want
        log.info("playlist applied", extra={"device": self.device_id, "playlist": want})
        self._publish_reported()

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

    def _tick(self) -> None:
        if self._reject_held and time.monotonic() >= self._reject_window_end:
            self._flush_rejections()
        if self._reported_dirty and self.connected.is_set():
            self._reported_dirty = False
            self._publish_reported()
        self._resubscribe_dropped()
        self._sync_playlist()
        now = time.monotonic()
        for job in list(self._jobs.values()):
            if job.state == "downloading" and now > job.deadline > 0:
                got = len(job.transfer.received())
                self._fail(
                    job,
                    "download_timeout",
                    f"{got}/{job.total} chunks after {self.download_timeout_s:g} s; the download is given up",
                )
                continue
            if job.state == "downloading" and now - job.last_progress > self.stall_s and self.connected.is_set():
                job.stalls += 1
                if job.stalls > self.max_stalls:
                    missing = job.transfer.missing()
                    last = f"; last: {job.last_error}" if job.last_error else ""
                    self._fail(
                        job,
                        "missing_chunk",
                        f"chunks {missing[:16]} never arrived: asked {self.max_stalls} times, {self.stall_s:g} s apart"
                        + last,
                    )
                    continue
                job.requested.clear()  # lost or dropped: ask again
                job.last_progress = now
                self._request_more(job)
            elif job.state == "activating":
                h = self.target.health(job.meta.name)
                if not job.activated or (h.version is not None and h.version != job.meta.version):
                    # what the target measures is not this version: it must never count as its health
                    if now > job.deadline:
                        self._rollback(job, "activation_failed", f"{job.meta.ref} is not running (runs {h.version})")
                elif h.strikes > 0 or not h.running:
                    self._rollback(job, "health_check", f"{h.strikes} strike(s): {h.last_error}")
                elif h.frames >= self.health_frames:
                    self._healthy(job)
                elif now > job.deadline:
                    self._rollback(
                        job, "health_check", f"only {h.frames}/{self.health_frames} frames in {self.health_timeout_s}s"
                    )

    def _healthy(self, job: _Job) -> None:
        name, version = job.meta.name, job.meta.version
        del self._jobs[name]
        if job.source in ("device",) or job.source.startswith("group:"):
            self._origin[name] = job.source
        self._pending.pop(name, None)
        self._save_state()
        self._gc()
        self._set_report(name, version, "healthy", None)
        self._status("healthy", name=name, version=version, percent=100)
        if job.cmd_id:
            self._reply(job.cmd_id, True, result={"version": version, "state": "healthy"})
        self._publish_reported()
        log.info("plugin healthy", extra={"device": self.device_id, "plugin": name, "version": version})

    def _rollback(self, job: _Job, reason: str, detail: str) -> None:
        name, version = job.meta.name, job.meta.version
        recorded = True
        if self._active_version(name) != version:
            # the store never made this version active: going back would roll the running version back instead
            self._fail(job, reason, detail)
            return
        try:
            self.store.rollback(name)
        except DiskFull as exc:
            recorded = False
            detail = f"{detail}; the store cannot record the rollback ({exc}), so it is checked again at start"
        except StoreError:
            self.store.remove(name)  # nothing to go back to
        if recorded:
            prev = self._active_version(name)
            if prev is None:
                self.target.deactivate(name)
            else:
                try:
                    self._start_active(name, raise_errors=True)
                except (PluginError, DeployError, ValueError, OSError):
                    log.exception("previous version failed to start", extra={"plugin": name, "version": prev})
        else:
            prev = self._run_previous(name)
        self._jobs.pop(name, None)
        if recorded:  # else the pending check stays on disk: the next start re-checks (and rolls back) again
            self._pending.pop(name, None)
        self._save_state()
        self._failed[(name, version, job.spec.allow_downgrade)] = job.request or self._request(job.source)
        self._save_state()
        self._set_report(name, prev, "rolled_back" if prev else "failed", reason, wanted=version)
        self._status("rolled_back" if prev else "failed", name=name, version=version, reason=reason, detail=detail)
        if job.cmd_id:
            self._reply(job.cmd_id, False, reason, detail)
        self._publish_reported()
        log.warning("rolled back", extra={"plugin": name, "version": version, "reason": reason, "detail": detail})

    def _run_previous(self, name: str) -> str | None:
        """Run the version before the active one on the target without writing the store (which is full)."""
        record = self.store.record(name)
        previous = record.versions.get(record.previous) if record is not None and record.previous else None
        if previous is None:
            self.target.deactivate(name)
            return None
        try:
            self.target.activate(
                name, previous.version, self.store.wasm_path(previous), self.store.runtime_manifest(previous)
            )
        except (PluginError, DeployError, ValueError, OSError):
            log.exception("previous version failed to start", extra={"plugin": name, "version": previous.version})
        return previous.version

    def _fail(self, job: _Job, reason: str, detail: str) -> None:
        name, version = job.meta.name, job.meta.version
        self._jobs.pop(name, None)
        if job.transfer is not None and reason != "missing_chunk":
            # a failed download is reclaimed: it must not hold the disk. One that only lacked chunks the network
            # did not deliver keeps them while a document still names it, so a re-deploy fetches only the rest;
            # it goes as soon as none does, or when another download needs the room (see _begin)
            with contextlib.suppress(OSError):
                job.transfer.discard()
        if reason == "disk_full":
            self._gc()
        self._failed[(name, version, job.spec.allow_downgrade)] = job.request or self._request(job.source)
        self._save_state()
        self._set_report(name, self._active_version(name), "failed", reason, wanted=version)
        self._status("failed", name=name, version=version, reason=reason, detail=detail)
        if job.cmd_id:
            self._reply(job.cmd_id, False, reason, detail)
        self._publish_reported()

    def _fail_early(
        self, spec: PluginSpec, source: str, cmd_id: str | None, reason: str, detail: str, topic: str
    ) -> None:
        self._failed[(spec.name, spec.version, spec.allow_downgrade)] = self._request(source)
        self._save_state()
        self._set_report(spec.name, self._active_version(spec.name), "failed", reason, wanted=spec.version)
        self._status("failed", name=spec.name, version=spec.version, reason=reason, detail=detail, topic=topic)
        if cmd_id:
            self._reply(cmd_id, False, reason, detail)
        self.errors += 1

    def _request(self, source: str) -> str:
        """Which request ``source`` stands for now: ``<source>#<seq>`` of its applied document, or the command."""
        return source if source.startswith("cmd:") else f"{source}#{self._applied.get(source, -1)}"

    def _abandon(self, job: _Job) -> None:
        self._jobs.pop(job.meta.name, None)
        if job.state == "activating":
            return  # the new version runs already; the reconcile that replaces it decides what next
        if job.transfer is not None:  # switched to another version mid-download: reclaim this one's chunks
            with contextlib.suppress(OSError):
                job.transfer.discard()

    def _gc(self) -> None:
        """The store's gc (old versions beyond ``keep``, unreferenced blobs, unwanted transfers); never raises."""
        try:
            self.store.gc(keep_transfers=self._transfers_wanted())
        except (StoreError, OSError) as exc:
            log.warning("store gc failed", extra={"device": self.device_id, "error": str(exc)})

    def _remove(self, name: str) -> None:
        if (job := self._jobs.pop(name, None)) is not None and job.transfer is not None and job.state == "downloading":
            job.transfer.discard()
        self.target.deactivate(name)
        with contextlib.suppress(StoreError):
            self.store.remove(name)
        self._origin.pop(name, None)
        self._report.pop(name, None)
        self._status("removed", name=name)
        self._save_state()

    # --- store / target helpers --------------------------------------------------------------------------------

    def _installed(self, name: str) -> list[Any]:
        return self.store.versions(name)

    def _active_names(self) -> list[str]:
        return sorted(self.store.installed())

    def _active_version(self, name: str) -> str | None:
        iv = self.store.active(name)
        return iv.version if iv is not None else None

    def _running_versions(self) -> dict[str, str]:
        return {n: v for n in self._active_names() if (v := self._active_version(n)) is not None}

    def _start_active(self, name: str, raise_errors: bool = False) -> None:
        iv = self.store.active(name)
        if iv is None:
            return
        try:
            self.target.activate(name, iv.version, self.store.wasm_path(iv), self.store.runtime_manifest(iv))
            self._report.setdefault(name, ReportedPlugin(version=iv.version, state="healthy"))
        except (PluginError, DeployError, ValueError) as exc:
            if raise_errors:
                raise
            log.error("cannot start stored plugin", extra={"plugin": name, "error": str(exc)})
            self._set_report(name, iv.version, "failed", "activation_failed")

    # --- reporting ---------------------------------------------------------------------------------------------

    def _publish(self, topic: str, payload: str | bytes, retain: bool = False) -> mqtt.MQTTMessageInfo:
        data = payload.encode() if isinstance(payload, str) else payload
        info = self.client.publish(topic, data, qos=1, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.out_dropped += 1
            if self.out_dropped == 1 or self.out_dropped % 1000 == 0:
                log.warning(
                    "outgoing queue full (the broker does not acknowledge): message dropped",
                    extra={"device": self.device_id, "topic": topic, "dropped": self.out_dropped},
                )
            if topic == topics.reported(self.device_id):
                self._reported_dirty = True  # sent again from _tick once the queue has room
        else:
            self.bytes_out += len(data) + len(topic)
        return info

    def _set_report(
        self, name: str, version: str | None, state: State, reason: str | None, wanted: str | None = None
    ) -> None:
        self._report[name] = ReportedPlugin(version=version, state=state, reason=reason, wanted=wanted)

    def _publish_reported(self) -> None:
        plugins = dict(self._report)
        for name, version in self._running_versions().items():
            if name not in plugins or plugins[name].version != version:
                plugins[name] = ReportedPlugin(version=version, state="healthy")
        for name, job in self._jobs.items():
            cur = plugins.get(name)
            plugins[name] = ReportedPlugin(
                version=cur.version if cur else None,
                state=job.state,
                wanted=job.meta.version,  # type: ignore[arg-type]
            )
        rep = Reported(
            device=self.device_id,
            groups=self.groups,
            plugins=plugins,
            applied=dict(self._applied),
            playlist=self._playlist,
        )
        self._publish(topics.reported(self.device_id), rep.model_dump_json(), retain=True)

    def plugin_versions(self) -> dict[str, tuple[str | None, str | None]]:
        """Each managed plugin's (installed version, version its desired state wants), for Home Assistant."""
        wanted = {n: spec.version for n, (spec, _) in self._wanted().items()}
        installed = {n: r.version for n, r in dict(self._report).items()}
        return {n: (installed.get(n), wanted.get(n)) for n in sorted(set(wanted) | set(installed))}

    def _status(self, state: State, **kw: Any) -> None:
        if state in ("healthy", "failed", "rolled_back", "rejected", "removed"):
            key = (state, str(kw.get("reason") or ""))
            self.outcomes[key] = self.outcomes.get(key, 0) + int(kw.get("count", 1))  # a coalesced burst: N
        st = Status(device=self.device_id, state=state, **kw)
        self._publish(topics.status(self.device_id), st.model_dump_json())

    def _reject(self, topic: str, reason: str, detail: str) -> None:
        """Report a refused message: one status each for the first ``REJECT_BURST`` in a window, then counted."""
        self.errors += 1
        now = time.monotonic()
        if now >= self._reject_window_end:
            self._flush_rejections()
            self._reject_window_end = now + REJECT_WINDOW_S
            self._reject_sent = 0
        if self._reject_sent < REJECT_BURST:
            self._reject_sent += 1
            log.warning("message rejected", extra={"device": self.device_id, "topic": topic[:256], "reason": reason})
            self._status("rejected", reason=reason, detail=detail, topic=topic)
            return
        held = self._reject_held.setdefault(reason, [0, topic, detail])
        held[0] += 1
        held[1], held[2] = topic, detail

    def _flush_rejections(self) -> None:
        """One status per reason for the rejections held back in the window that ended (with their ``count``)."""
        held, self._reject_held = self._reject_held, {}
        for reason, (count, topic, detail) in sorted(held.items()):
            log.warning(
                "messages rejected in a burst",
                extra={"device": self.device_id, "reason": reason, "count": count, "topic": topic[:256]},
            )
            self._status(
                "rejected", reason=reason, count=count, detail=f"{count} like this one; last: {detail}", topic=topic
            )

    def _reply(self, cmd_id: str | None, ok: bool, error: str | None = None, detail: str = "", **kw: Any) -> None:
        r = Reply(id=cmd_id, device=self.device_id, ok=ok, error=error, detail=detail, **kw)
        self._publish(topics.reply(self.device_id), r.model_dump_json())

    # --- persistent agent state (applied seqs, origins) --------------------------------------------------------

    def _load_state(self) -> None:
        try:
            raw = json.loads(self._state_file.read_text())
            self._applied = {str(k): int(v) for k, v in raw.get("applied", {}).items()}
            self._origin = {str(k): str(v) for k, v in raw.get("origin", {}).items()}
            self._pending = {
                str(k): {"version": str(v["version"]), "source": str(v["source"])}
                for k, v in raw.get("pending", {}).items()
            }
            self._failed = {(str(n), str(v), bool(d)): str(r) for n, v, d, r in raw.get("failed", [])}
            if isinstance(raw.get("transfers_wanted"), dict):
                self._wanted_hashes = {
                    str(k): [str(h) for h in v] for k, v in raw["transfers_wanted"].items() if isinstance(v, list)
                }
        except FileNotFoundError:
            pass
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            log.warning("agent state unreadable, starting afresh", extra={"error": str(exc)})

    def _save_state(self, required: bool = False) -> bool:
        """Write the agent's state file (atomically). A failed write (a full disk) is logged and the state stays in
        memory, to be written with the next change; with ``required`` it raises :class:`StoreError`/
        :class:`DiskFull` instead (for a write that must be durable before the next step)."""
        tmp = self._state_file.with_suffix(".tmp")
        failed = [[n, v, d, r] for (n, v, d), r in self._failed.items()]
        state: dict[str, Any] = {
            "applied": self._applied,
            "origin": self._origin,
            "pending": self._pending,
            "failed": failed,
        }
        if self._wanted_hashes is not None:
            state["transfers_wanted"] = self._wanted_hashes
        data = json.dumps(state).encode()
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._state_file)
            fsync_dir(self._state_file.parent)  # the rename itself must survive a power cut
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            err = self.store.write_error(f"cannot write the agent state {self._state_file}", exc, len(data))
            if required:
                raise err from exc
            log.error("agent state not saved", extra={"device": self.device_id, "error": str(err)})
            return False
        return True


def _unrepr(label: str) -> str:
    """The name inside a ``repr`` label made by :func:`split_bad_entries` (best effort)."""
    return label[1:-1] if len(label) >= 2 and label[0] == label[-1] == "'" else label


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
    return str(exc)[:500]


# --- command line: one agent over an emulated target ----------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, checkpoint: Callable[[str], None] | None = None) -> int:
    """``python -m edged.deploy.agent``: run one agent with an :class:`EmulatedTarget` until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m edged.deploy.agent", description=main.__doc__)
    p.add_argument("--device", required=True)
    p.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--store", required=True, type=Path, help="store directory")
    p.add_argument("--trust", required=True, type=Path, help="trust store JSON")
    p.add_argument("--policy", type=Path, help="device policy JSON (default: deny all but LEDs)")
    p.add_argument("--group", action="append", default=[])
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    p.add_argument("--health-frames", type=int, default=30)
    p.add_argument("--health-timeout", type=float, default=10.0)
    p.add_argument("--fps", type=float, default=60.0)
    p.add_argument("--stall", type=float, default=3.0, help="seconds without progress before asking again")
    p.add_argument("--window", type=int, default=16, help="chunks in flight")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    try:
        check_chunk_size(args.chunk_size)
    except ConfigError as exc:
        p.error(str(exc))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
    import signal

    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    agent.start()
    done.wait()
    agent.stop()
    target.close()
    if agent.dead.is_set():
        log.critical("exiting: the agent's worker died", extra={"device": args.device})
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
