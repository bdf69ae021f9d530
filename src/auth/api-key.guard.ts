import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { FastifyReply } from 'fastify';
import { requestPath } from '../common/request-path.js';
import { Problem } from '../common/problem.js';
import { ApiKeysService } from './api-keys.service.js';
import { RateLimiter } from './rate-limit.js';
import { ApiRole, AuthedRequest, ROLES_KEY } from './auth-context.js';

/**
 * Routes that authenticate otherwise or not at all: probes, provider webhooks (verified by
 * the provider's signature), the sandbox emulators (which check their own credentials) and
 * the Prometheus endpoint (public, or METRICS_TOKEN checked by MetricsController). The ops
 * dashboard (/ops/queues) is a Fastify plugin behind an onRequest hook with its own key check
 * (src/ops), so this guard never runs for it. /docs and /docs-json (the OpenAPI document,
 * which holds no secrets) are plain Fastify routes too, listed here so they stay public
 * whatever serves them. Compared case-insensitively, as routes match (src/app.ts).
 */
const PUBLIC_PREFIXES = ['/health/', '/webhooks/', '/sandbox/', '/metrics/', '/docs/', '/docs-json/'];

function isPublic(path: string): boolean {
  const p = `${path.toLowerCase().replace(/\/+$/, '')}/`;
  return PUBLIC_PREFIXES.some((prefix) => p.startsWith(prefix));
}

/**
 * Bearer API keys (refunds-api.md §2) on every route except the few public ones above:
 * global and closed by default, so a new route cannot be left open by forgetting a
 * decorator, and a route without @Roles is admin-only.
 */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  constructor(
    private readonly keys: ApiKeysService,
    private readonly reflector: Reflector,
    private readonly limiter: RateLimiter,
  ) {}

  async canActivate(ctx: ExecutionContext): Promise<boolean> {
    if (ctx.getType() !== 'http') return true;
    const req = ctx.switchToHttp().getRequest<AuthedRequest>();
    // The route's declared path, not the URL as sent: what decides is the handler that runs.
    if (isPublic(req.routeOptions?.url ?? requestPath(req.url))) return true;

    const header = req.headers.authorization;
    const match = typeof header === 'string' ? /^Bearer ([\x21-\x7e]{1,512})$/.exec(header) : null;
    if (!match) throw new Problem('unauthorized', 'Send an API key as "Authorization: Bearer <key>".');
    const found = await this.keys.authenticate(match[1], true);
    if (!found) throw new Problem('unauthorized', 'Unknown or revoked API key.');
    const { fromCache, ...auth } = found;
    req.auth = auth;
    // Per key, before the role check, so a key hammering routes it may not call is limited too.
    const decision = await this.limiter.enforce(auth.keyId, ctx.switchToHttp().getResponse<FastifyReply>());
    // The limiter's script also reports a key revoked since (by any process). A key this
    // process remembers is trusted only with that answer; without one, ask the database.
    if (decision?.revoked || (fromCache && !decision && !(await this.keys.authenticate(match[1])))) {
      req.auth = undefined;
      throw new Problem('unauthorized', 'Unknown or revoked API key.');
    }

    const roles = this.reflector.getAllAndOverride<ApiRole[] | undefined>(ROLES_KEY, [ctx.getHandler(), ctx.getClass()]);
    // A /v1 route without @Roles is admin-only: closed by default.
    const allowed = roles ?? [];
    if (auth.role !== 'admin' && !allowed.includes(auth.role)) {
      throw new Problem('forbidden', `Role ${auth.role} may not call this route.`);
    }
    return true;
  }
}
