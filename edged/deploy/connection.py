"""The state of an MQTT connection, as a user needs to see it: logged once on every change, readable at any time.

States: ``connecting`` (started, no answer yet), ``connected``, ``disconnected`` (was connected; the reason says
how it ended), ``unreachable`` (no TCP connection to the broker: down, wrong host or port, a firewall),
``refused`` (the broker answered and said no: the CONNACK reason, such as "Not authorized" or "Bad user name or
password") and ``stopped``. paho keeps reconnecting in every state but ``stopped``; a refusal repeated with the same
reason, or a broker that stays unreachable, is not logged again.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

State = Literal["connecting", "connected", "disconnected", "unreachable", "refused", "stopped"]

_LEVEL = {
    "connecting": logging.INFO,
    "connected": logging.INFO,
    "disconnected": logging.WARNING,
    "unreachable": logging.WARNING,
    "refused": logging.ERROR,
    "stopped": logging.INFO,
}


@dataclass(frozen=True)
class MqttState:
    """One connection's state: where to, since when (Unix time), why (for every state but ``connected``), and how
    many times it connected so far."""

    state: State
    broker: str
    since: float
    reason: str | None = None
    connects: int = 0

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def refusal(reason: Any) -> str:
    """A CONNACK refusal in words, with its code: ``Not authorized (code 135)``."""
    value = getattr(reason, "value", None)
    return f"{reason} (code {value})" if value is not None else str(reason)


class ConnectionTracker:
    """Follows one paho client's connection (call the methods from its callbacks) and logs each change on ``log``
    with ``extra`` context (the device, the broker, the reason)."""

    def __init__(self, log: logging.Logger, host: str, port: int, **extra: str) -> None:
        self.log = log
        self.host, self.port = host, port
        self.extra = extra
        self._lock = threading.Lock()
        self._state = MqttState("stopped", f"{host}:{port}", time.time())
        #: follow the state without logging it (while a caller reports the outcome itself)
        self.quiet = False

    @property
    def state(self) -> MqttState:
        with self._lock:
            return self._state

    def _set(self, state: State, reason: str | None = None, connected: bool = False) -> None:
        with self._lock:
            old = self._state
            if old.state == "stopped" and state != "connecting":
                return  # a callback after stop(): the connection is over as far as anyone cares
            if old.state == state and old.reason == reason:
                return  # the same again (a retry refused for the same reason): said once already
            self._state = MqttState(state, old.broker, time.time(), reason, old.connects + int(connected))
        if not self.quiet:
            self.announce()

    def announce(self) -> None:
        """Log the current state."""
        now = self.state
        state, reason = now.state, now.reason
        message = {
            "connecting": "MQTT connecting",
            "connected": "MQTT connected",
            "disconnected": "MQTT disconnected",
            "unreachable": "MQTT broker unreachable",
            "refused": "MQTT connection refused by the broker",
            "stopped": "MQTT stopped",
        }[state]
        extra = {**self.extra, "broker": now.broker, **({"reason": reason} if reason else {})}
        self.log.log(_LEVEL[state], message, extra=extra)

    def connecting(self) -> None:
        self._set("connecting")

    def connected(self) -> None:
        self._set("connected", connected=True)

    def refused(self, reason: Any) -> None:
        self._set("refused", refusal(reason))

    def disconnected(self, reason: Any) -> None:
        if self.state.state in ("refused", "unreachable"):
            return  # paho's disconnect after a refused CONNACK: the refusal says more
        value = getattr(reason, "value", 0)
        self._set("disconnected", "closed by this side" if value == 0 else f"connection lost: {reason}")

    def connect_failed(self, *_args: Any) -> None:
        """paho's ``on_connect_fail``: no TCP connection. It does not say why, so one probe (only when the state
        changes, never per retry) finds out."""
        if self.state.state == "unreachable":
            return
        self._set("unreachable", self._probe())

    def stopped(self) -> None:
        self._set("stopped")

    def _probe(self) -> str:
        try:
            with socket.create_connection((self.host, self.port), timeout=2):
                return "the connection failed, then succeeded on a retry"
        except OSError as exc:
            return exc.strerror or str(exc) or type(exc).__name__
