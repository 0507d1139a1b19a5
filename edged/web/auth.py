"""Who may read and who may change: the web credential, page sessions and cross-site request refusal.

The credential is a random token created at the daemon's first start (mode 0600 next to its state; ``edged ctl
token`` prints it). API clients send it as ``Authorization: Bearer <token>``. The page trades it once for a session
cookie (``HttpOnly``, ``SameSite=Strict``) and a CSRF token that it sends back in ``X-CSRF-Token`` on every change.

Rules: a change (any method but GET/HEAD) is refused when it comes from another origin (its ``Origin`` or
``Sec-Fetch-Site`` says so) or carries a body that is not JSON, wherever the server listens, so a web page cannot
drive a daemon on loopback either. When the server listens beyond loopback, a change also needs the credential,
and so does a read unless ``open_reads`` is set. A wrong credential is always refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("edged.web")

SESSION_COOKIE = "edged_session"
CSRF_HEADER = "x-csrf-token"
#: sessions kept at once (the oldest is forgotten first)
MAX_SESSIONS = 64


def load_or_create_token(path: Path) -> str:
    """The credential in ``path``, created (32 random bytes, URL-safe, file mode 0600) if there is none yet."""
    try:
        token = path.read_text().strip()
        if len(token) >= 16:
            return token
        log.warning("web credential file too short, making a new one", extra={"path": str(path)})
        path.unlink()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.info("web credential created", extra={"path": str(path)})
    return token


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the server to this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


class Guard:
    """Decides each request (see the module's rules). ``lan``: the server listens beyond loopback."""

    def __init__(self, token: str, *, lan: bool, open_reads: bool) -> None:
        self.token = token
        self.lan = lan
        self.open_reads = open_reads
        self._sessions: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def token_ok(self, given: str) -> bool:
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    def new_session(self) -> tuple[str, str]:
        """A fresh (session id, CSRF token) for a page that showed the credential."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = csrf
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return sid, csrf

    def drop_session(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def _csrf_of(self, sid: str) -> str | None:
        with self._lock:
            return self._sessions.get(sid)

    @property
    def reads_need_credential(self) -> bool:
        return self.lan and not self.open_reads

    def check(
        self,
        method: str,
        headers: dict[str, str],
        cookies: dict[str, str],
        *,
        host: str,
        scheme: str,
        exempt: bool = False,
    ) -> Refusal | None:
        """None if the request may go on, else why not. ``exempt``: the login itself (origin rules only)."""
        change = method not in ("GET", "HEAD", "OPTIONS")
        if change:
            refusal = _cross_site(headers, host, scheme)
            if refusal is not None:
                return refusal
            length = headers.get("content-length", "0")
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if (length not in ("", "0") or "transfer-encoding" in headers) and ctype != "application/json":
                return Refusal(415, f"a request body must be JSON (Content-Type: application/json), not {ctype!r}")
            if exempt:
                return None
        auth = headers.get("authorization", "")
        if auth:
            scheme_word, _, given = auth.partition(" ")
            if scheme_word.lower() != "bearer" or not given.strip():
                return Refusal(401, "Authorization must be 'Bearer <token>' (the token is shown by 'edged ctl token')")
            if not self.token_ok(given.strip()):
                return Refusal(403, "wrong credential (see 'edged ctl token' on the device)")
            return None
        sid = cookies.get(SESSION_COOKIE)
        csrf = self._csrf_of(sid) if sid else None
        if sid and csrf is None and ((change and self.lan) or (not change and self.reads_need_credential)):
            return Refusal(401, "session expired: enter the credential again")
        if change:
            if csrf is not None:
                if not hmac.compare_digest(headers.get(CSRF_HEADER, "").encode(), csrf.encode()):
                    return Refusal(403, "missing or wrong CSRF token (X-CSRF-Token)")
                return None
            if self.lan:
                return Refusal(401, "changing needs the credential (see 'edged ctl token' on the device)")
            return None
        if self.reads_need_credential and csrf is None:
            return Refusal(401, "reading needs the credential here (see 'edged ctl token', or set http.open_reads)")
        return None


def _cross_site(headers: dict[str, str], host: str, scheme: str) -> Refusal | None:
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return Refusal(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if origin == "null" or parts.netloc.lower() != host.lower() or parts.scheme != scheme:
            return Refusal(403, f"cross-origin request refused (Origin: {origin})")
    return None
