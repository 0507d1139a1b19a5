"""The shipped ACL (deploy/acl) on a real mosquitto with password users: device A can neither read B's topics nor
publish as the marketplace or as B, and the whole protocol still works for A within its own topics."""

from __future__ import annotations

import queue
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edged.deploy import topics
from edged.deploy.testing import Mosquitto
from tests.conftest import ROOT
from tests.support.harness import Broker, Harness, wait_for

PASSWORDS = {"market": "market-secret", "dev-a": "a-secret", "dev-b": "b-secret"}


def acl_text() -> str:
    """The shipped ACLs for a broker with ONE listener: the devices' (deploy/acl) and the marketplace's
    (deploy/acl-market; the shipped config gives each listener its own, see test_market_device_id.py)."""
    shipped = (ROOT / "deploy" / "acl").read_text() + "\n" + (ROOT / "deploy" / "acl-market").read_text()
    # provisioning appends each device's group memberships (see deploy/README.md)
    return shipped + "\nuser dev-a\ntopic read edged/v1/groups/lobby/desired\n"


class Client:
    """A plain paho client logged in as ``user`` that records what it receives."""

    def __init__(self, m: Mosquitto, user: str) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.seen: list[tuple[str, bytes]] = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"acl-test-{user}")
        self.c.username_pw_set(user, PASSWORDS[user])
        self.c.on_message = lambda c, u, msg: self.got.put((msg.topic, bytes(msg.payload)))
        ready = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: ready.set() if not rc.is_failure else None
        self.c.connect(m.host, m.port)
        self.c.loop_start()
        assert ready.wait(20), f"{user} could not connect"

    def subscribe(self, *topic_list: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe([(t, 1) for t in topic_list])
        assert done.wait(20)

    def publish(self, topic: str, payload: bytes = b"x") -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(20)

    def wait(self, pred: Callable[[str, bytes], bool]) -> None:
        """Collect messages until one matches ``pred`` (the positive control); the rest stay in ``seen``."""

        def poll() -> bool:
            while True:
                try:
                    t, p = self.got.get(timeout=0.05)
                except queue.Empty:
                    return False
                self.seen.append((t, p))
                if pred(t, p):
                    return True

        wait_for(poll, what="the control message")

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_device_cannot_read_other_devices_or_publish_as_marketplace(start_broker: Callable[..., Any]) -> None:
    m = start_broker(users=PASSWORDS, acl=acl_text())
    market, a = Client(m, "market"), Client(m, "dev-a")
    try:
        market.subscribe("edged/v1/#")
        # A tries to read B's topics (and everything)
        a.subscribe(topics.desired("dev-b"), topics.cmd("dev-b"), topics.chunks("dev-b"), "edged/v1/#")
        for t in (topics.desired("dev-b"), topics.cmd("dev-b"), topics.chunks("dev-b"), topics.group_desired("other")):
            market.publish(t, b"for B only")
        market.publish(topics.desired("dev-a"), b"control for A")
        a.wait(lambda t, p: p == b"control for A")
        assert all(p != b"for B only" for _, p in a.seen), a.seen
        # A tries to publish as the marketplace and as B
        forged = [
            topics.desired("dev-a"),
            topics.cmd("dev-a"),
            topics.desired("dev-b"),
            topics.cmd("dev-b"),
            topics.chunks("dev-a"),
            topics.chunks("dev-b"),
            topics.group_desired("lobby"),
            topics.reported("dev-b"),
            topics.status("dev-b"),
            topics.presence("dev-b"),
            topics.chunk_request("dev-b"),
        ]
        for t in forged:
            a.publish(t, b"forged by A")
        a.publish(topics.status("dev-a"), b"control from A")
        market.wait(lambda t, p: p == b"control from A")
        assert [t for t, p in market.seen if p == b"forged by A"] == []
        # and A may write everything that is its own
        own = [topics.reported("dev-a"), topics.presence("dev-a"), topics.reply("dev-a"), topics.chunk_request("dev-a")]
        for t in own:
            a.publish(t, b"own")
        a.publish(topics.status("dev-a"), b"control 2")
        market.wait(lambda t, p: p == b"control 2")
        assert sorted(t for t, p in market.seen if p == b"own") == sorted(own)
    finally:
        market.stop()
        a.stop()


def test_protocol_works_within_the_acl(start_broker: Callable[..., Any], tmp_path: Path) -> None:
    m = start_broker(users=PASSWORDS, acl=acl_text())
    h = Harness(tmp_path / "h", Broker(m.host, m.port, m.restart, m), passwords=PASSWORDS)
    try:
        h.publish("glow", "1.0.0")
        h.publish("spark", "1.0.0")
        h.agent("dev-a", groups=("lobby",))
        h.market.set_desired("device:dev-a", "glow", "1.0.0")
        h.market.set_desired("group:lobby", "spark", "1.0.0")
        h.wait_healthy("dev-a", "glow", "1.0.0")
        h.wait_healthy("dev-a", "spark", "1.0.0")
        cid = h.market.command("dev-a", "identify")
        assert wait_for(lambda: h.events.reply(cid), what="reply").ok
    finally:
        h.close()


def _tls_files(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a broker certificate for 127.0.0.1 (as deploy/README.md makes with openssl)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, broker_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("edged test CA", ca_key, "edged test CA", ca_key, True)
    leaf = cert("127.0.0.1", broker_key, "edged test CA", ca_key, False)
    d.mkdir(parents=True, exist_ok=True)
    paths = (d / "ca.crt", d / "broker.crt", d / "broker.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        broker_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def test_deploy_over_tls_with_passwords_and_acl(start_broker: Callable[..., Any], tmp_path: Path) -> None:
    ca, crt, key = _tls_files(tmp_path / "tls")
    m = start_broker(users=PASSWORDS, acl=acl_text(), tls=(ca, crt, key))
    h = Harness(tmp_path / "h", Broker(m.host, m.port, m.restart, m), passwords=PASSWORDS, ca_file=ca)
    try:
        h.publish("glow", "1.0.0")
        h.agent("dev-a")
        h.market.set_desired("device:dev-a", "glow", "1.0.0")
        h.wait_healthy("dev-a", "glow", "1.0.0")
    finally:
        h.close()
    # a client without the fleet CA cannot even connect
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="no-ca")
    c.tls_set()  # the system's CAs: the broker's certificate is not among them
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect(m.host, m.port)
