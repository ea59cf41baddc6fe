// A stand-in issuer for the offline tests: keys of its own, the keys document and the
// revocation feed served over real HTTP on 127.0.0.1.

import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { PublicProtocol } from 'paseto'
import { ExportPublicKeyFactory, GenerateKeyPairFactory, SignFactory, type SecretKey } from 'paseto/v4/public'

const v4 = new PublicProtocol(GenerateKeyPairFactory, SignFactory, ExportPublicKeyFactory)

export interface SigningKey {
  kid: string
  paserk: string
  secret: SecretKey
}

let made = 0
export async function signingKey(): Promise<SigningKey> {
  const { publicKey, secretKey } = await v4.GenerateKeyPair()
  made += 1
  return { kid: `k4.pid.test-key-${made}`, paserk: await v4.ExportPublicKey(publicKey), secret: secretKey }
}

export const ANN = {
  sub: '0193f1c2-0000-7000-8000-000000000001',
  email: 'ann@example.com',
  email_verified: true,
  sid: '0193f1c2-0000-7000-8000-0000000000aa',
}

/** A token as auth-service signs one, with `changes` to its claims (null removes one). */
export async function sign(
  key: SigningKey,
  changes: Record<string, unknown> = {},
  lifetimeSeconds = 900,
): Promise<string> {
  const now = Date.now()
  const claims: Record<string, unknown> = {
    ...ANN,
    iss: 'verimail',
    aud: 'orders',
    jti: `token-${now}-${Math.random()}`,
    iat: new Date(now).toISOString(),
    nbf: new Date(now).toISOString(),
    exp: new Date(now + lifetimeSeconds * 1000).toISOString(),
    auth_time: new Date(now).toISOString(),
    ...changes,
  }
  for (const [name, value] of Object.entries(claims)) if (value === null) delete claims[name]
  const footer = new TextEncoder().encode(JSON.stringify({ kid: key.kid }))
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return v4.Sign(key.secret, claims as any, { footer, addIssuedAt: false, ...(claims.exp ? {} : { nonExpiring: true }) })
}

/** The issuer's HTTP side: what it publishes can change while it runs. */
export class Issuer {
  published: SigningKey[] = []
  revoked: { session_id: string; tokens_expire_at: string }[] = []
  keyFetches = 0
  feedCalls: { after: string | null; authorization?: string }[] = []
  /** Answer the feed with this status instead (e.g. 503). */
  feedDown = false
  private server!: Server
  url = ''

  async start(): Promise<this> {
    this.server = createServer((request, response) => {
      const url = new URL(request.url ?? '/', 'http://x')
      if (url.pathname === '/.well-known/verimail-keys') {
        this.keyFetches += 1
        const keys = this.published.map(({ kid, paserk }) => ({ kid, paserk, current: false }))
        response.setHeader('content-type', 'application/json')
        response.end(JSON.stringify({ issuer: 'verimail', audience: 'orders', version: 'v4', purpose: 'public', keys }))
      } else if (url.pathname === '/v1/revoked-sessions') {
        this.feedCalls.push({ after: url.searchParams.get('after'), authorization: request.headers.authorization })
        if (this.feedDown) {
          response.statusCode = 503
          response.end(JSON.stringify({ error: { code: 'unavailable', message: 'down' } }))
          return
        }
        const after = Number(url.searchParams.get('after') ?? 0)
        const page = this.revoked.slice(after)
        response.setHeader('content-type', 'application/json')
        response.end(JSON.stringify({ revoked: page, cursor: this.revoked.length, more: false }))
      } else {
        response.statusCode = 404
        response.end()
      }
    })
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this
  }

  get keysUrl(): string {
    return `${this.url}/.well-known/verimail-keys`
  }

  get feedUrl(): string {
    return `${this.url}/v1/revoked-sessions`
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Waits until `check` holds, at most `limitMs`. */
export async function eventually(what: string, limitMs: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const until = Date.now() + limitMs
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`${what}: not within ${limitMs} ms`)
    await sleep(20)
  }
}
