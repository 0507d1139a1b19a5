"""What the agent tells the marketplace: statuses (with rejection bursts coalesced), command replies and the
retained reported state; and the counts ``/metrics`` shows."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from .. import topics
from ..messages import Reply, Reported, ReportedPlugin, State, Status

log = logging.getLogger("edged.deploy.agent")

#: rejection statuses sent one by one within ``REJECT_WINDOW_S``; beyond that a burst is coalesced: one status per
#: reason, with ``count``, when the window ends (a flood of junk costs a few statuses a second, not one per message)
REJECT_BURST = 20
REJECT_WINDOW_S = 1.0

#: the states that end an install or a message: counted in :attr:`Reporter.outcomes`
OUTCOMES: frozenset[State] = frozenset({"healthy", "failed", "rolled_back", "rejected", "removed"})


@dataclass
class HeldRejections:
    """Rejections of one reason held back in the current window."""

    count: int
    topic: str
    detail: str


class Reporter:
    """Publishes the agent's statuses, replies and reported state on ``client``.

    ``running`` gives the versions the store has active, ``in_progress`` each install's (state, version wanted),
    ``applied`` the seq applied per source: what :meth:`publish_reported` puts together with :attr:`report`."""

    def __init__(
        self,
        client: mqtt.Client,
        device_id: str,
        groups: list[str],
        *,
        running: Callable[[], Mapping[str, str]],
        in_progress: Callable[[], Mapping[str, tuple[State, str]]],
        applied: Callable[[], Mapping[str, int]],
    ) -> None:
        self.client = client
        self.device_id = device_id
        self.groups = groups
        self._running = running
        self._in_progress = in_progress
        self._applied = applied
        #: each plugin's last reported state (what runs, or why the version asked for does not)
        self.report: dict[str, ReportedPlugin] = {}
        #: the playlist applied through the target (None: the device's own)
        self.playlist: list[str] | None = None
        self.bytes_out = 0
        #: installs and rejected messages by outcome: (state, reason) -> count (``/metrics``)
        self.outcomes: dict[tuple[str, str], int] = {}
        #: publishes dropped because the MQTT client's outgoing queue was full
        self.out_dropped = 0
        #: errors reported: refused messages, failed checks before an install, the agent's internal errors
        self.errors = 0
        #: the reported state could not be queued: sent again by :meth:`tick`
        self.reported_dirty = False
        self._reject_window_end = 0.0
        self._reject_sent = 0
        #: rejections held back in this window, by reason
        self.held: dict[str, HeldRejections] = {}

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1; a full outgoing queue drops it (counted, and the reported state is sent again later)."""
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
                self.reported_dirty = True
        else:
            self.bytes_out += len(data) + len(topic)
        return info

    def tick(self, connected: bool) -> None:
        """Send what is due: held rejections once their window ended, a reported state that could not be queued."""
        if self.held and time.monotonic() >= self._reject_window_end:
            self.flush_rejections()
        if self.reported_dirty and connected:
            self.reported_dirty = False
            self.publish_reported()

    def status(self, state: State, **kw: Any) -> None:
        """A :class:`Status` on the status topic (``kw`` are its fields); outcomes are counted."""
        if state in OUTCOMES:
            key = (state, str(kw.get("reason") or ""))
            self.outcomes[key] = self.outcomes.get(key, 0) + int(kw.get("count", 1))  # a coalesced burst: N
        st = Status(device=self.device_id, state=state, **kw)
        self.publish(topics.status(self.device_id), st.model_dump_json())

    def reject(self, topic: str, reason: str, detail: str) -> None:
        """Report a refused message: one status each for the first ``REJECT_BURST`` in a window, then counted."""
        self.errors += 1
        now = time.monotonic()
        if now >= self._reject_window_end:
            self.flush_rejections()
            self._reject_window_end = now + REJECT_WINDOW_S
            self._reject_sent = 0
        if self._reject_sent < REJECT_BURST:
            self._reject_sent += 1
            log.warning("message rejected", extra={"device": self.device_id, "topic": topic[:256], "reason": reason})
            self.status("rejected", reason=reason, detail=detail, topic=topic)
            return
        held = self.held.setdefault(reason, HeldRejections(0, topic, detail))
        held.count += 1
        held.topic, held.detail = topic, detail

    def flush_rejections(self) -> None:
        """One status per reason for the rejections held back in the window that ended (with their ``count``)."""
        held, self.held = self.held, {}
        for reason, h in sorted(held.items()):
            log.warning(
                "messages rejected in a burst",
                extra={"device": self.device_id, "reason": reason, "count": h.count, "topic": h.topic[:256]},
            )
            detail = f"{h.count} like this one; last: {h.detail}"
            self.status("rejected", reason=reason, count=h.count, detail=detail, topic=h.topic)

    def reply(self, cmd_id: str | None, ok: bool, error: str | None = None, detail: str = "", **kw: Any) -> None:
        """A command's :class:`Reply` (``kw``: its ``result``)."""
        r = Reply(id=cmd_id, device=self.device_id, ok=ok, error=error, detail=detail, **kw)
        self.publish(topics.reply(self.device_id), r.model_dump_json())

    def set(self, name: str, version: str | None, state: State, reason: str | None, wanted: str | None = None) -> None:
        """Record ``name``'s reported state (sent with the next :meth:`publish_reported`)."""
        self.report[name] = ReportedPlugin(version=version, state=state, reason=reason, wanted=wanted)

    def publish_reported(self) -> None:
        """Publish the retained reported state: what runs, what is being installed, what failed."""
        plugins = dict(self.report)
        for name, version in self._running().items():
            if name not in plugins or plugins[name].version != version:
                plugins[name] = ReportedPlugin(version=version, state="healthy")
        for name, (state, wanted) in self._in_progress().items():
            cur = plugins.get(name)
            plugins[name] = ReportedPlugin(version=cur.version if cur else None, state=state, wanted=wanted)
        rep = Reported(
            device=self.device_id,
            groups=self.groups,
            plugins=plugins,
            applied=dict(self._applied()),
            playlist=self.playlist,
        )
        self.publish(topics.reported(self.device_id), rep.model_dump_json(), retain=True)
