import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import express from 'express'
import Fastify from 'fastify'
import { TokenVerifier } from '../src/index.js'
import { requireVerified as expressRequireVerified } from '../src/express.js'
import { requireVerified as fastifyRequireVerified } from '../src/fastify.js'
import { Issuer, sign, signingKey, type SigningKey } from './helpers.js'

/** What each framework answers, over real HTTP. */
async function call(base: string, authorization?: string) {
  const response = await fetch(`${base}/orders`, { headers: authorization ? { authorization } : {} })
  return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, any> }
}

describe('requireVerified answers as RequireVerified does', () => {
  let issuer: Issuer
  let key: SigningKey
  let verifier: TokenVerifier
  const servers: { name: string; base: string; close: () => Promise<void> }[] = []

  before(async () => {
    issuer = await new Issuer().start()
    key = await signingKey()
    issuer.published = [key]
    verifier = new TokenVerifier({ audience: 'orders', keysUrl: issuer.keysUrl })

    const app = express()
    app.get('/orders', expressRequireVerified(verifier), (req, res) => {
      res.json({ user: req.verimail!.userId, email: res.locals.verimail.email })
    })
    const server = await new Promise<import('node:http').Server>((resolve) => {
      const listening = app.listen(0, '127.0.0.1', () => resolve(listening))
    })
    servers.push({
      name: 'express',
      base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      close: () => new Promise((resolve) => server.close(() => resolve())),
    })

    const fastify = Fastify()
    fastify.get('/orders', { preHandler: fastifyRequireVerified(verifier) }, async (request) => ({
      user: request.verimail!.userId,
      email: request.verimail!.email,
    }))
    const base = await fastify.listen({ port: 0, host: '127.0.0.1' })
    servers.push({ name: 'fastify', base, close: () => fastify.close() })
  })
  after(async () => {
    for (const server of servers) await server.close()
    await issuer.stop()
  })

  it('lets a verified holder through with the claims', async () => {
    const token = await sign(key)
    for (const { name, base } of servers) {
      const answer = await call(base, `Bearer ${token}`)
      assert.equal(answer.status, 200, name)
      assert.deepEqual(answer.body, { user: '0193f1c2-0000-7000-8000-000000000001', email: 'ann@example.com' }, name)
      assert.equal((await call(base, `bearer  ${token} `)).status, 200, `${name}: the scheme in any case`)
    }
  })

  it('answers 401 without a valid token, saying why', async () => {
    const expired = await sign(key, { exp: new Date(Date.now() - 3_600_000).toISOString(), iat: new Date(Date.now() - 7_200_000).toISOString(), nbf: null })
    const cases: [string | undefined, string][] = [
      [undefined, 'unauthenticated'],
      ['Basic dXNlcjpwYXNz', 'unauthenticated'],
      ['Bearer ', 'unauthenticated'],
      ['Bearer v4.public.nonsense', 'malformed'],
      [`Bearer ${expired}`, 'expired'],
      [`Bearer ${await sign(key, { aud: 'billing' })}`, 'wrong_audience'],
      [`Bearer ${await sign(await signingKey())}`, 'unknown_key'],
    ]
    for (const { name, base } of servers) {
      for (const [authorization, code] of cases) {
        const answer = await call(base, authorization)
        assert.equal(answer.status, 401, `${name} ${authorization}`)
        assert.equal(answer.body.error.code, code, `${name} ${authorization}`)
        assert.match(answer.headers.get('www-authenticate') ?? '', /^Bearer/, name)
      }
    }
  })

  it('answers 403 email_not_verified for an address not verified yet', async () => {
    const unverified = await sign(key, { email_verified: false })
    for (const { name, base } of servers) {
      const answer = await call(base, `Bearer ${unverified}`)
      assert.equal(answer.status, 403, name)
      assert.equal(answer.body.error.code, 'email_not_verified', name)
    }
  })

  it('answers 503 while the keys cannot be fetched', async () => {
    const nowhere = new TokenVerifier({ audience: 'orders', keysUrl: 'http://127.0.0.1:9/.well-known/verimail-keys' })
    const app = express()
    app.get('/orders', expressRequireVerified(nowhere), (_req, res) => res.json({}))
    const server = await new Promise<import('node:http').Server>((resolve) => {
      const listening = app.listen(0, '127.0.0.1', () => resolve(listening))
    })
    try {
      const answer = await call(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, `Bearer ${await sign(key)}`)
      assert.equal(answer.status, 503)
      assert.equal(answer.body.error.code, 'unavailable')
      assert.equal(answer.headers.get('retry-after'), '1')
    } finally {
      await new Promise((resolve) => server.close(resolve))
    }
  })
})
