import { CallHandler, ExecutionContext, Injectable, NestInterceptor } from '@nestjs/common';
import type { FastifyRequest } from 'fastify';
import { Observable } from 'rxjs';
import { Problem } from '../common/problem.js';

/** 1-255 printable ASCII characters (refunds-api.md §4). */
const KEY_RE = /^[\x20-\x7e]{1,255}$/;

/**
 * Checks the Idempotency-Key header before the body is validated, so a request without
 * one is told so (idempotency_key_required) whatever else is wrong with it.
 */
@Injectable()
export class RequireIdempotencyKey implements NestInterceptor {
  intercept(ctx: ExecutionContext, next: CallHandler): Observable<unknown> {
    const req = ctx.switchToHttp().getRequest<FastifyRequest>();
    const key = req.headers['idempotency-key'];
    if (key === undefined || key === '') {
      throw new Problem('idempotency_key_required', 'Send an Idempotency-Key header (1-255 printable characters).');
    }
    if (typeof key !== 'string' || !KEY_RE.test(key)) {
      throw Problem.validation([{ field: 'Idempotency-Key', message: 'must be 1-255 printable ASCII characters' }]);
    }
    return next.handle();
  }
}
