import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { TokenVerifier, VerifyError, type VerifyFailure } from '../src/index.js'
import { eventually, Issuer, sign, signingKey, sleep, type SigningKey } from './helpers.js'

async function refused(verifier: TokenVerifier, token: string): Promise<VerifyFailure> {
  try {
    await verifier.verify(token)
  } catch (error) {
    assert.ok(error instanceof VerifyError, String(error))
    return error.reason
  }
  assert.fail('the token was accepted')
}

describe('TokenVerifier', () => {
  let issuer: Issuer
  let key: SigningKey
  before(async () => {
    issuer = await new Issuer().start()
    key = await signingKey()
    issuer.published = [key]
  })
  after(() => issuer.stop())

  it('verifies a token to its claims and refuses an altered one and garbage', async () => {
    const verifier = new TokenVerifier({ audience: 'orders', keysUrl: issuer.keysUrl })
    const token = await sign(key)
    const claims = await verifier.verify(token)
    assert.equal(claims.userId, '0193f1c2-0000-7000-8000-000000000001')
    assert.equal(claims.email, 'ann@example.com')
    assert.equal(claims.emailVerified, true)
    assert.equal(claims.sessionId, '0193f1c2-0000-7000-8000-0000000000aa')
    assert.equal(claims.audience, 'orders')
    assert.ok(claims.expiresAt.getTime() > Date.now() + 890_000)
    const at = 'v4.public.'.length + 20
    const altered = token.slice(0, at) + (token[at] === 'A' ? 'B' : 'A') + token.slice(at + 1)
    assert.equal(await refused(verifier, altered), 'bad_signature')
    for (const garbage of ['', 'v4.public.', 'v4.local.abc', 'hello', 'x'.repeat(5000), `${token.split('.').slice(0, 3).join('.')}.bm90IGpzb24`]) {
      assert.equal(await refused(verifier, garbage), 'malformed', garbage.slice(0, 20))
    }
  })

  it('checks expiry and not-before with the leeway, the audience, the issuer and every claim', async () => {
    const strict = new TokenVerifier({ audience: 'orders', keysUrl: issuer.keysUrl, leewaySeconds: 0 })
    const lenient = new TokenVerifier({ audience: 'orders', keysUrl: issuer.keysUrl, leewaySeconds: 30 })
    const past = (seconds: number) => new Date(Date.now() - seconds * 1000).toISOString()
    const future = (seconds: number) => new Date(Date.now() + seconds * 1000).toISOString()
    const expired = await sign(key, { exp: past(10), iat: past(100), nbf: past(100) })
    assert.equal(await refused(strict, expired), 'expired')
    assert.equal((await lenient.verify(expired)).email, 'ann@example.com', '10 s late, within 30 s of leeway')
    assert.equal(await refused(lenient, await sign(key, { exp: past(60), iat: past(100), nbf: past(100) })), 'expired')
    const early = await sign(key, { nbf: future(10) })
    assert.equal(await refused(strict, early), 'not_yet_valid')
    assert.ok(await lenient.verify(early))
    assert.equal(await refused(strict, await sign(key, { aud: 'billing' })), 'wrong_audience')
    assert.equal(await refused(strict, await sign(key, { iss: 'someone-else' })), 'wrong_issuer')
    for (const claim of ['sub', 'email', 'email_verified', 'jti', 'sid', 'auth_time']) {
      assert.equal(await refused(strict, await sign(key, { [claim]: null })), 'missing_claim', claim)
    }
    assert.equal(await refused(strict, await sign(key, { exp: null })), 'missing_claim', 'exp')
  })

  it('refetches on an unknown key at most once per interval; a rotation is learnt, a retired key refused', async () => {
    const rotating = await new Issuer().start()
    try {
      const old = await signingKey()
      const next = await signingKey()
      rotating.published = [old]
      const verifier = new TokenVerifier({ audience: 'orders', keysUrl: rotating.keysUrl, refetchIntervalSeconds: 0.3 })
      const byOld = await sign(old)
      assert.ok(await verifier.verify(byOld))
      assert.ok(await verifier.verify(byOld))
      assert.equal(rotating.keyFetches, 1, 'cached after the first')
      const stranger = await sign(await signingKey())
      assert.equal(await refused(verifier, stranger), 'unknown_key')
      for (let i = 0; i < 5; i += 1) assert.equal(await refused(verifier, stranger), 'unknown_key')
      assert.equal(rotating.keyFetches, 1, 'an unknown key within the interval fetches nothing')

      // The issuer signs with a new key and still publishes the old one.
      rotating.published = [next, old]
      await sleep(350)
      assert.equal((await verifier.verify(await sign(next))).email, 'ann@example.com', 'the new key is fetched')
      assert.ok(await verifier.verify(byOld), 'an old-key token after the rotation')
      assert.equal(rotating.keyFetches, 2, 'one fetch at the start, one for the new key')

      // The old key is retired: its tokens verify nothing once the verifier has refetched.
      rotating.published = [next]
      await sleep(350)
      assert.equal(await refused(verifier, await sign(await signingKey())), 'unknown_key')
      assert.equal(await refused(verifier, byOld), 'unknown_key')
      assert.ok(await verifier.verify(await sign(next)))
    } finally {
      await rotating.stop()
    }
  })

  it('refetches keys older than the maximum age, and keeps the old ones while the issuer is down', async () => {
    const flaky = await new Issuer().start()
    flaky.published = [key]
    const verifier = new TokenVerifier({ audience: 'orders', keysUrl: flaky.keysUrl, maxAgeSeconds: 0.2, refetchIntervalSeconds: 0 })
    const token = await sign(key)
    assert.ok(await verifier.verify(token))
    await sleep(250)
    assert.ok(await verifier.verify(token))
    assert.equal(flaky.keyFetches, 2, 'stale keys are fetched again')
    await flaky.stop()
    await sleep(250)
    assert.ok(await verifier.verify(token), 'the issuer is down: the keys held still serve')
    const never = new TokenVerifier({ audience: 'orders', keysUrl: flaky.keysUrl })
    assert.equal(await refused(never, token), 'keys_unavailable')
  })

  it('refuses the tokens of ended sessions within the poll interval, with the service credential', async () => {
    const verifier = new TokenVerifier({
      audience: 'orders',
      keysUrl: issuer.keysUrl,
      revocations: { url: issuer.feedUrl, secret: 'orders-secret-0123456789', intervalSeconds: 0.1 },
    })
    try {
      await verifier.feed!.ready()
      const token = await sign(key)
      const other = await sign(key, { sid: '0193f1c2-0000-7000-8000-0000000000bb' })
      assert.ok(await verifier.verify(token))
      issuer.revoked.push({ session_id: '0193f1c2-0000-7000-8000-0000000000aa', tokens_expire_at: new Date(Date.now() + 60_000).toISOString() })
      await eventually('the revoked token is refused', 2000, async () => (await refused(verifier, token).catch(() => 'accepted')) === 'revoked')
      assert.ok(await verifier.verify(other), "another session's token passes")
      assert.equal(issuer.feedCalls.at(-1)?.authorization, 'Bearer orders-secret-0123456789')
      await eventually('polls on from the cursor', 2000, () => issuer.feedCalls.some((call) => call.after === '1'))
      // A revocation whose tokens have all expired is forgotten.
      issuer.revoked.push({ session_id: 'gone', tokens_expire_at: new Date(Date.now() - 1000).toISOString() })
      await sleep(300)
      assert.equal(verifier.feed!.has('gone'), false)
      // Learnt from a users.sessions_revoked webhook: refused at once.
      verifier.feed!.learn(['0193f1c2-0000-7000-8000-0000000000bb'], new Date(Date.now() + 60_000))
      assert.equal(await refused(verifier, other), 'revoked')
    } finally {
      verifier.close()
      issuer.revoked = []
    }
  })

  it('fails closed past the maximum lag when asked to, and open otherwise', async () => {
    const down = await new Issuer().start()
    down.published = [key]
    down.feedDown = true
    const closed = new TokenVerifier({ audience: 'orders', keysUrl: down.keysUrl, revocations: { url: down.feedUrl, intervalSeconds: 0.1, maxLagSeconds: 0.3 } })
    const open = new TokenVerifier({ audience: 'orders', keysUrl: down.keysUrl, revocations: { url: down.feedUrl, intervalSeconds: 0.1 } })
    try {
      const token = await sign(key)
      await sleep(400)
      assert.equal(await refused(closed, token), 'revocations_unavailable')
      assert.ok(await open.verify(token), 'without a maximum lag, what the feed said last still serves')
      assert.match(open.feed!.lastError ?? '', /503/)
      down.feedDown = false
      await closed.feed!.ready()
      assert.ok(await closed.verify(token), 'the feed answers again')
    } finally {
      closed.close()
      open.close()
      await down.stop()
    }
  })
})
