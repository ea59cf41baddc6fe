"""The sessions that ended, as a verifier learns them.

It polls the gateway's ``/v1/revoked-sessions`` (UserService/ListRevokedSessions as JSON) with
its service credential and refuses every token whose ``sid`` names one, until that session's
last token has expired anyway. The contract: docs/events.md, "Revocation".
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from datetime import datetime

from .verifier import VerifyError


def _instant(value: str | datetime) -> float:
    at = value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
    return at.timestamp()


class RevocationFeed:
    """Follows the feed in a daemon thread, every ``interval`` seconds (1 keeps a revoked token
    alive about a second longer). With ``max_lag``, fail closed: once the feed has not
    answered for that many seconds (or never has, that long after start), every token is
    refused (``revocations_unavailable``); without it, tokens are checked against what the feed
    said last."""

    def __init__(self, url: str, secret: str | None = None, interval: float = 1.0, max_lag: float | None = None) -> None:
        """``url``: the gateway's ``/v1/revoked-sessions``. ``secret``: your service's secret
        (a service granted ``revocations``, or APP_SERVICE_TOKEN)."""
        self._url = url
        self._secret = secret
        self._interval = interval
        self._max_lag = max_lag
        self._started = time.monotonic()
        self._sessions: dict[str, float] = {}
        self._lock = threading.Lock()
        self._cursor = 0
        self._answered_at: float | None = None
        self._answered = threading.Event()
        self._stop = threading.Event()
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="verimail-revocations", daemon=True)
        self._thread.start()

    def ready(self, timeout: float = 10.0) -> None:
        """Returns once the feed has answered; raises TimeoutError after ``timeout`` seconds."""
        if not self._answered.wait(timeout):
            raise TimeoutError(f"the revocation feed has not answered: {self.last_error or 'no answer yet'}")

    def close(self) -> None:
        """Stops polling."""
        self._stop.set()

    @property
    def age(self) -> float | None:
        """Seconds since the feed last answered (None before its first answer)."""
        return None if self._answered_at is None else time.monotonic() - self._answered_at

    def has(self, session_id: str) -> bool:
        """Whether the session ended (and its tokens may still be live)."""
        with self._lock:
            expires = self._sessions.get(session_id)
        return expires is not None and expires > time.time()

    def learn(self, session_ids: Iterable[str], tokens_expire_at: str | datetime) -> None:
        """Learn ended sessions from elsewhere, say a ``users.sessions_revoked`` webhook:
        refused at once, before the next poll."""
        expires = _instant(tokens_expire_at)
        if expires <= time.time():
            return
        with self._lock:
            for session_id in session_ids:
                self._sessions[session_id] = max(expires, self._sessions.get(session_id, 0))

    def check(self, session_id: str) -> None:
        """Raises ``revoked`` for an ended session, ``revocations_unavailable`` past the
        maximum lag."""
        if self._max_lag is not None:
            age = time.monotonic() - (self._answered_at if self._answered_at is not None else self._started)
            if age > self._max_lag:
                raise VerifyError("revocations_unavailable", f"no answer for {int(age)} s")
        if self.has(session_id):
            raise VerifyError("revoked")

    def _fetch(self) -> dict:
        query = urllib.parse.urlencode({"after": self._cursor})
        headers = {"accept": "application/json"}
        if self._secret:
            headers["authorization"] = f"Bearer {self._secret}"
        request = urllib.request.Request(f"{self._url}?{query}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as error:
            try:
                message = json.load(error).get("error", {}).get("message", error.reason)
            except Exception:
                message = error.reason
            raise OSError(f"{error.code}: {message}") from None

    def _run(self) -> None:
        while not self._stop.is_set():
            more = False
            try:
                page = self._fetch()
                now = time.time()
                with self._lock:
                    for session_id in [s for s, expires in self._sessions.items() if expires <= now]:
                        del self._sessions[session_id]
                    for session in page["revoked"]:
                        expires = _instant(session["tokens_expire_at"])
                        if expires > now:
                            self._sessions[session["session_id"]] = expires
                self._cursor = int(page["cursor"])
                more = bool(page["more"])
                self._answered_at = time.monotonic()
                self.last_error = None
                self._answered.set()
            except (OSError, ValueError, KeyError, TypeError) as error:
                self.last_error = str(error)
            if not more:
                self._stop.wait(self._interval)

