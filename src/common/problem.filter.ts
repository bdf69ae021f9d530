import { ArgumentsHost, Catch, ExceptionFilter, HttpException, Logger, NotFoundException } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { bodyErrorKind, respondToUnhandled } from './body-errors.js';
import { replyProblem } from './http-reply.js';
import { ERROR_CODES, ErrorCode, Problem } from './problem.js';
import { requestPath } from './request-path.js';

/** Errors that mean a dependency (Postgres, Redis) is down, not that the request is wrong. */
function isDependencyOutage(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: string }).code;
  if (code && ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', '57P01', '57P02', '57P03', '53300', '08000', '08003', '08006'].includes(code)) {
    return true;
  }
  // TypeORM releases a transaction's query runner when Postgres drops its connection
  // (e.g. 57P01 on a fast shutdown); later queries of that transaction then throw this.
  if (err.name === 'QueryRunnerAlreadyReleasedError') return true;
  // A prepared plan went stale when a migration changed a table under this process
  // (src/database/database.ts); the next attempt prepares it afresh.
  if (code === '0A000' && /cached plan must not change result type/.test(err.message)) return true;
  return /not queryable|Connection terminated|connect ECONNREFUSED|timeout exceeded when trying to connect|Connection is closed|Stream isn't writeable|MaxRetriesPerRequest|the database system is (starting up|shutting down)/i.test(
    err.message,
  );
}

/**
 * Renders every error as an RFC 9457 problem (refunds-api.md §8). Nothing reaches the
 * client with a stack trace; unexpected errors are logged and answered with a bare 500.
 */
@Catch()
export class ProblemFilter implements ExceptionFilter {
  private readonly logger = new Logger('ProblemFilter');

  catch(exception: unknown, host: ArgumentsHost): void {
    const ctx = host.switchToHttp();
    const reply = ctx.getResponse<FastifyReply>();
    const req = ctx.getRequest<FastifyRequest>();
    if (reply.sent || reply.raw.headersSent) {
      // A streamed response failed half-way: the status line is gone, only closing is left
      // (toProblem still logs an unexpected error).
      this.toProblem(exception, req.method, requestPath(req.url));
      if (!reply.raw.writableEnded) reply.raw.destroy();
      return;
    }
    // Errors before any handler ran (a body the parsers refused, no such route) may belong to
    // a provider emulator, which answers them in its provider's format.
    const kind = bodyErrorKind(exception);
    // No route matched: Fastify's not-found handler, where no route's options are set.
    const noRoute = exception instanceof NotFoundException && req.routeOptions?.url === undefined;
    if ((kind || noRoute) && respondToUnhandled(kind ? { kind } : { kind: 'no_route' }, req, reply)) return;
    const path = requestPath(req.url);
    const problem = this.toProblem(exception, req.method, path);
    const retryAfter = problem.extra.retryAfterSeconds;
    replyProblem(reply, problem, path, typeof retryAfter === 'number' ? { 'Retry-After': String(retryAfter) } : {});
  }

  /** The problem body this filter answers `exception` with, for another transport (MCP). */
  problemBody(exception: unknown, method: string, path: string): Record<string, unknown> {
    return this.toProblem(exception, method, path).body(path);
  }

  private toProblem(exception: unknown, method: string, path: string): Problem {
    if (exception instanceof Problem) return exception;
    const anyErr = exception as { status?: number; statusCode?: number; message?: string };
    // Body errors (raised before any controller runs).
    switch (bodyErrorKind(exception)) {
      case 'unreadable':
        return Problem.validation([{ field: 'body', message: 'Malformed JSON' }], 'The request body is not valid JSON.');
      case 'too_large':
        return new Problem('payload_too_large', 'The request body is too large.');
    }
    if (exception instanceof HttpException) {
      const status = exception.getStatus();
      if (status === 400) {
        // e.g. a body the JSON parser refused before any route ran.
        return Problem.validation([{ field: 'body', message: exception.message }], 'The request is not valid.');
      }
      const code = codeForStatus(status);
      if (code) return new Problem(code, status === 404 ? `No route ${method} ${path}` : exception.message);
    }
    const pgCode = (exception as { code?: unknown })?.code;
    if (typeof pgCode === 'string' && /^22[0-9A-Z]{3}$/.test(pgCode)) {
      // Postgres data exceptions (bad text encoding, out-of-range values): the input was bad.
      return Problem.validation([{ field: 'request', message: 'contains a value the service cannot store' }]);
    }
    if (pgCode === '40P01' || pgCode === '40001') {
      // A deadlock or serialization failure: Postgres rolled the transaction back; nothing was changed.
      return new Problem('service_unavailable', 'The request collided with a concurrent one; retry it with the same Idempotency-Key.', {
        retryAfterSeconds: 1,
      });
    }
    if (isDependencyOutage(exception)) {
      this.logger.warn(`dependency unavailable: ${(exception as Error).message}`);
      return new Problem('service_unavailable', 'A backing service is unavailable; try again shortly.', {
        retryAfterSeconds: 5,
      });
    }
    const status = anyErr?.status ?? anyErr?.statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      const code = codeForStatus(status);
      if (code) return new Problem(code, anyErr.message);
    }
    this.logger.error({ err: exception }, 'unhandled error');
    return new Problem('internal_error', 'An unexpected error occurred.');
  }
}

function codeForStatus(status: number): ErrorCode | undefined {
  const byStatus: Record<number, ErrorCode> = {
    400: 'validation_failed',
    401: 'unauthorized',
    403: 'forbidden',
    404: 'not_found',
    405: 'not_found',
    409: 'invalid_state',
    413: 'payload_too_large',
    415: 'unsupported_media_type',
    429: 'rate_limited',
    503: 'service_unavailable',
  };
  const code = byStatus[status];
  return code && ERROR_CODES[code] ? code : undefined;
}
