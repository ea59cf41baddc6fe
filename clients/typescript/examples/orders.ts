// A team's service in TypeScript: only verified users may see /orders; Verimail's webhooks
// arrive at /hooks/verimail. What Verimail's system test runs against a real stack
// (tests/tests/system/clients.rs), and a template for your own.
//
//   VERIMAIL_URL=http://127.0.0.1:8080 VERIMAIL_SERVICE_SECRET=… WEBHOOK_SECRET=whsec_… \
//     PORT=3000 node dist/examples/orders.js

import express from 'express'
import { TokenVerifier, WebhookVerificationError, WebhookVerifier, type WebhookEvent } from '../src/index.js'
import { requireVerified } from '../src/express.js'

const env = (name: string, fallback?: string): string => {
  const value = process.env[name] ?? fallback
  if (value === undefined) throw new Error(`${name} is required`)
  return value
}

const gateway = env('VERIMAIL_URL')
const verifier = new TokenVerifier({
  audience: env('VERIMAIL_AUDIENCE', 'verimail'),
  keysUrl: `${gateway}/.well-known/verimail-keys`,
  leewaySeconds: Number(env('VERIMAIL_LEEWAY_SECONDS', '30')),
  revocations: { url: `${gateway}/v1/revoked-sessions`, secret: process.env.VERIMAIL_SERVICE_SECRET, intervalSeconds: 1 },
})
const webhooks = new WebhookVerifier(env('WEBHOOK_SECRET').split(','))
/** Deliveries by webhook-id: a retry of one already stored changes nothing. */
const received = new Map<string, WebhookEvent>()

const app = express()
app.get('/orders', requireVerified(verifier), (req, res) => {
  const claims = req.verimail!
  res.json({ user_id: claims.userId, email: claims.email, session_id: claims.sessionId })
})
// The raw body: the signature is over the bytes as sent.
app.post('/hooks/verimail', express.raw({ type: 'application/json' }), (req, res) => {
  let event: WebhookEvent
  try {
    event = webhooks.verify(req.body as Buffer, req.headers)
  } catch (error) {
    if (error instanceof WebhookVerificationError) return void res.status(400).json({ error: error.message })
    throw error
  }
  const id = req.get('webhook-id')!
  if (!received.has(id)) {
    received.set(id, event)
    if (event.type === 'users.sessions_revoked') {
      // Refused at once, before the next poll of the feed.
      verifier.feed?.learn(event.data.session_ids as string[], event.data.tokens_expire_at as string)
    }
  }
  res.status(204).end()
})
app.get('/hooks/received', (_req, res) => {
  res.json([...received].map(([id, event]) => ({ id, type: event.type, data: event.data })))
})

await verifier.feed!.ready(30_000)
const server = app.listen(Number(env('PORT', '3000')), '127.0.0.1', () => {
  console.log(`orders listening on ${JSON.stringify(server.address())}`)
})
const stop = () => {
  verifier.close()
  server.close(() => process.exit(0))
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
