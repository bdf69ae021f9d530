import { createParamDecorator, ExecutionContext, SetMetadata } from '@nestjs/common';
import type { FastifyRequest } from 'fastify';
import { Problem } from '../common/problem.js';

export const ROLES = ['merchant', 'ops', 'finance', 'admin'] as const;
export type ApiRole = (typeof ROLES)[number];

/** Who is calling: passed explicitly from controllers into services. */
export interface AuthContext {
  /** api_keys.id, or 'bootstrap-admin' for ADMIN_API_KEY. */
  keyId: string;
  role: ApiRole;
  merchantId: string | null;
}

export function actorOf(auth: AuthContext): string {
  return `api_key:${auth.keyId}`;
}

/** Merchants are confined to their own merchant id; other roles see every merchant. */
export function merchantScope(auth: AuthContext): string | null {
  return auth.role === 'merchant' ? auth.merchantId : null;
}

export const ROLES_KEY = 'roles';
/** Roles allowed on a route; admin is always allowed. */
export const Roles = (...roles: ApiRole[]) => SetMetadata(ROLES_KEY, roles);

export type AuthedRequest = FastifyRequest & { auth?: AuthContext };

export const Auth = createParamDecorator((_data: unknown, ctx: ExecutionContext): AuthContext => {
  const req = ctx.switchToHttp().getRequest<AuthedRequest>();
  // Only reachable if a route escaped the guard: refuse rather than run without an identity.
  if (!req.auth) throw new Problem('unauthorized', 'Send an API key as "Authorization: Bearer <key>".');
  return req.auth;
});
