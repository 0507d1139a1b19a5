"""The marketplace on the broker: signs and publishes desired state and commands, serves chunks, tracks devices.

:class:`Marketplace` is both what ``edged market serve`` runs (chunk requests in through a shared subscription,
served by :class:`~edged.market.chunks.ChunkServer`; device state into the catalog) and what the CLI uses to
publish. Every device message is validated; a bad one is logged and dropped, never trusted. Group membership comes
from the catalog's records, never from what a device claims.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from ..deploy import topics
from ..deploy.broker import BrokerConfig, make_client
from ..deploy.bundle import BundleMeta, compare_versions
from ..deploy.connection import ConnectionTracker, refusal
from ..deploy.messages import (
    ChunkRequest,
    Command,
    CommandOp,
    DesiredState,
    PluginSpec,
    Presence,
    Reply,
    Reported,
    ServicePresence,
    Status,
)
from ..deploy.trust import sign_envelope
from ..errors import BrokerRefused, CatalogError
from .catalog import Catalog, DesiredEntry, latest_before
from .chunks import ChunkServer

log = logging.getLogger("edged.market")

#: retained desired state must outlive a device's longest time offline; commands are for now
DESIRED_TTL_S = 90 * 24 * 3600.0
COMMAND_TTL_S = 300.0
#: the MQTT shared-subscription group of every ``serve``: each chunk request reaches one of them
SHARE_GROUP = "edged-market"

Listener = Callable[[str, str, Any], None]


def _hint(reason: Any, broker: BrokerConfig) -> str:
    """What to check for a refused CONNACK: the credentials, or the broker's ACL and config."""
    if getattr(reason, "value", None) in (4, 5, 134, 135):
        who = f"user {broker.username!r}" if broker.username else "no user name (anonymous)"
        return f"; check --username and --password (sent {who})"
    return ""


def target_topic(target: str) -> str:
    """The desired-state topic of ``device:<id>`` or ``group:<g>``."""
    kind, _, ident = target.partition(":")
    if kind == "device":
        return topics.desired(topics.check_id(ident))
    if kind == "group":
        return topics.group_desired(topics.check_id(ident, "group id"))
    raise ValueError(f"a target is 'device:<id>' or 'group:<g>', not {target!r}")


class Marketplace:
    """A connected marketplace. ``serve=True`` answers chunk requests; device state always lands in the catalog.

    ``add_listener(fn)`` gets ``fn(device_id, kind, message)`` for every valid ``presence``, ``reported``,
    ``status`` and ``reply`` message (on the network thread; keep it short). ``chunk_options`` go to
    :class:`~edged.market.chunks.ChunkServer` (bounds on data in flight, per-device rate, ...).
    """

    def __init__(
        self,
        catalog: Catalog,
        key: Ed25519PrivateKey,
        broker: BrokerConfig,
        *,
        serve: bool = True,
        client_id: str | None = None,
        desired_ttl_s: float = DESIRED_TTL_S,
        command_ttl_s: float = COMMAND_TTL_S,
        chunk_options: dict[str, Any] | None = None,
    ) -> None:
        self.catalog = catalog
        self.key = key
        self.broker = broker
        self.serve = serve
        self.desired_ttl_s = desired_ttl_s
        self.command_ttl_s = command_ttl_s
        self.client_id = client_id or f"edged-market-{secrets.token_hex(4)}"
        self.client = make_client(broker, topics.check_id(self.client_id, "client id"), clean_session=True)
        if serve:  # an empty retained last will clears this service's presence when it disappears
            self.client.will_set(topics.service(self.client_id), b"", qos=1, retain=True)
        #: other marketplace services answering chunk requests (from their retained presence)
        self.services: set[str] = set()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.connection = ConnectionTracker(log, broker.host, broker.port, client=self.client_id)
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self.connection.connect_failed
        self._refused: str | None = None
        self.connected = threading.Event()
        self._subscribed = threading.Event()
        self._listeners: list[Listener] = []
        self._info: dict[tuple[str, str], tuple[BundleMeta, dict[str, Any]]] = {}
        self._names: tuple[float, set[str]] = (0.0, set())
        self._lock = threading.Lock()
        self.replies: dict[str, Reply] = {}
        #: commands sent and not yet answered: id -> (device, when to stop waiting); only their replies are kept
        self._awaiting: dict[str, tuple[str, float]] = {}
        self.last_device_message = 0.0
        self.chunk_server = ChunkServer(catalog, self.client, **(chunk_options or {})) if serve else None

    @property
    def chunks_served(self) -> int:
        return self.chunk_server.stats.chunks if self.chunk_server else 0

    @property
    def bytes_served(self) -> int:
        return self.chunk_server.stats.bytes if self.chunk_server else 0

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Connect and subscribe; raises ``OSError`` if the broker cannot be reached, :class:`BrokerRefused` (with
        the broker's reason) if it refuses the connection, ``TimeoutError`` if it does not answer in time.
        Afterwards paho reconnects by itself, and every change of the connection is logged once."""
        self.connection.quiet = True  # until connected, the outcome is this method's to report
        self.connection.connecting()
        if self.chunk_server is not None:
            self.chunk_server.start()
        self.client.connect(self.broker.host, self.broker.port, keepalive=self.broker.keepalive)
        self.client.loop_start()
        end = time.monotonic() + timeout
        while not self._subscribed.wait(0.05):
            if self._refused is not None or time.monotonic() > end:
                self.client.disconnect()
                self.client.loop_stop()
                if self.chunk_server is not None:
                    self.chunk_server.stop()
                where = f"{self.broker.host}:{self.broker.port}"
                if self._refused is not None:
                    raise BrokerRefused(f"the MQTT broker at {where} refused the connection: {self._refused}")
                raise TimeoutError(f"no connection to the MQTT broker at {where}")
        self.connection.quiet = False  # from now on, every change is logged
        self.connection.announce()

    def stop(self) -> None:
        if self.chunk_server is not None:
            self.chunk_server.stop()
        if self.serve and self.connected.is_set():
            self.client.publish(topics.service(self.client_id), b"", qos=1, retain=True).wait_for_publish(5)
        self.connection.stopped()
        self.client.disconnect()
        self.client.loop_stop()

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def settle(self, quiet_s: float = 0.3, timeout: float = 5.0) -> None:
        """Wait until retained device messages stop arriving (so presence is known)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and time.monotonic() - self.last_device_message < quiet_s:
            time.sleep(0.05)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if not self._subscribed.is_set():
                self._refused = refusal(reason) + _hint(reason, self.broker)  # start() raises it, once
            self.connection.refused(reason)
            return
        self.connected.set()
        self.connection.connected()
        subs = [(topics.ALL_PRESENCE, 1), (topics.ALL_REPORTED, 1), (topics.ALL_STATUS, 1), (topics.ALL_REPLIES, 1)]
        subs.append((topics.ALL_SERVICES, 1))
        if self.serve:
            subs.append((f"$share/{SHARE_GROUP}/{topics.CHUNK_REQUESTS}", 1))
            online = ServicePresence(service=self.client_id)
            client.publish(topics.service(self.client_id), online.model_dump_json(), qos=1, retain=True)
        self.last_device_message = time.monotonic()
        client.subscribe(subs)
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connection.disconnected(reason)
        self.connected.clear()
        if self.chunk_server is not None:
            self.chunk_server.reset_client()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if self.chunk_server is not None:
            self.chunk_server.on_published(mid)

    # --- inbound -----------------------------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.startswith(topics.service("")):
            self._on_service(msg.topic.rsplit("/", 1)[-1], msg.payload)
            return
        device = topics.device_of(msg.topic)
        if device is None:
            return
        leaf = msg.topic.rsplit("/", 1)[-1]
        self.last_device_message = time.monotonic()
        try:
            if msg.topic == topics.chunk_request(device):
                req = ChunkRequest.model_validate_json(msg.payload)
                self._check_device(device, req.device)
                self._serve_chunks(device, req)
            elif leaf == "presence" and msg.payload:
                p = Presence.model_validate_json(msg.payload)
                self._check_device(device, p.device)
                # the groups a device claims are kept to show, never used for membership
                self.catalog.update_device(device, presence=p.state, groups=p.groups, last_seen=time.time())
                self._emit(device, "presence", p)
            elif leaf == "reported" and msg.payload:
                r = Reported.model_validate_json(msg.payload)
                self._check_device(device, r.device)
                self.catalog.update_device(
                    device, reported=r.model_dump(mode="json"), groups=r.groups, last_seen=time.time()
                )
                self._emit(device, "reported", r)
            elif leaf == "status":
                s = Status.model_validate_json(msg.payload)
                self._check_device(device, s.device)
                # only plugins the catalog publishes get a row, and at most MAX_STATUS_ROWS per device
                if s.name and s.name in self._plugin_names():
                    self.catalog.set_plugin_status(device, s.name, s.model_dump(mode="json"))
                self.catalog.update_device(device, last_seen=time.time())
                self._emit(device, "status", s)
            elif leaf == "reply":
                rep = Reply.model_validate_json(msg.payload)
                self._check_device(device, rep.device)
                if rep.id:
                    with self._lock:
                        # a reply is kept only for a command this process sent to that very device, once: a device
                        # cannot grow this table or answer for another device's command
                        awaited = self._awaiting.get(rep.id)
                        if awaited is not None and awaited[0] == device:
                            del self._awaiting[rep.id]
                            self.replies[rep.id] = rep
                self._emit(device, "reply", rep)
        except (ValidationError, ValueError) as exc:
            log.warning("bad device message", extra={"topic": msg.topic, "error": str(exc)[:300]})
        except Exception:
            log.exception("device message not handled", extra={"topic": msg.topic})

    def _plugin_names(self) -> set[str]:
        at, names = self._names
        if time.monotonic() - at > 2.0:
            names = self.catalog.plugin_names()
            self._names = (time.monotonic(), names)
        return names

    def _on_service(self, service: str, payload: bytes | bytearray) -> None:
        self.last_device_message = time.monotonic()
        if service == self.client_id:
            return
        if not payload:
            self.services.discard(service)
            return
        try:
            ServicePresence.model_validate_json(payload)
        except ValidationError as exc:
            log.warning("bad service presence", extra={"service": service, "error": str(exc)[:300]})
            return
        self.services.add(service)

    def chunk_service_running(self) -> bool:
        """Whether another marketplace service (``edged market serve``) on this broker answers chunk requests: its
        retained presence arrives right after connecting, so call :meth:`settle` first."""
        return bool(self.services)

    @staticmethod
    def _check_device(topic_device: str, claimed: str) -> None:
        if topic_device != claimed:
            raise ValueError(f"message on {topic_device}'s topic claims to be from {claimed}")

    def _emit(self, device: str, kind: str, message: Any) -> None:
        for fn in self._listeners:
            try:
                fn(device, kind, message)
            except Exception:
                log.exception("listener failed")

    def _serve_chunks(self, device: str, req: ChunkRequest) -> list[mqtt.MQTTMessageInfo]:
        """Hand a device's chunk request to the chunk server (served later, within its bounds)."""
        if self.chunk_server is not None:
            self.chunk_server.submit(device, req)
        return []

    # --- outbound ----------------------------------------------------------------------------------------------

    def bundle_info(self, name: str, version: str) -> tuple[BundleMeta, dict[str, Any]]:
        """A published bundle's metadata and manifest (cached: a published version never changes)."""
        info = self._info.get((name, version))
        if info is None:
            info = self.catalog.bundle_info(name, version)
            if info is None:
                raise CatalogError(f"{name}@{version} is not published")
            self._info[(name, version)] = info
        return info

    def desired_state(self, target: str) -> DesiredState:
        """The desired-state document of ``target`` built from the catalog."""
        entries, seq = self.catalog.get_desired(target)
        return self._document(target, entries, seq)

    def _document(self, target: str, entries: dict[str, DesiredEntry], seq: int) -> DesiredState:
        specs = []
        for name, entry in sorted(entries.items()):
            try:
                meta, manifest = self.bundle_info(name, entry.version)
            except CatalogError:
                raise CatalogError(f"{name}@{entry.version} is not in the catalog") from None
            specs.append(_spec(meta, manifest, entry.allow_downgrade))
        # the target is signed with the rest, so the document cannot be replayed onto another device or group
        return DesiredState(target=target, seq=seq, plugins=specs, playlist=self.catalog.get_playlist(target))

    def publish_desired(self, target: str, timeout: float = 20.0) -> int:
        """Sign ``target``'s current desired state and publish it retained; returns its seq.

        Waits for the broker's acknowledgement, then reads the seq again: if another writer committed a newer
        document meanwhile, it publishes that one too, so the retained message always ends on the newest seq even
        when two writers' publishes cross."""
        topic = target_topic(target)
        while True:
            entries, seq = self.catalog.get_desired(target)
            doc = self._document(target, entries, seq)
            env = sign_envelope(doc.model_dump(mode="json"), self.key, self.desired_ttl_s)
            info = self.client.publish(topic, env.model_dump_json(), qos=1, retain=True)
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise TimeoutError(f"the broker did not acknowledge {target}'s desired state within {timeout:g} s")
            if self.catalog.get_desired(target)[1] == seq:
                return seq

    def change_desired(self, target: str, change: Any, publish: bool = True) -> tuple[dict[str, DesiredEntry], int]:
        """Change ``target``'s desired entries with ``change(entries) -> entries | None`` under the target's row
        lock (the next seq), then publish. Returns the entries and seq."""
        target_topic(target)
        entries, seq = self.catalog.update_desired(target, change)
        if publish:
            self.publish_desired(target)
        return entries, seq

    def set_desired(
        self,
        target: str,
        name: str,
        version: str | None,
        allow_downgrade: bool = False,
        rollout: int | None = None,
    ) -> int:
        """Set (or with ``version=None`` drop) one plugin of ``target``'s desired state, and publish it; returns
        the document's seq."""
        if version is not None:
            self.bundle_info(name, version)  # published?

        def change(entries: dict[str, DesiredEntry]) -> dict[str, DesiredEntry]:
            if version is None:
                entries.pop(name, None)
            else:
                entries[name] = DesiredEntry(version=version, allow_downgrade=allow_downgrade, rollout=rollout)
            return entries

        return self.change_desired(target, change)[1]

    def set_playlist(self, target: str, items: list[str] | None) -> None:
        """Set (or with None drop) ``target``'s playlist, plugin names in play order, and publish its desired state.

        Raises ``ValueError`` for a name that cannot be a plugin name."""
        target_topic(target)
        if items is not None:
            items = DesiredState(target=target, seq=0, playlist=items).playlist  # the device's own check
        self.catalog.set_playlist(target, items or None)
        self.change_desired(target, lambda entries: entries)

    def rollback(self, name: str, target: str) -> str:
        """Point ``target`` back at the version of ``name`` before its current desired one; returns that version."""
        entries, _ = self.catalog.get_desired(target)
        if name not in entries:
            raise CatalogError(f"{target} has no desired version of {name} to roll back from")
        prev = latest_before(self.catalog.bundles(name), entries[name].version)
        if prev is None:
            raise CatalogError(f"no published version of {name} before {entries[name].version}")
        self.set_desired(target, name, prev.version, allow_downgrade=True)
        kind, _, ident = target.partition(":")
        if kind == "group":  # a group-wide change: members pinned on their own version follow it too
            self.end_pins(ident, name)
        return prev.version

    def end_pins(self, group: str, name: str, devices: list[str] | None = None) -> tuple[list[str], list[str]]:
        """Make every member of ``group`` (or those of ``devices``) follow the group's desired ``name`` again; call
        after moving the group.

        A member's own entry for ``name`` (a pin, e.g. left by a halted rollout) is dropped when the member is online:
        it has the group's document already, so it moves straight to the group's version. An offline (or never
        heard from) member's entry is replaced by the group's entry instead: its retained documents arrive in any
        order when it comes back, and dropping its own entry first would make it remove the plugin until the group's
        document arrived. Returns ``(dropped, replaced)``; a replaced entry ends at the next call or ``unpin``.
        """
        group_entries, _ = self.catalog.get_desired(f"group:{group}")
        entry = group_entries.get(name)
        online = {d.id for d in self.catalog.devices() if d.presence == "online"}
        dropped: list[str] = []
        replaced: list[str] = []
        for device in devices if devices is not None else self.group_members(group):
            own, _ = self.catalog.get_desired(f"device:{device}")
            if name not in own:
                continue
            if entry is None or device in online:
                self.set_desired(f"device:{device}", name, None)
                dropped.append(device)
            elif own[name] != entry:
                follow = entry.model_copy(update={"rollout": None})
                self.change_desired(f"device:{device}", lambda e, f=follow: {**e, name: f})
                replaced.append(device)
        if dropped or replaced:
            log.info("pins ended", extra={"group": group, "plugin": name, "dropped": dropped, "replaced": replaced})
        return dropped, replaced

    def unpin(self, device: str, name: str) -> str | None:
        """End ``device``'s own desired entry for ``name`` (a pin), so the device follows its groups for it again.

        Online, and when its groups' version is not lower than the pinned one, the entry is dropped. Otherwise it
        is replaced by the group's version, signed as an allowed downgrade when lower: an offline device then
        activates that version at boot (from its store when it still has it, nothing re-downloaded) instead of
        removing the plugin while its documents arrive, and a lower version is not refused as a downgrade. The
        replaced entry ends at the next group-wide change. Returns the version the device follows now (None: none
        of its groups names ``name``, so the plugin is removed). Raises ``CatalogError`` if the device has no
        entry of its own for ``name``."""
        target = f"device:{topics.check_id(device)}"
        own, _ = self.catalog.get_desired(target)
        if name not in own:
            raise CatalogError(f"device {device} has no desired entry of its own for {name}")
        group_entry: DesiredEntry | None = None
        for g in self.catalog.groups_of(device):
            e = self.catalog.get_desired(f"group:{g}")[0].get(name)
            if e is not None:
                group_entry = e
        rec = self.catalog.device(device)
        online = rec is not None and rec.presence == "online"
        if group_entry is None:
            self.set_desired(target, name, None)
            return None
        lower = compare_versions(group_entry.version, own[name].version) < 0
        if online and not lower:
            self.set_desired(target, name, None)
        else:
            follow = DesiredEntry(version=group_entry.version, allow_downgrade=group_entry.allow_downgrade or lower)
            self.change_desired(target, lambda e: {**e, name: follow})
        return group_entry.version

    def command(
        self,
        device: str,
        op: CommandOp,
        name: str | None = None,
        plugin: PluginSpec | None = None,
        from_version: str | None = None,
    ) -> str:
        """Send a signed command to one device; returns its correlation id (the reply lands in ``replies``).

        An ``install`` lets the device fetch that wasm for the command's lifetime. A ``rollback`` names the version
        it rolls back from (``from_version``, by default the one the device last reported running), so the device
        executes it at most once."""
        if plugin is not None:
            sha = str(plugin.meta.get("wasm_sha256", ""))
            self.catalog.grant_chunks(topics.check_id(device), sha, self.command_ttl_s + 3600)
        target = f"device:{topics.check_id(device)}"  # signed: the command cannot be replayed to another device
        if op == "rollback" and from_version is None and name:
            rec = self.catalog.device(device)
            reported = (rec.reported.get("plugins") or {}).get(name) if rec is not None else None
            # none reported: the device refuses the rollback and says why
            from_version = reported.get("version") if isinstance(reported, dict) else None
        cmd = Command(
            target=target,
            id=secrets.token_hex(8),
            op=op,
            name=name,
            plugin=plugin,
            from_version=from_version,
        )
        env = sign_envelope(cmd.model_dump(mode="json"), self.key, self.command_ttl_s)
        now = time.time()
        with self._lock:
            for cid in [c for c, (_, until) in self._awaiting.items() if until < now]:
                del self._awaiting[cid]
            self._awaiting[cmd.id] = (topics.check_id(device), now + self.command_ttl_s)
        self.client.publish(topics.cmd(topics.check_id(device)), env.model_dump_json(), qos=1).wait_for_publish(20)
        return cmd.id

    def spec(self, name: str, version: str, allow_downgrade: bool = False) -> PluginSpec:
        """The :class:`PluginSpec` of a published bundle (for ``install`` commands)."""
        meta, manifest = self.bundle_info(name, version)
        return _spec(meta, manifest, allow_downgrade)

    def group_members(self, group: str) -> list[str]:
        """The devices the marketplace records in ``group`` (``edged market group add``), never what devices claim."""
        return self.catalog.group_members(group)

    def offline_devices(self, devices: list[str]) -> list[str]:
        """Those of ``devices`` whose retained presence says ``offline`` (their last will, or a clean stop)."""
        wanted = set(devices)
        return [d.id for d in self.catalog.devices() if d.id in wanted and d.presence == "offline"]


def _spec(meta: BundleMeta, manifest: dict[str, Any], allow_downgrade: bool) -> PluginSpec:
    return PluginSpec(
        name=meta.name,
        version=meta.version,
        meta=meta.model_dump(mode="json"),
        manifest=manifest,
        allow_downgrade=allow_downgrade,
    )
