import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Webhook } from 'standardwebhooks'
import { WebhookVerificationError, WebhookVerifier } from '../src/index.js'

const OLD = `whsec_${Buffer.from('the old secret of the endpoint!!').toString('base64')}`
const NEW = `whsec_${Buffer.from('the new secret of the endpoint!!').toString('base64')}`
const BODY = JSON.stringify({
  type: 'users.verified',
  timestamp: '2026-12-05T09:00:00.000Z',
  event_id: '0193f1c2-0000-7000-8000-0000000000ee',
  data: { user_id: '0193f1c2-0000-7000-8000-000000000001', email: 'ann@example.com', verified_at: '2026-12-05T09:00:00.000Z' },
})

/** Headers as Verimail sends them: one signature per valid secret, separated by a space. */
function headers(secrets: string[], at = new Date(), body = BODY) {
  const signatures = secrets.map((secret) => new Webhook(secret).sign('msg_1', at, body))
  return { 'webhook-id': 'msg_1', 'webhook-timestamp': String(Math.floor(at.getTime() / 1000)), 'webhook-signature': signatures.join(' ') }
}

describe('WebhookVerifier', () => {
  it('verifies a delivery to its event', () => {
    const event = new WebhookVerifier(NEW).verify(Buffer.from(BODY), headers([NEW]))
    assert.equal(event.type, 'users.verified')
    assert.equal(event.data.email, 'ann@example.com')
  })

  it('accepts either secret while one is rotated, on either side', () => {
    assert.ok(new WebhookVerifier(OLD).verify(BODY, headers([NEW, OLD])), 'a receiver still holding the old secret')
    assert.ok(new WebhookVerifier([NEW, OLD]).verify(BODY, headers([OLD])), 'a receiver given the new one first')
  })

  it('refuses an altered body, another secret, a stale timestamp and missing headers', () => {
    const verifier = new WebhookVerifier(NEW)
    assert.throws(() => verifier.verify(BODY.replace('ann@', 'eve@'), headers([NEW])), WebhookVerificationError)
    assert.throws(() => verifier.verify(BODY, headers([OLD])), WebhookVerificationError)
    assert.throws(() => verifier.verify(BODY, headers([NEW], new Date(Date.now() - 10 * 60_000))), WebhookVerificationError)
    assert.throws(() => verifier.verify(BODY, {}), WebhookVerificationError)
  })
})
