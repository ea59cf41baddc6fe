"""The client side of Verimail for Python services: verify access tokens offline
(:class:`TokenVerifier`), honour revocations (:class:`RevocationFeed`), verify webhooks
(:class:`WebhookVerifier`); ``verimail_client.fastapi.RequireVerified`` for FastAPI."""

from .revocations import RevocationFeed
from .verifier import ISSUER, Claims, TokenVerifier, VerifyError, fetch_keys
from .webhooks import WebhookVerificationError, WebhookVerifier

__all__ = [
    "ISSUER",
    "Claims",
    "RevocationFeed",
    "TokenVerifier",
    "VerifyError",
    "WebhookVerificationError",
    "WebhookVerifier",
    "fetch_keys",
]
