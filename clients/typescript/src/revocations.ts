// The sessions that ended, as a verifier learns them: it polls the gateway's
// `/v1/revoked-sessions` (UserService/ListRevokedSessions as JSON) with its service credential
// and refuses every token whose `sid` names one, until that session's last token has expired
// anyway. The contract: docs/events.md, "Revocation".

import { VerifyError } from './verifier.js'

export interface RevocationFeedOptions {
  /** The gateway's feed, e.g. `https://verify.example.com/v1/revoked-sessions`. */
  url: string
  /** Your service's secret (a service granted `revocations`, or APP_SERVICE_TOKEN). */
  secret?: string
  /** Seconds between polls (default 1: a revoked token lives about a second longer). */
  intervalSeconds?: number
  /**
   * Fail closed: once the feed has not answered for this many seconds (or never has, that long
   * after start), refuse every token (`revocations_unavailable`). Default: never; tokens are
   * then checked against what the feed said last.
   */
  maxLagSeconds?: number
}

/** One answer of the feed. */
interface Page {
  revoked: { session_id: string; tokens_expire_at: string }[]
  cursor: number
  more: boolean
}

/** Follows the feed in the background (the timer does not keep the process alive). */
export class RevocationFeed {
  private readonly url: string
  private readonly secret?: string
  private readonly interval: number
  private readonly maxLag?: number
  private readonly started = Date.now()
  /** Session id → when its last token expires (ms since the epoch). */
  private readonly sessions = new Map<string, number>()
  private cursor = 0
  private answeredAt?: number
  private timer?: NodeJS.Timeout
  private closed = false
  /** The last error, while the feed does not answer. */
  lastError?: string
  private firstAnswer: Promise<void>
  private resolveFirst!: () => void

  constructor(options: RevocationFeedOptions) {
    this.url = options.url
    this.secret = options.secret
    this.interval = (options.intervalSeconds ?? 1) * 1000
    this.maxLag = options.maxLagSeconds === undefined ? undefined : options.maxLagSeconds * 1000
    this.firstAnswer = new Promise((resolve) => (this.resolveFirst = resolve))
    void this.poll()
  }

  /** Resolves once the feed has answered (or after `timeoutMs`, rejecting). */
  async ready(timeoutMs = 10_000): Promise<void> {
    let timeout: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => {
      timeout = setTimeout(() => reject(new Error(`the revocation feed has not answered: ${this.lastError ?? 'no answer yet'}`)), timeoutMs)
    })
    try {
      await Promise.race([this.firstAnswer, late])
    } finally {
      clearTimeout(timeout)
    }
  }

  /** Stops polling. */
  close(): void {
    this.closed = true
    clearTimeout(this.timer)
  }

  /** Milliseconds since the feed last answered (undefined before its first answer). */
  get age(): number | undefined {
    return this.answeredAt === undefined ? undefined : Date.now() - this.answeredAt
  }

  /** Whether the session ended (and its tokens may still be live). */
  has(sessionId: string): boolean {
    const expires = this.sessions.get(sessionId)
    return expires !== undefined && expires > Date.now()
  }

  /**
   * Learn ended sessions from elsewhere, say a `users.sessions_revoked` webhook: refused at
   * once, before the next poll.
   */
  learn(sessionIds: readonly string[], tokensExpireAt: string | Date): void {
    const expires = new Date(tokensExpireAt).getTime()
    if (Number.isNaN(expires) || expires <= Date.now()) return
    for (const id of sessionIds) this.sessions.set(id, Math.max(expires, this.sessions.get(id) ?? 0))
  }

  /** Throws `revoked` for an ended session, `revocations_unavailable` past the maximum lag. */
  check(sessionId: string): void {
    if (this.maxLag !== undefined) {
      const age = Date.now() - (this.answeredAt ?? this.started)
      if (age > this.maxLag) {
        throw new VerifyError('revocations_unavailable', `no answer for ${Math.floor(age / 1000)} s`)
      }
    }
    if (this.has(sessionId)) throw new VerifyError('revoked')
  }

  private async fetchPage(): Promise<Page> {
    const url = new URL(this.url)
    url.searchParams.set('after', String(this.cursor))
    const headers: Record<string, string> = { accept: 'application/json' }
    if (this.secret) headers.authorization = `Bearer ${this.secret}`
    const response = await fetch(url, { headers, signal: AbortSignal.timeout(5000) })
    if (!response.ok) {
      const body = (await response.json().catch(() => null)) as { error?: { message?: string } } | null
      throw new Error(`${response.status}: ${body?.error?.message ?? response.statusText}`)
    }
    return (await response.json()) as Page
  }

  private async poll(): Promise<void> {
    if (this.closed) return
    let more = false
    try {
      const page = await this.fetchPage()
      const now = Date.now()
      for (const [id, expires] of this.sessions) if (expires <= now) this.sessions.delete(id)
      for (const session of page.revoked) {
        const expires = new Date(session.tokens_expire_at).getTime()
        if (expires > now) this.sessions.set(session.session_id, expires)
      }
      this.cursor = page.cursor
      more = page.more
      this.answeredAt = Date.now()
      this.lastError = undefined
      this.resolveFirst()
    } catch (error) {
      this.lastError = (error as Error).message
    }
    if (this.closed) return
    this.timer = setTimeout(() => void this.poll(), more ? 0 : this.interval)
    this.timer.unref()
  }
}
