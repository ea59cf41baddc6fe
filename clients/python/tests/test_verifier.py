import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import Issuer, SigningKey, eventually, iso, sign

from verimail_client import RevocationFeed, TokenVerifier, VerifyError


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(VerifyError) as error:
        verifier.verify(token)
    return error.value.reason


def test_a_token_verifies_to_its_claims_and_an_altered_one_and_garbage_do_not(issuer):
    key = issuer.published[0]
    verifier = TokenVerifier("orders", keys_url=issuer.keys_url)
    token = sign(key)
    claims = verifier.verify(token)
    assert (claims.user_id, claims.email, claims.email_verified) == ("0193f1c2-0000-7000-8000-000000000001", "ann@example.com", True)
    assert claims.session_id == "0193f1c2-0000-7000-8000-0000000000aa"
    assert claims.audience == "orders"
    assert claims.expires_at > datetime.now(timezone.utc) + timedelta(seconds=890)
    at = len("v4.public.") + 20
    altered = token[:at] + ("B" if token[at] == "A" else "A") + token[at + 1 :]
    assert refused(verifier, altered) == "bad_signature"
    for garbage in ["", "v4.public.", "v4.local.abc", "hello", "x" * 5000, ".".join(token.split(".")[:3]) + ".bm90IGpzb24"]:
        assert refused(verifier, garbage) == "malformed", garbage[:20]


def test_expiry_and_not_before_with_the_leeway_audience_issuer_and_every_claim(issuer):
    key = issuer.published[0]
    strict = TokenVerifier("orders", keys_url=issuer.keys_url, leeway=0)
    lenient = TokenVerifier("orders", keys_url=issuer.keys_url, leeway=30)
    now = datetime.now(timezone.utc)
    expired = sign(key, {"exp": iso(now - timedelta(seconds=10)), "iat": iso(now - timedelta(seconds=100))})
    assert refused(strict, expired) == "expired"
    assert lenient.verify(expired).email == "ann@example.com", "10 s late, within 30 s of leeway"
    assert refused(lenient, sign(key, {"exp": iso(now - timedelta(seconds=60))})) == "expired"
    early = sign(key, {"nbf": iso(now + timedelta(seconds=10))})
    assert refused(strict, early) == "not_yet_valid"
    assert lenient.verify(early)
    assert refused(strict, sign(key, {"aud": "billing"})) == "wrong_audience"
    assert refused(strict, sign(key, {"iss": "someone-else"})) == "wrong_issuer"
    for claim in ["sub", "email", "email_verified", "jti", "sid", "auth_time", "exp"]:
        assert refused(strict, sign(key, {claim: None})) == "missing_claim", claim


def test_an_unknown_key_refetches_at_most_once_per_interval_rotation_is_learnt_retired_key_refused(issuer):
    old, new = issuer.published[0], SigningKey()
    verifier = TokenVerifier("orders", keys_url=issuer.keys_url, refetch_interval=0.3)
    by_old = sign(old)
    assert verifier.verify(by_old) and verifier.verify(by_old)
    assert issuer.key_fetches == 1, "cached after the first"
    stranger = sign(SigningKey())
    for _ in range(5):
        assert refused(verifier, stranger) == "unknown_key"
    assert issuer.key_fetches == 1, "an unknown key within the interval fetches nothing"

    # The issuer signs with a new key and still publishes the old one.
    issuer.published = [new, old]
    time.sleep(0.35)
    assert verifier.verify(sign(new)).email == "ann@example.com", "the new key is fetched"
    assert verifier.verify(by_old), "an old-key token after the rotation"
    assert issuer.key_fetches == 2

    # The old key is retired: its tokens verify nothing once the verifier has refetched.
    issuer.published = [new]
    time.sleep(0.35)
    assert refused(verifier, sign(SigningKey())) == "unknown_key"
    assert refused(verifier, by_old) == "unknown_key"
    assert verifier.verify(sign(new))


def test_keys_older_than_the_maximum_age_are_refetched_and_kept_while_the_issuer_is_down():
    flaky = Issuer()
    key = SigningKey()
    flaky.published = [key]
    verifier = TokenVerifier("orders", keys_url=flaky.keys_url, max_age=0.2, refetch_interval=0)
    token = sign(key)
    assert verifier.verify(token)
    time.sleep(0.25)
    assert verifier.verify(token)
    assert flaky.key_fetches == 2, "stale keys are fetched again"
    flaky.stop()
    time.sleep(0.25)
    assert verifier.verify(token), "the issuer is down: the keys held still serve"
    assert refused(TokenVerifier("orders", keys_url=flaky.keys_url), token) == "keys_unavailable"


def test_the_tokens_of_ended_sessions_are_refused_within_the_poll_interval(issuer):
    key = issuer.published[0]
    feed = RevocationFeed(issuer.feed_url, secret="orders-secret-0123456789", interval=0.1)
    verifier = TokenVerifier("orders", keys_url=issuer.keys_url, revocations=feed)
    try:
        feed.ready()
        token = sign(key)
        other = sign(key, {"sid": "0193f1c2-0000-7000-8000-0000000000bb"})
        assert verifier.verify(token)
        in_a_minute = iso(datetime.now(timezone.utc) + timedelta(minutes=1))
        issuer.revoked.append({"session_id": "0193f1c2-0000-7000-8000-0000000000aa", "tokens_expire_at": in_a_minute})

        def revoked() -> bool:
            try:
                verifier.verify(token)
                return False
            except VerifyError as error:
                return error.reason == "revoked"

        eventually("the revoked token is refused", 2, revoked)
        assert verifier.verify(other), "another session's token passes"
        assert issuer.feed_calls[-1][1] == "Bearer orders-secret-0123456789"
        eventually("polls on from the cursor", 2, lambda: any(after == "1" for after, _ in issuer.feed_calls))
        issuer.revoked.append({"session_id": "gone", "tokens_expire_at": iso(datetime.now(timezone.utc) - timedelta(seconds=1))})
        time.sleep(0.3)
        assert not feed.has("gone"), "a revocation whose tokens have all expired is forgotten"
        feed.learn(["0193f1c2-0000-7000-8000-0000000000bb"], in_a_minute)
        assert refused(verifier, other) == "revoked", "learnt from a users.sessions_revoked webhook"
    finally:
        verifier.close()


def test_fails_closed_past_the_maximum_lag_when_asked_to_and_open_otherwise(issuer):
    key = issuer.published[0]
    issuer.feed_down = True
    closed = TokenVerifier("orders", keys_url=issuer.keys_url, revocations=RevocationFeed(issuer.feed_url, interval=0.1, max_lag=0.3))
    open_ = TokenVerifier("orders", keys_url=issuer.keys_url, revocations=RevocationFeed(issuer.feed_url, interval=0.1))
    try:
        token = sign(key)
        time.sleep(0.4)
        assert refused(closed, token) == "revocations_unavailable"
        assert open_.verify(token), "without a maximum lag, what the feed said last still serves"
        assert "503" in (open_.feed.last_error or "")
        issuer.feed_down = False
        closed.feed.ready()
        assert closed.verify(token), "the feed answers again"
    finally:
        closed.close()
        open_.close()
