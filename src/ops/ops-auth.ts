import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ApiKeysService } from '../auth/api-keys.service.js';
import type { ApiRole } from '../auth/auth-context.js';
import { Problem } from '../common/problem.js';
import { replyProblem } from '../common/http-reply.js';
import { requestPath } from '../common/request-path.js';

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

const CHALLENGE = { 'WWW-Authenticate': 'Basic realm="ops", charset="UTF-8"' };

/** Why `authorization` (with `method`) may not use the dashboard, or undefined when it may. */
async function refusal(keys: ApiKeysService, authorization: string | string[] | undefined, method: string): Promise<{ problem: Problem; challenge?: boolean } | undefined> {
  const key = presentedKey(authorization);
  if (!key) return { problem: new Problem('unauthorized', 'Send an ops API key (Bearer, or as the Basic password).'), challenge: true };
  let auth;
  try {
    auth = await keys.authenticate(key);
  } catch {
    return { problem: new Problem('service_unavailable', 'API keys cannot be checked right now.') };
  }
  if (!auth) return { problem: new Problem('unauthorized', 'Unknown or revoked API key.'), challenge: true };
  if (!OPS_DASHBOARD_ROLES.includes(auth.role)) {
    return { problem: new Problem('forbidden', `Role ${auth.role} may not open the queue dashboard.`) };
  }
  if (method !== 'GET' && method !== 'HEAD') {
    return { problem: new Problem('forbidden', 'The queue dashboard is read-only; use the /v1 API for ops actions.') };
  }
  return undefined;
}

/**
 * Guards the Bull Board dashboard. Bull Board is a Fastify plugin, whose routes the global
 * ApiKeyGuard (a Nest guard, run only before Nest route handlers) never sees, so this
 * `onRequest` hook does the same authentication for every route under `route` with
 * ApiKeysService: 401 with a Basic challenge (so a browser prompts) when the key is missing
 * or unknown, 403 for roles other than ops and admin. It decides by the route that matched
 * (its declared path), not by the URL as sent, so no spelling of a board URL gets past it.
 * The board is read-only (Bull Board's readOnlyMode); as a second line, any method other
 * than GET and HEAD is refused here too (403), whatever a future board version routes: ops
 * actions go through the audited /v1 API.
 */
export function guardOpsBoard(instance: FastifyInstance, route: string, keys: ApiKeysService): void {
  // Runs for every request of the app: a declared path is compared as it is (the board's
  // plugin declares its routes under `route`, in that case).
  const under = `${route}/`;
  instance.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const declared = req.routeOptions.url;
    if (declared === undefined || (declared !== route && !declared.startsWith(under))) return;
    const refused = await refusal(keys, req.headers.authorization, req.method);
    if (!refused) return;
    return replyProblem(reply, refused.problem, requestPath(req.url), { 'Cache-Control': 'no-store', ...(refused.challenge ? CHALLENGE : {}) });
  });
}
