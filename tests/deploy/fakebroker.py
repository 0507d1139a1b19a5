"""A hostile MQTT 3.1.1 "broker" for tests: it accepts one client, grants its subscriptions, never acknowledges
the client's QoS-1 publishes (no PUBACK), and can push QoS-0 messages on any topic, subscribed or not."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import Counter


def _encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise EOFError
        buf += part
    return buf


class NonAckingBroker:
    """Listens on a free loopback port; ``ready`` is set once the client subscribed. ``received`` counts the
    client's PUBLISH packets by topic and ``sizes`` holds their sizes."""

    def __init__(self) -> None:
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.host, self.port = self.srv.getsockname()
        self.ready = threading.Event()
        self.received: Counter[str] = Counter()
        self.payloads: list[bytes] = []
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="non-acking-broker", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._conn, _ = self.srv.accept()
            while True:
                head = _recv_exact(self._conn, 1)[0]
                mult, n = 1, 0
                while True:
                    b = _recv_exact(self._conn, 1)[0]
                    n += (b & 127) * mult
                    mult *= 128
                    if not b & 128:
                        break
                body = _recv_exact(self._conn, n)
                kind = head >> 4
                if kind == 1:  # CONNECT -> CONNACK accepted
                    self._send(b"\x20\x02\x00\x00")
                elif kind == 8:  # SUBSCRIBE -> SUBACK, QoS 1 for each filter
                    pid, i, count = body[:2], 2, 0
                    while i < len(body):
                        i += 2 + struct.unpack(">H", body[i : i + 2])[0] + 1
                        count += 1
                    self._send(bytes([0x90]) + _encode_length(2 + count) + pid + b"\x01" * count)
                    self.ready.set()
                elif kind == 12:  # PINGREQ -> PINGRESP
                    self._send(b"\xd0\x00")
                elif kind == 3:  # PUBLISH from the client: recorded, never acknowledged
                    tlen = struct.unpack(">H", body[:2])[0]
                    topic = body[2 : 2 + tlen].decode(errors="replace")
                    qos = (head >> 1) & 3
                    with self._lock:
                        self.received[topic] += 1
                        self.payloads.append(body[2 + tlen + (2 if qos else 0) :])
        except (EOFError, OSError):
            return

    def _send(self, data: bytes) -> None:
        assert self._conn is not None
        with self._lock:
            self._conn.sendall(data)

    def publish(self, topic: str, payload: bytes) -> None:
        """Send the client a QoS-0 PUBLISH on ``topic``."""
        t = topic.encode()
        body = struct.pack(">H", len(t)) + t + payload
        self._send(bytes([0x30]) + _encode_length(len(body)) + body)

    def close(self) -> None:
        for s in (self._conn, self.srv):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        self._thread.join(5)
