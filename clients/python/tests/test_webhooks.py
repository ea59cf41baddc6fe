import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook

from verimail_client import WebhookVerificationError, WebhookVerifier

OLD = "whsec_" + base64.b64encode(b"the old secret of the endpoint!!").decode()
NEW = "whsec_" + base64.b64encode(b"the new secret of the endpoint!!").decode()
BODY = json.dumps(
    {
        "type": "users.verified",
        "timestamp": "2026-12-05T09:00:00.000Z",
        "event_id": "0193f1c2-0000-7000-8000-0000000000ee",
        "data": {"user_id": "0193f1c2-0000-7000-8000-000000000001", "email": "ann@example.com"},
    }
)


def headers(secrets, at=None, body=BODY):
    """Headers as Verimail sends them: one signature per valid secret, separated by a space."""
    at = at or datetime.now(timezone.utc)
    signatures = [Webhook(secret).sign("msg_1", at, body) for secret in secrets]
    return {"webhook-id": "msg_1", "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": " ".join(signatures)}


def test_a_delivery_verifies_to_its_event():
    event = WebhookVerifier(NEW).verify(BODY.encode(), headers([NEW]))
    assert event["type"] == "users.verified"
    assert event["data"]["email"] == "ann@example.com"


def test_either_secret_while_one_is_rotated_on_either_side():
    assert WebhookVerifier(OLD).verify(BODY, headers([NEW, OLD])), "a receiver still holding the old secret"
    assert WebhookVerifier([NEW, OLD]).verify(BODY, headers([OLD])), "a receiver given the new one first"


def test_an_altered_body_another_secret_a_stale_timestamp_and_missing_headers_are_refused():
    verifier = WebhookVerifier(NEW)
    stale = datetime.now(timezone.utc) - timedelta(minutes=10)
    for body, given in [
        (BODY.replace("ann@", "eve@"), headers([NEW])),
        (BODY, headers([OLD])),
        (BODY, headers([NEW], at=stale)),
        (BODY, {}),
    ]:
        with pytest.raises(WebhookVerificationError):
            verifier.verify(body, given)
