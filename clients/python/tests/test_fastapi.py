from datetime import datetime, timedelta, timezone

from conftest import SigningKey, iso, sign
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from verimail_client import Claims, TokenVerifier
from verimail_client.fastapi import RequireVerified


def app_with(verifier: TokenVerifier) -> TestClient:
    app = FastAPI()

    @app.get("/orders")
    def orders(claims: Claims = Depends(RequireVerified(verifier))):
        return {"user": claims.user_id, "email": claims.email}

    return TestClient(app)


def test_a_verified_holder_gets_through_with_the_claims(issuer):
    client = app_with(TokenVerifier("orders", keys_url=issuer.keys_url))
    token = sign(issuer.published[0])
    for header in [f"Bearer {token}", f"bearer  {token} "]:
        answer = client.get("/orders", headers={"authorization": header})
        assert answer.status_code == 200
        assert answer.json() == {"user": "0193f1c2-0000-7000-8000-000000000001", "email": "ann@example.com"}


def test_401_without_a_valid_token_saying_why(issuer):
    key = issuer.published[0]
    client = app_with(TokenVerifier("orders", keys_url=issuer.keys_url))
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    cases = [
        (None, "unauthenticated"),
        ("Basic dXNlcjpwYXNz", "unauthenticated"),
        ("Bearer ", "unauthenticated"),
        ("Bearer v4.public.nonsense", "malformed"),
        (f"Bearer {sign(key, {'exp': iso(an_hour_ago), 'nbf': None})}", "expired"),
        (f"Bearer {sign(key, {'aud': 'billing'})}", "wrong_audience"),
        (f"Bearer {sign(SigningKey())}", "unknown_key"),
    ]
    for authorization, code in cases:
        answer = client.get("/orders", headers={"authorization": authorization} if authorization else {})
        assert answer.status_code == 401, authorization
        assert answer.json()["detail"]["code"] == code, authorization
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_403_for_an_address_not_verified_yet(issuer):
    client = app_with(TokenVerifier("orders", keys_url=issuer.keys_url))
    answer = client.get("/orders", headers={"authorization": f"Bearer {sign(issuer.published[0], {'email_verified': False})}"})
    assert answer.status_code == 403
    assert answer.json()["detail"]["code"] == "email_not_verified"


def test_503_while_the_keys_cannot_be_fetched():
    client = app_with(TokenVerifier("orders", keys_url="http://127.0.0.1:9/.well-known/verimail-keys"))
    answer = client.get("/orders", headers={"authorization": f"Bearer {sign(SigningKey())}"})
    assert answer.status_code == 503
    assert answer.json()["detail"]["code"] == "unavailable"
    assert answer.headers["retry-after"] == "1"
