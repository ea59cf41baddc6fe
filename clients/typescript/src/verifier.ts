// Offline verification of Verimail's access tokens: PASETO v4.public (Ed25519), the key named by
// its PASERK id (`k4.pid.…`) in the footer, the keys fetched from the gateway's keys URL
// (`/.well-known/verimail-keys`) and refetched when a token names a key not seen yet (a
// rotation). The same checks as the Rust crate's `TokenVerifier` (libs/client/src/verify.rs).

import { ClaimValidationError, InspectFooter, PublicProtocol } from 'paseto'
import { ImportPublicKeyFactory, VerifyFactory, type PublicKey } from 'paseto/v4/public'
import { RevocationFeed, type RevocationFeedOptions } from './revocations.js'

const v4 = new PublicProtocol(VerifyFactory, ImportPublicKeyFactory)

/** The `iss` of Verimail's access tokens. */
export const ISSUER = 'verimail'

/** Tokens are a few hundred bytes; anything far longer is refused before any work. */
const MAX_TOKEN_LENGTH = 4096

/** Why a token is not accepted: the same reasons as the Rust crate's `VerifyError`. */
export type VerifyFailure =
  | 'malformed'
  | 'unknown_key'
  | 'bad_signature'
  | 'expired'
  | 'not_yet_valid'
  | 'wrong_audience'
  | 'wrong_issuer'
  | 'missing_claim'
  | 'keys_unavailable'
  | 'revoked'
  | 'revocations_unavailable'

const MESSAGES: Record<VerifyFailure, string> = {
  malformed: 'is not a PASETO v4.public token with a key id',
  unknown_key: 'was signed with a key the issuer does not publish',
  bad_signature: 'has an invalid signature (altered, or not signed by the issuer)',
  expired: 'has expired',
  not_yet_valid: 'is not valid yet',
  wrong_audience: 'is for another audience',
  wrong_issuer: 'has another issuer',
  missing_claim: 'lacks a claim it must have',
  keys_unavailable: 'cannot be checked: the public keys could not be fetched',
  revoked: 'was revoked (its session ended: signed out, password changed, account deleted)',
  revocations_unavailable: 'cannot be checked for revocation: the feed has not answered',
}

/** A token that is not accepted; `reason` says why. */
export class VerifyError extends Error {
  readonly reason: VerifyFailure

  constructor(reason: VerifyFailure, detail?: string) {
    super(`the access token ${MESSAGES[reason]}${detail ? `: ${detail}` : ''}`)
    this.name = 'VerifyError'
    this.reason = reason
  }

  /** The token cannot be checked now (the issuer or the feed does not answer): answer 503. */
  get unavailable(): boolean {
    return this.reason === 'keys_unavailable' || this.reason === 'revocations_unavailable'
  }
}

/** What a valid token says about its holder. */
export interface Claims {
  /** `sub`: the user's id (a UUID). */
  userId: string
  email: string
  /** Whether the address was verified when the token was signed. */
  emailVerified: boolean
  /** `jti`: this token's id. */
  tokenId: string
  audience: string
  issuedAt: Date
  expiresAt: Date
  /** `sid`: the session the token belongs to; revoked with it. */
  sessionId: string
  /** `auth_time`: when the password was last proven in that session. */
  authTime: Date
}

/** A published key: its PASERK id and the key itself. */
export interface PublishedKey {
  kid: string
  paserk: string
}

/** Where the keys come from: the keys URL (default), or any function that lists them. */
export type KeySource = () => Promise<PublishedKey[]>

export interface TokenVerifierOptions {
  /** auth-service's `ACCESS_TOKEN_AUDIENCE` (`verimail` unless the operator changed it). */
  audience: string
  /** The gateway's keys URL, e.g. `https://verify.example.com/.well-known/verimail-keys`. */
  keysUrl?: string
  /** Instead of `keysUrl`: a function that lists the keys. */
  keys?: KeySource
  /** How far the issuer's clock and this one may differ, in seconds (default 30). */
  leewaySeconds?: number
  /** At most one fetch of the keys per this many seconds, however many tokens name an unknown key (default 5). */
  refetchIntervalSeconds?: number
  /** How long fetched keys are used before they are fetched again, in seconds (default 300). */
  maxAgeSeconds?: number
  /** Follow the revocation feed: refuse the tokens of sessions that ended. */
  revocations?: RevocationFeedOptions | RevocationFeed
}

/** The keys document the gateway serves at `/.well-known/verimail-keys`. */
export async function fetchKeys(url: string, fresh = false): Promise<PublishedKey[]> {
  let response: Response
  try {
    response = await fetch(url, {
      headers: { accept: 'application/json', ...(fresh ? { 'cache-control': 'no-cache' } : {}) },
      signal: AbortSignal.timeout(5000),
    })
  } catch (error) {
    throw new VerifyError('keys_unavailable', `${url}: ${(error as Error).message}`)
  }
  if (!response.ok) {
    throw new VerifyError('keys_unavailable', `${url} answered ${response.status}`)
  }
  const document = (await response.json().catch(() => null)) as { keys?: unknown } | null
  if (!document || !Array.isArray(document.keys)) {
    throw new VerifyError('keys_unavailable', `${url} is not a keys document`)
  }
  return document.keys.map((key: { kid?: unknown; paserk?: unknown }) => {
    if (typeof key.kid !== 'string' || typeof key.paserk !== 'string') {
      throw new VerifyError('keys_unavailable', `${url} lists a key without kid and paserk`)
    }
    return { kid: key.kid, paserk: key.paserk }
  })
}

/**
 * Verifies access tokens offline. One instance per process: it caches the keys, and (with
 * `revocations`) polls the feed in the background until `close()`.
 */
export class TokenVerifier {
  readonly audience: string
  private readonly source: KeySource
  private readonly leeway: number
  private readonly refetchInterval: number
  private readonly maxAge: number
  private readonly revocations?: RevocationFeed
  private keys = new Map<string, PublicKey>()
  /** When the keys were last fetched (ms since the epoch; 0: never). */
  private fetchedAt = 0
  /** When a fetch was last started: at most one per refetch interval. */
  private attemptedAt = 0
  private inFlight?: Promise<void>

  constructor(options: TokenVerifierOptions) {
    if (!options.audience) throw new TypeError('audience is required')
    const { keysUrl, keys } = options
    if (keys) {
      this.source = keys
    } else if (keysUrl) {
      // A fetch forced by an unknown key asks caches in between for a fresh copy.
      this.source = () => fetchKeys(keysUrl, this.fetchedAt !== 0)
    } else {
      throw new TypeError('keysUrl (the gateway’s /.well-known/verimail-keys) or keys is required')
    }
    this.audience = options.audience
    this.leeway = options.leewaySeconds ?? 30
    this.refetchInterval = (options.refetchIntervalSeconds ?? 5) * 1000
    this.maxAge = (options.maxAgeSeconds ?? 300) * 1000
    const feed = options.revocations
    this.revocations = feed === undefined || feed instanceof RevocationFeed ? feed : new RevocationFeed(feed)
  }

  /** Stops following the revocation feed. */
  close(): void {
    this.revocations?.close()
  }

  /** The revocation feed this verifier follows, if any. */
  get feed(): RevocationFeed | undefined {
    return this.revocations
  }

  /**
   * Checks `token`: its key (fetching the keys when it names one not seen yet, at most once per
   * refetch interval), signature, expiry (with leeway), issuer, audience and revocation.
   * Resolves to its claims; rejects with a {@link VerifyError}.
   */
  async verify(token: string): Promise<Claims> {
    if (this.fetchedAt === 0 || Date.now() - this.fetchedAt >= this.maxAge) {
      // When the keys cannot be fetched, those held so far still serve (if any).
      await this.refetch().catch((error) => {
        if (this.keys.size === 0) throw error
      })
    }
    let claims: Claims
    try {
      claims = await this.verifyOffline(token)
    } catch (error) {
      if (!(error instanceof VerifyError) || error.reason !== 'unknown_key') throw error
      await this.refetch()
      claims = await this.verifyOffline(token)
    }
    this.revocations?.check(claims.sessionId)
    return claims
  }

  /** As {@link verify} with the keys held now: no I/O, no revocation check. */
  async verifyOffline(token: string): Promise<Claims> {
    if (typeof token !== 'string' || token.length > MAX_TOKEN_LENGTH || !token.startsWith('v4.public.')) {
      throw new VerifyError('malformed')
    }
    let kid: unknown
    try {
      kid = JSON.parse(new TextDecoder().decode(InspectFooter(token))).kid
    } catch {
      throw new VerifyError('malformed')
    }
    if (typeof kid !== 'string') throw new VerifyError('malformed')
    const key = this.keys.get(kid)
    if (!key) throw new VerifyError('unknown_key')
    let signed: Record<string, unknown>
    try {
      // paseto checks exp and nbf (with the leeway); the rest is checked below, to say why.
      signed = (await v4.Verify(key, token, { clockTolerance: this.leeway })).claims
    } catch (error) {
      if (error instanceof ClaimValidationError) {
        if (error.claim === 'exp') throw new VerifyError(error.message.startsWith('Missing') ? 'missing_claim' : 'expired', 'exp')
        if (error.claim === 'nbf') throw new VerifyError('not_yet_valid')
        if (error.claim === 'iat') throw new VerifyError('not_yet_valid', 'issued in the future')
        throw new VerifyError('malformed', error.message)
      }
      if (error instanceof Error && /signature/i.test(error.message)) throw new VerifyError('bad_signature')
      throw new VerifyError('malformed')
    }
    return this.claims(signed)
  }

  private claims(signed: Record<string, unknown>): Claims {
    if (signed.iss !== ISSUER) throw new VerifyError('wrong_issuer')
    if (signed.aud !== this.audience) throw new VerifyError('wrong_audience')
    const text = (name: string): string => {
      const value = signed[name]
      if (typeof value !== 'string') throw new VerifyError('missing_claim', name)
      return value
    }
    const time = (name: string): Date => {
      const at = new Date(text(name))
      if (Number.isNaN(at.getTime())) throw new VerifyError('malformed', `${name} is not RFC 3339`)
      return at
    }
    if (typeof signed.email_verified !== 'boolean') throw new VerifyError('missing_claim', 'email_verified')
    return {
      userId: text('sub'),
      email: text('email'),
      emailVerified: signed.email_verified,
      tokenId: text('jti'),
      audience: this.audience,
      issuedAt: time('iat'),
      expiresAt: time('exp'),
      sessionId: text('sid'),
      authTime: time('auth_time'),
    }
  }

  /** Fetches the keys, unless a fetch started less than the refetch interval ago. */
  private async refetch(): Promise<void> {
    if (this.inFlight) return this.inFlight
    if (this.attemptedAt !== 0 && Date.now() - this.attemptedAt < this.refetchInterval) return
    this.attemptedAt = Date.now()
    this.inFlight = (async () => {
      const listed = await this.source()
      const keys = new Map<string, PublicKey>()
      for (const { kid, paserk } of listed) {
        let key: PublicKey
        try {
          key = await v4.ImportPublicKey(paserk as `k4.public.${string}`)
        } catch {
          throw new VerifyError('keys_unavailable', `key ${kid} is not a PASERK k4.public key`)
        }
        keys.set(kid, key)
      }
      // Retired keys leave with the list that no longer has them.
      this.keys = keys
      this.fetchedAt = Date.now()
    })().finally(() => {
      this.inFlight = undefined
    })
    return this.inFlight
  }
}
