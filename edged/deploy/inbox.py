"""The agent's inbound queue, bounded in messages and in bytes, and its reconnect back-off.

MQTT callbacks run on paho's network thread and only enqueue; the agent's worker drains the queue. Whoever can
publish on a device's topics (a compromised broker, or loose ACLs) can send faster than the worker verifies
signatures, so the queue must not grow without limit: :class:`Inbox` refuses a message that would take it over
``max_messages`` or ``max_bytes`` (tail drop: the newest message is dropped, what is queued stays), counts what it
dropped per kind, and keeps a high-water mark. What a drop costs is bounded by the protocol: a dropped chunk is asked
for again after ``stall_s``; a dropped desired state is retained on the broker, and the agent subscribes to its
topic again once the queue has room (at most every few seconds), so the broker sends it once more; a dropped command
gets no reply and the marketplace times out (the sender may send it again). Control events (``connected``) are never
dropped.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("edged.deploy.agent")

#: default bounds: 1,000 messages or 32 MiB, whichever comes first (a full chunk window of 16 x 127 KB is 2 MiB)
DEFAULT_MAX_MESSAGES = 1000
DEFAULT_MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class InboxStats:
    """What the inbox holds now, its peaks, and what it accepted and dropped."""

    messages: int
    bytes: int
    peak_messages: int
    peak_bytes: int
    accepted: int
    dropped: int
    dropped_bytes: int
    #: dropped messages by kind: ``desired``, ``cmd``, ``chunks``, ``other``
    dropped_by_kind: dict[str, int]


class Inbox:
    """A FIFO of ``(kind, topic, payload)`` bounded by ``max_messages`` and ``max_bytes`` (payload + topic)."""

    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("max_messages and max_bytes must be positive")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: deque[tuple[str, str, bytes, int]] = deque()
        self._cond = threading.Condition()
        self._bytes = 0
        self._peak_messages = 0
        self._peak_bytes = 0
        self._accepted = 0
        self._dropped = 0
        self._dropped_bytes = 0
        self._dropped_by_kind: Counter[str] = Counter()
        #: topics of retained-state messages (``desired``) dropped since the last ``take_dropped_desired``
        self._dropped_desired: set[str] = set()
        #: True while dropping: the first drop of a burst is logged (and reported once by the agent)
        self._overflowing = False
        self._burst_start = 0

    def put_control(self, kind: str) -> None:
        """Queue a control event; never dropped (it carries no payload)."""
        with self._cond:
            self._items.append((kind, "", b"", 0))
            self._cond.notify()

    def put(self, topic: str, payload: bytes, kind: str = "other") -> bool:
        """Queue a message; False (and counted as dropped) if it would exceed either bound."""
        size = len(payload) + len(topic)
        with self._cond:
            if len(self._items) + 1 > self.max_messages or self._bytes + size > self.max_bytes:
                self._dropped += 1
                self._dropped_bytes += size
                self._dropped_by_kind[kind] += 1
                if kind == "desired":
                    self._dropped_desired.add(topic)
                if not self._overflowing:
                    self._overflowing = True
                    self._burst_start = self._dropped
                    log.warning(
                        "inbound queue full: dropping messages",
                        extra={
                            "topic": topic,
                            "queued": len(self._items),
                            "queued_bytes": self._bytes,
                            "max_messages": self.max_messages,
                            "max_bytes": self.max_bytes,
                        },
                    )
                return False
            if self._overflowing:
                self._overflowing = False
                log.warning("inbound queue accepts again", extra={"dropped": self._dropped - self._burst_start + 1})
            self._items.append(("msg", topic, payload, size))
            self._bytes += size
            self._accepted += 1
            self._peak_messages = max(self._peak_messages, len(self._items))
            self._peak_bytes = max(self._peak_bytes, self._bytes)
            self._cond.notify()
            return True

    def get(self, timeout: float) -> tuple[str, str, bytes] | None:
        """The oldest item, waiting up to ``timeout`` seconds; None if there is none."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            kind, topic, payload, size = self._items.popleft()
            self._bytes -= size
            return kind, topic, payload

    def take_dropped_desired(self) -> set[str]:
        """The desired-state topics whose messages were dropped, once the queue is at most half full (else nothing);
        the agent subscribes to them again so the broker sends their retained documents once more."""
        with self._cond:
            full = len(self._items) * 2 > self.max_messages or self._bytes * 2 > self.max_bytes
            if full or not self._dropped_desired:
                return set()
            out, self._dropped_desired = self._dropped_desired, set()
            return out

    def empty(self) -> bool:
        with self._cond:
            return not self._items

    def stats(self) -> InboxStats:
        with self._cond:
            return InboxStats(
                messages=len(self._items),
                bytes=self._bytes,
                peak_messages=self._peak_messages,
                peak_bytes=self._peak_bytes,
                accepted=self._accepted,
                dropped=self._dropped,
                dropped_bytes=self._dropped_bytes,
                dropped_by_kind=dict(self._dropped_by_kind),
            )


class ReconnectBackoff:
    """How long the agent waits before reconnecting: exponential with full jitter, reset by a stable connection.

    A connection that ends within ``stable_s`` of being made counts as a failure, like a refused one, so the delay
    keeps growing (up to ``max_s``) while something keeps dropping the agent right after it connects, for example
    another client logging in with its client id on a broker without ``use_username_as_clientid``. Without that, the
    two clients would take the session from each other several times a second. The jitter spreads a fleet's
    reconnects after a broker restart.
    """

    def __init__(
        self,
        min_s: float = 0.5,
        max_s: float = 60.0,
        stable_s: float = 30.0,
        rng: random.Random | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.stable_s = stable_s
        self._rng = rng or random.Random()
        self._now = now
        self.failures = 0
        self._connected_at: float | None = None

    def connected(self) -> None:
        """The broker accepted the connection."""
        self._connected_at = self._now()

    def next_delay(self) -> float:
        """The connection ended (or was refused): the delay before the next attempt."""
        lasted = None if self._connected_at is None else self._now() - self._connected_at
        self._connected_at = None
        if lasted is not None and lasted >= self.stable_s:
            self.failures = 0
        self.failures += 1
        ceiling = min(self.max_s, self.min_s * 2 ** min(self.failures - 1, 30))
        return max(self.min_s, self._rng.uniform(ceiling / 2, ceiling))
