"""Verimail's webhooks are Standard Webhooks (https://www.standardwebhooks.com): verified here
with the ``standardwebhooks`` package, against one secret or two while one is rotated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

__all__ = ["WebhookVerifier", "WebhookVerificationError"]


class WebhookVerifier:
    """Verifies deliveries: the signature over the exact bytes received, and a timestamp within
    five minutes. Give it the endpoint's secret (``whsec_…``), or the new and the old one while
    RotateWebhookSecret's overlap lasts."""

    def __init__(self, secrets: str | Sequence[str]) -> None:
        listed = [secrets] if isinstance(secrets, str) else list(secrets)
        if not listed:
            raise ValueError("at least one webhook secret is required")
        self._hooks = [Webhook(secret) for secret in listed]

    def verify(self, body: bytes | str, headers: Mapping[str, str]) -> dict[str, Any]:
        """The event (``type``, ``timestamp``, ``event_id``, ``data``) if ``body`` (the raw
        bytes, not re-serialized JSON) carries a valid signature by one of the secrets; raises
        WebhookVerificationError otherwise. Deduplicate on the ``webhook-id`` header: a
        delivery may arrive more than once."""
        plain = {name: headers.get(name) or "" for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        last: Exception | None = None
        for hook in self._hooks:
            try:
                return hook.verify(body, plain)
            except WebhookVerificationError as error:
                last = error
        raise last or WebhookVerificationError("no signature verified")
