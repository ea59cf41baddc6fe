// Verimail's webhooks are Standard Webhooks (https://www.standardwebhooks.com): verified here
// with the `standardwebhooks` package, against one secret or two while one is rotated.

import { Webhook, WebhookVerificationError } from 'standardwebhooks'

/** The body of every delivery (docs/webhooks.md lists each type's `data`). */
export interface WebhookEvent {
  type: string
  /** When the event happened (RFC 3339). */
  timestamp: string
  /** The event's own id (as on NATS). */
  event_id: string
  data: Record<string, unknown>
}

export { WebhookVerificationError }

/** Headers as Node gives them (lower-case names; a value may be an array). */
type Headers = Record<string, string | string[] | undefined>

/**
 * Verifies webhook deliveries: the signature over the exact bytes received, and a timestamp
 * within five minutes. Give it the endpoint's secret (`whsec_…`), or the new and the old one
 * while RotateWebhookSecret's overlap lasts.
 */
export class WebhookVerifier {
  private readonly hooks: Webhook[]

  constructor(secrets: string | readonly string[]) {
    const list = typeof secrets === 'string' ? [secrets] : [...secrets]
    if (list.length === 0) throw new TypeError('at least one webhook secret is required')
    this.hooks = list.map((secret) => new Webhook(secret))
  }

  /**
   * The event, if `body` (the raw bytes, not re-serialized JSON) carries a valid signature by
   * one of the secrets; throws WebhookVerificationError otherwise. Deduplicate on the
   * `webhook-id` header: a delivery may arrive more than once.
   */
  verify(body: string | Buffer, headers: Headers): WebhookEvent {
    const plain: Record<string, string> = {}
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      const value = headers[name]
      plain[name] = Array.isArray(value) ? value.join(' ') : (value ?? '')
    }
    let last: unknown
    for (const hook of this.hooks) {
      try {
        return hook.verify(body, plain) as WebhookEvent
      } catch (error) {
        last = error
      }
    }
    throw last instanceof WebhookVerificationError ? last : new WebhookVerificationError(String(last))
  }
}
