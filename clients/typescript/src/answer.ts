// What a protected route answers when a token does not pass: the same cases as the Rust
// crate's `RequireVerified`, in HTTP.

import { type Claims, type TokenVerifier, VerifyError } from './verifier.js'

/** The token of `authorization: Bearer <token>` (the scheme in any case). */
export function bearerToken(value: string | undefined): string | undefined {
  if (!value) return undefined
  const space = value.indexOf(' ')
  if (space < 0 || value.slice(0, space).toLowerCase() !== 'bearer') return undefined
  const token = value.slice(space + 1).trim()
  return token || undefined
}

/** A refusal: the HTTP status, headers and JSON body to answer with. */
export interface Refusal {
  status: 401 | 403 | 503
  headers: Record<string, string>
  body: { error: { code: string; message: string } }
}

/**
 * The claims of a request's bearer token if it verifies and says the address is verified;
 * otherwise the refusal: 401 without a valid token (WWW-Authenticate says why), 403
 * `email_not_verified` for an address not verified yet, 503 while tokens cannot be checked.
 */
export async function checkRequest(verifier: TokenVerifier, authorization: string | undefined): Promise<Claims | Refusal> {
  const token = bearerToken(authorization)
  if (!token) {
    return {
      status: 401,
      headers: { 'www-authenticate': 'Bearer' },
      body: { error: { code: 'unauthenticated', message: 'an access token is required: `authorization: Bearer <access token>` from SignIn' } },
    }
  }
  let claims: Claims
  try {
    claims = await verifier.verify(token)
  } catch (error) {
    const failure = error instanceof VerifyError ? error : new VerifyError('malformed')
    if (failure.unavailable) {
      return {
        status: 503,
        headers: { 'retry-after': '1' },
        body: { error: { code: 'unavailable', message: `cannot check access tokens now: ${failure.message}` } },
      }
    }
    return {
      status: 401,
      headers: { 'www-authenticate': `Bearer error="invalid_token", error_description="${failure.reason}"` },
      body: { error: { code: failure.reason, message: failure.message } },
    }
  }
  if (!claims.emailVerified) {
    return {
      status: 403,
      headers: {},
      body: { error: { code: 'email_not_verified', message: 'email: is not verified yet; verify it, then sign in again' } },
    }
  }
  return claims
}

export function isRefusal(answer: Claims | Refusal): answer is Refusal {
  return 'status' in answer && 'body' in answer
}
