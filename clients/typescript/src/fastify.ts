// Fastify: a preHandler hook that lets through only requests with a valid access token of a
// verified address; the claims are on `request.verimail`.

import type { FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify'
import { checkRequest, isRefusal } from './answer.js'
import type { Claims, TokenVerifier } from './verifier.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller's claims, set by requireVerified. */
    verimail?: Claims
  }
}

/** Use as `{ preHandler: requireVerified(verifier) }` on a route, or `app.addHook('preHandler', …)`. */
export function requireVerified(verifier: TokenVerifier): preHandlerAsyncHookHandler {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const answer = await checkRequest(verifier, request.headers.authorization)
    if (isRefusal(answer)) {
      return reply.code(answer.status).headers(answer.headers).send(answer.body)
    }
    request.verimail = answer
  }
}
