"""A team's service in Python: only verified users may see /orders; Verimail's webhooks arrive
at /hooks/verimail. What Verimail's system test runs against a real stack
(tests/tests/system/clients.rs), and a template for your own.

    VERIMAIL_URL=http://127.0.0.1:8080 VERIMAIL_SERVICE_SECRET=… WEBHOOK_SECRET=whsec_… \\
        PORT=3001 python examples/orders.py
"""

import os
import threading

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request, Response

from verimail_client import Claims, RevocationFeed, TokenVerifier, WebhookVerificationError, WebhookVerifier
from verimail_client.fastapi import RequireVerified

GATEWAY = os.environ["VERIMAIL_URL"]
verifier = TokenVerifier(
    os.environ.get("VERIMAIL_AUDIENCE", "verimail"),
    keys_url=f"{GATEWAY}/.well-known/verimail-keys",
    leeway=float(os.environ.get("VERIMAIL_LEEWAY_SECONDS", "30")),
    revocations=RevocationFeed(f"{GATEWAY}/v1/revoked-sessions", secret=os.environ.get("VERIMAIL_SERVICE_SECRET"), interval=1),
)
require_verified = RequireVerified(verifier)
webhooks = WebhookVerifier(os.environ["WEBHOOK_SECRET"].split(","))
# Deliveries by webhook-id: a retry of one already stored changes nothing.
received: dict[str, dict] = {}
lock = threading.Lock()
app = FastAPI()


@app.get("/orders")
def orders(claims: Claims = Depends(require_verified)):
    return {"user_id": claims.user_id, "email": claims.email, "session_id": claims.session_id}


@app.post("/hooks/verimail", status_code=204)
async def hook(request: Request):
    # The raw body: the signature is over the bytes as sent.
    try:
        event = webhooks.verify(await request.body(), request.headers)
    except WebhookVerificationError as error:
        raise HTTPException(400, detail=str(error)) from None
    with lock:
        if request.headers["webhook-id"] not in received:
            received[request.headers["webhook-id"]] = event
            if event["type"] == "users.sessions_revoked":
                # Refused at once, before the next poll of the feed.
                verifier.feed.learn(event["data"]["session_ids"], event["data"]["tokens_expire_at"])
    return Response(status_code=204)


@app.get("/hooks/received")
def hooks_received():
    with lock:
        return [{"id": id, "type": event["type"], "data": event["data"]} for id, event in received.items()]


if __name__ == "__main__":
    verifier.feed.ready(30)
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "3001")), log_level="warning")
