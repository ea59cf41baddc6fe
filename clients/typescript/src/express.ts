// Express middleware: only requests with a valid access token of a verified address get
// through; the claims are on `req.verimail` (and `res.locals.verimail`).

import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { checkRequest, isRefusal } from './answer.js'
import type { Claims, TokenVerifier } from './verifier.js'

declare module 'express-serve-static-core' {
  interface Request {
    /** The caller's claims, set by requireVerified. */
    verimail?: Claims
  }
}

/** 401 / 403 / 503 as `RequireVerified` answers (see checkRequest); otherwise next(). */
export function requireVerified(verifier: TokenVerifier): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    checkRequest(verifier, req.get('authorization')).then((answer) => {
      if (isRefusal(answer)) {
        res.status(answer.status).set(answer.headers).json(answer.body)
        return
      }
      req.verimail = answer
      res.locals.verimail = answer
      next()
    }, next)
  }
}
