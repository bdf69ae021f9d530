import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { Problem } from '../common/problem.js';
import { ApiKeysService } from './api-keys.service.js';
import { ApiRole, AuthedRequest, ROLES_KEY } from './auth-context.js';

/**
 * Bearer API keys on every /v1 route (refunds-api.md §2). Global, so a new /v1 route
 * cannot be left open by forgetting a decorator; routes outside /v1 (health, webhooks
 * verified by signature, sandbox) are not its business.
 */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  constructor(
    private readonly keys: ApiKeysService,
    private readonly reflector: Reflector,
  ) {}

  async canActivate(ctx: ExecutionContext): Promise<boolean> {
    if (ctx.getType() !== 'http') return true;
    const req = ctx.switchToHttp().getRequest<AuthedRequest>();
    if (!req.path.startsWith('/v1/') && req.path !== '/v1') return true;

    const header = req.headers.authorization;
    const match = typeof header === 'string' ? /^Bearer ([\x21-\x7e]{1,512})$/.exec(header) : null;
    if (!match) throw new Problem('unauthorized', 'Send an API key as "Authorization: Bearer <key>".');
    const auth = await this.keys.authenticate(match[1]);
    if (!auth) throw new Problem('unauthorized', 'Unknown or revoked API key.');
    req.auth = auth;

    const roles = this.reflector.getAllAndOverride<ApiRole[] | undefined>(ROLES_KEY, [ctx.getHandler(), ctx.getClass()]);
    // A /v1 route without @Roles is admin-only: closed by default.
    const allowed = roles ?? [];
    if (auth.role !== 'admin' && !allowed.includes(auth.role)) {
      throw new Problem('forbidden', `Role ${auth.role} may not call this route.`);
    }
    return true;
  }
}
