"""Offline verification of Verimail's access tokens.

PASETO v4.public (Ed25519), the key named by its PASERK id (``k4.pid.…``) in the footer, the
keys fetched from the gateway's keys URL (``/.well-known/verimail-keys``) and fetched again
when a token names a key not seen yet (a rotation). The same checks as the Rust crate's
``TokenVerifier`` (libs/client/src/verify.rs).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pyseto
from pyseto import Paseto

if TYPE_CHECKING:
    from .revocations import RevocationFeed

ISSUER = "verimail"
"""The ``iss`` of Verimail's access tokens."""

_MAX_TOKEN_LENGTH = 4096
"""Tokens are a few hundred bytes; anything far longer is refused before any work."""

_MESSAGES = {
    "malformed": "is not a PASETO v4.public token with a key id",
    "unknown_key": "was signed with a key the issuer does not publish",
    "bad_signature": "has an invalid signature (altered, or not signed by the issuer)",
    "expired": "has expired",
    "not_yet_valid": "is not valid yet",
    "wrong_audience": "is for another audience",
    "wrong_issuer": "has another issuer",
    "missing_claim": "lacks a claim it must have",
    "keys_unavailable": "cannot be checked: the public keys could not be fetched",
    "revoked": "was revoked (its session ended: signed out, password changed, account deleted)",
    "revocations_unavailable": "cannot be checked for revocation: the feed has not answered",
}


class VerifyError(Exception):
    """A token that is not accepted; ``reason`` says why (the keys of the Rust crate's
    ``VerifyError``, in snake case)."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        message = f"the access token {_MESSAGES[reason]}"
        super().__init__(f"{message}: {detail}" if detail else message)

    @property
    def unavailable(self) -> bool:
        """The token cannot be checked now (the issuer or the feed does not answer): 503."""
        return self.reason in ("keys_unavailable", "revocations_unavailable")


@dataclass(frozen=True)
class Claims:
    """What a valid token says about its holder."""

    user_id: str
    """``sub``: the user's id (a UUID)."""
    email: str
    email_verified: bool
    """Whether the address was verified when the token was signed."""
    token_id: str
    audience: str
    issued_at: datetime
    expires_at: datetime
    session_id: str
    """``sid``: the session the token belongs to; revoked with it."""
    auth_time: datetime
    """When the password was last proven in that session."""


KeySource = Callable[[], list[tuple[str, str]]]
"""Lists the published keys: pairs of PASERK id (``k4.pid.…``) and key (``k4.public.…``)."""


def fetch_keys(url: str, fresh: bool = False, timeout: float = 5.0) -> list[tuple[str, str]]:
    """The keys document the gateway serves at ``/.well-known/verimail-keys``."""
    headers = {"accept": "application/json"}
    if fresh:
        headers["cache-control"] = "no-cache"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as answer:
            document = json.load(answer)
    except urllib.error.HTTPError as error:
        raise VerifyError("keys_unavailable", f"{url} answered {error.code}") from None
    except (OSError, ValueError) as error:
        raise VerifyError("keys_unavailable", f"{url}: {error}") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise VerifyError("keys_unavailable", f"{url} is not a keys document")
    listed = []
    for key in keys:
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str) or not isinstance(key.get("paserk"), str):
            raise VerifyError("keys_unavailable", f"{url} lists a key without kid and paserk")
        listed.append((key["kid"], key["paserk"]))
    return listed


def _time(claims: dict[str, Any], name: str) -> datetime:
    value = claims.get(name)
    if not isinstance(value, str):
        raise VerifyError("missing_claim", name)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise VerifyError("malformed", f"{name} is not RFC 3339") from None
    if at.tzinfo is None:
        raise VerifyError("malformed", f"{name} has no offset")
    return at


class TokenVerifier:
    """Verifies access tokens offline. One per process: it caches the keys and (with
    ``revocations``) follows the feed in a background thread until :meth:`close`.
    Thread-safe; ``verify`` blocks only to fetch keys (at start, after ``max_age``, and on an
    unknown key at most once per ``refetch_interval``)."""

    def __init__(
        self,
        audience: str,
        keys_url: str | None = None,
        keys: KeySource | None = None,
        leeway: float = 30,
        refetch_interval: float = 5,
        max_age: float = 300,
        revocations: RevocationFeed | None = None,
    ) -> None:
        """``audience``: auth-service's ACCESS_TOKEN_AUDIENCE. ``keys_url``: the gateway's
        ``/.well-known/verimail-keys`` (or ``keys``, a function listing them). ``leeway``:
        seconds the clocks may differ. ``revocations``: a :class:`RevocationFeed`."""
        if not audience:
            raise ValueError("audience is required")
        if keys is None:
            if not keys_url:
                raise ValueError("keys_url (the gateway's /.well-known/verimail-keys) or keys is required")
            url = keys_url
            keys = lambda: fetch_keys(url, fresh=self._fetched_at is not None)  # noqa: E731
        self.audience = audience
        self.feed = revocations
        self._source = keys
        self._leeway = timedelta(seconds=leeway)
        self._refetch_interval = refetch_interval
        self._max_age = max_age
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stops following the revocation feed."""
        if self.feed is not None:
            self.feed.close()

    def verify(self, token: str) -> Claims:
        """Checks ``token``: its key (fetching the keys when it names one not seen yet, at
        most once per refetch interval), signature, expiry and not-before (with the leeway),
        issuer, audience and revocation. Returns its claims; raises :class:`VerifyError`."""
        if self._fetched_at is None or time.monotonic() - self._fetched_at >= self._max_age:
            try:
                self._refetch()
            except VerifyError:
                # The keys held so far still serve, if any.
                if not self._keys:
                    raise
        try:
            claims = self.verify_offline(token)
        except VerifyError as error:
            if error.reason != "unknown_key":
                raise
            self._refetch()
            claims = self.verify_offline(token)
        if self.feed is not None:
            self.feed.check(claims.session_id)
        return claims

    def verify_offline(self, token: str) -> Claims:
        """As :meth:`verify` with the keys held now: no I/O, no revocation check."""
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_LENGTH or not token.startswith("v4.public."):
            raise VerifyError("malformed")
        try:
            parsed = pyseto.Token.new(token)
            kid = json.loads(parsed.footer).get("kid") if parsed.footer else None
        except Exception:
            raise VerifyError("malformed") from None
        if not isinstance(kid, str):
            raise VerifyError("malformed")
        key = self._keys.get(kid)
        if key is None:
            raise VerifyError("unknown_key")
        try:
            payload = Paseto.new().decode(key, token).payload
        except pyseto.VerifyError:
            raise VerifyError("bad_signature") from None
        except Exception:
            raise VerifyError("malformed") from None
        try:
            signed = json.loads(payload)
        except ValueError:
            raise VerifyError("malformed") from None
        if not isinstance(signed, dict):
            raise VerifyError("malformed")
        return self._claims(signed)

    def _claims(self, signed: dict[str, Any]) -> Claims:
        if signed.get("iss") != ISSUER:
            raise VerifyError("wrong_issuer")
        if signed.get("aud") != self.audience:
            raise VerifyError("wrong_audience")
        now = datetime.now(timezone.utc)
        expires_at = _time(signed, "exp")
        if now > expires_at + self._leeway:
            raise VerifyError("expired")
        if "nbf" in signed and now + self._leeway < _time(signed, "nbf"):
            raise VerifyError("not_yet_valid")

        def text(name: str) -> str:
            value = signed.get(name)
            if not isinstance(value, str):
                raise VerifyError("missing_claim", name)
            return value

        verified = signed.get("email_verified")
        if not isinstance(verified, bool):
            raise VerifyError("missing_claim", "email_verified")
        return Claims(
            user_id=text("sub"),
            email=text("email"),
            email_verified=verified,
            token_id=text("jti"),
            audience=self.audience,
            issued_at=_time(signed, "iat"),
            expires_at=expires_at,
            session_id=text("sid"),
            auth_time=_time(signed, "auth_time"),
        )

    def _refetch(self) -> None:
        """Fetches the keys, unless a fetch started less than the refetch interval ago."""
        with self._lock:
            now = time.monotonic()
            if self._attempted_at is not None and now - self._attempted_at < self._refetch_interval:
                return
            self._attempted_at = now
            keys = {}
            for kid, paserk in self._source():
                try:
                    keys[kid] = pyseto.Key.from_paserk(paserk)
                except Exception:
                    raise VerifyError("keys_unavailable", f"key {kid} is not a PASERK k4.public key") from None
                if keys[kid].header != b"v4.public.":
                    raise VerifyError("keys_unavailable", f"key {kid} is not a v4.public key")
            # Retired keys leave with the list that no longer has them.
            self._keys = keys
            self._fetched_at = time.monotonic()
