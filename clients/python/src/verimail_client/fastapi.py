"""FastAPI: a dependency that lets through only requests with a valid access token of a
verified address, answering as the Rust crate's ``RequireVerified`` does."""

from __future__ import annotations

from fastapi import Header, HTTPException

from .verifier import Claims, TokenVerifier, VerifyError


def bearer_token(value: str | None) -> str | None:
    """The token of ``authorization: Bearer <token>`` (the scheme in any case)."""
    if not value or " " not in value:
        return None
    scheme, token = value.split(" ", 1)
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class RequireVerified:
    """``Depends(RequireVerified(verifier))``: the caller's :class:`Claims`, or

    - 401 without a valid token (``detail.code`` says why: ``unauthenticated``, ``expired``,
      ``revoked``…; ``WWW-Authenticate: Bearer``),
    - 403 ``email_not_verified`` for an address not verified yet,
    - 503 while tokens cannot be checked (the keys or the feed do not answer).

    A plain function, so FastAPI runs it in its thread pool: fetching keys never blocks the
    event loop."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    def __call__(self, authorization: str | None = Header(default=None)) -> Claims:
        token = bearer_token(authorization)
        if token is None:
            raise HTTPException(
                401,
                detail={
                    "code": "unauthenticated",
                    "message": "an access token is required: `authorization: Bearer <access token>` from SignIn",
                },
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            claims = self.verifier.verify(token)
        except VerifyError as error:
            if error.unavailable:
                raise HTTPException(
                    503,
                    detail={"code": "unavailable", "message": f"cannot check access tokens now: {error}"},
                    headers={"Retry-After": "1"},
                ) from None
            raise HTTPException(
                401,
                detail={"code": error.reason, "message": str(error)},
                headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{error.reason}"'},
            ) from None
        if not claims.email_verified:
            raise HTTPException(
                403,
                detail={"code": "email_not_verified", "message": "email: is not verified yet; verify it, then sign in again"},
            )
        return claims
