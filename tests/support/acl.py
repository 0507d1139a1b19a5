"""The MQTT users of the shipped ACL (deploy/acl, deploy/acl-market) for tests on a real mosquitto: their passwords,
the ACL text, a recording client, and a throwaway CA with a broker certificate for TLS."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edged.deploy.testing import Mosquitto
from tests.conftest import ROOT
from tests.support.harness import wait_for

PASSWORDS = {"market": "market-secret", "dev-a": "a-secret", "dev-b": "b-secret"}


def acl_text() -> str:
    """The shipped ACLs for a broker with ONE listener: the devices' (deploy/acl) and the marketplace's
    (deploy/acl-market; the shipped config gives each listener its own, see tests/market/test_device_id.py)."""
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


def tls_files(d: Path) -> tuple[Path, Path, Path]:
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
