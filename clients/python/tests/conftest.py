"""A stand-in issuer for the offline tests: keys of its own, the keys document and the
revocation feed served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pyseto
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ANN = {
    "sub": "0193f1c2-0000-7000-8000-000000000001",
    "email": "ann@example.com",
    "email_verified": True,
    "sid": "0193f1c2-0000-7000-8000-0000000000aa",
}
_made = itertools.count(1)


class SigningKey:
    def __init__(self) -> None:
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        self.secret = pyseto.Key.new(4, "public", pem)
        public = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public = pyseto.Key.new(4, "public", public)
        self.paserk = self.public.to_paserk()
        self.kid = self.public.to_paserk_id()
        assert self.kid.startswith("k4.pid.")


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def sign(key: SigningKey, changes: dict | None = None, lifetime: float = 900) -> str:
    """A token as auth-service signs one, with ``changes`` to its claims (None removes one)."""
    now = datetime.now(timezone.utc)
    claims = {
        **ANN,
        "iss": "verimail",
        "aud": "orders",
        "jti": str(uuid.uuid4()),
        "iat": iso(now),
        "nbf": iso(now),
        "exp": iso(now + timedelta(seconds=lifetime)),
        "auth_time": iso(now),
        **(changes or {}),
    }
    claims = {name: value for name, value in claims.items() if value is not None}
    token = pyseto.encode(key.secret, json.dumps(claims).encode(), footer=json.dumps({"kid": key.kid}).encode())
    return token.decode()


class Issuer:
    """The issuer's HTTP side: what it publishes can change while it runs."""

    def __init__(self) -> None:
        self.published: list[SigningKey] = []
        self.revoked: list[dict] = []
        self.key_fetches = 0
        self.feed_calls: list[tuple[str | None, str | None]] = []
        self.feed_down = False
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/.well-known/verimail-keys":
                    issuer.key_fetches += 1
                    keys = [{"kid": k.kid, "paserk": k.paserk, "current": False} for k in issuer.published]
                    self.answer(200, {"issuer": "verimail", "audience": "orders", "keys": keys})
                elif url.path == "/v1/revoked-sessions":
                    after = parse_qs(url.query).get("after", [None])[0]
                    issuer.feed_calls.append((after, self.headers.get("authorization")))
                    if issuer.feed_down:
                        self.answer(503, {"error": {"code": "unavailable", "message": "down"}})
                        return
                    page = issuer.revoked[int(after or 0) :]
                    self.answer(200, {"revoked": page, "cursor": len(issuer.revoked), "more": False})
                else:
                    self.answer(404, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.keys_url = f"{self.url}/.well-known/verimail-keys"
        self.feed_url = f"{self.url}/v1/revoked-sessions"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def issuer():
    running = Issuer()
    running.published = [SigningKey()]
    yield running
    running.stop()


def eventually(what: str, limit: float, check) -> None:
    until = time.monotonic() + limit
    while not check():
        if time.monotonic() > until:
            raise AssertionError(f"{what}: not within {limit} s")
        time.sleep(0.02)
