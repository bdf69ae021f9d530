import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { ApiKeysService } from '../auth/api-keys.service.js';
import type { ApiRole, AuthedRequest } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';

/** Roles that may open the queue dashboard (refunds-api.md §2: ops read queues; admin everything). */
export const OPS_DASHBOARD_ROLES: readonly ApiRole[] = ['ops', 'admin'];

/**
 * The API key from `Authorization: Bearer <key>` or HTTP Basic. Browsers cannot send a
 * Bearer header when navigating, but they do prompt for Basic credentials: the password is
 * the API key (the user name is ignored; `curl -u <key>:` also works, so an empty password
 * falls back to the user name).
 */
export function presentedKey(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string') return undefined;
  const bearer = /^Bearer ([\x21-\x7e]{1,512})$/i.exec(header);
  if (bearer) return bearer[1];
  const basic = /^Basic ([A-Za-z0-9+/=]{1,1024})$/i.exec(header);
  if (!basic) return undefined;
  const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  const user = decoded.slice(0, colon);
  const password = decoded.slice(colon + 1);
  const key = password || user;
  return /^[\x21-\x7e]{1,512}$/.test(key) ? key : undefined;
}

function problem(res: Response, req: Request, p: Problem, headers: Record<string, string> = {}): void {
  res
    .status(p.getStatus())
    .set({ 'Content-Type': 'application/problem+json', 'Cache-Control': 'no-store', ...headers })
    .send(JSON.stringify(p.body(req.originalUrl.split('?')[0])));
}

/**
 * Guards the Bull Board dashboard. Bull Board is mounted as Express middleware, which the
 * global ApiKeyGuard (a Nest guard, run only before Nest route handlers) never sees, so this
 * middleware does the same authentication for it with ApiKeysService: 401 with a Basic
 * challenge (so a browser prompts) when the key is missing or unknown, 403 for roles other
 * than ops and admin. The board is read-only (Bull Board's readOnlyMode); as a second line,
 * any method other than GET and HEAD is refused here too (403), whatever a future board
 * version routes: ops actions go through the audited /v1 API.
 */
export function opsAuthMiddleware(keys: ApiKeysService): RequestHandler {
  const challenge = { 'WWW-Authenticate': 'Basic realm="ops", charset="UTF-8"' };
  return (req: Request, res: Response, next: NextFunction) => {
    void (async () => {
      const key = presentedKey(req.headers.authorization);
      if (!key) {
        return problem(res, req, new Problem('unauthorized', 'Send an ops API key (Bearer, or as the Basic password).'), challenge);
      }
      let auth;
      try {
        auth = await keys.authenticate(key);
      } catch {
        return problem(res, req, new Problem('service_unavailable', 'API keys cannot be checked right now.'));
      }
      if (!auth) return problem(res, req, new Problem('unauthorized', 'Unknown or revoked API key.'), challenge);
      if (!OPS_DASHBOARD_ROLES.includes(auth.role)) {
        return problem(res, req, new Problem('forbidden', `Role ${auth.role} may not open the queue dashboard.`));
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        return problem(res, req, new Problem('forbidden', 'The queue dashboard is read-only; use the /v1 API for ops actions.'));
      }
      (req as AuthedRequest).auth = auth;
      next();
    })().catch(next);
  };
}
