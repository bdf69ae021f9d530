import { Injectable, Logger, OnModuleInit } from '@nestjs/common';
import type { RawBodyRequest } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { addUnhandledResponder, type BodyErrorKind } from '../../common/body-errors.js';
import { requestPath } from '../../common/request-path.js';
import { chance } from '../sandbox-faults.js';
import { EmulatorAnswer, sendAnswer, sendError, serveEmulatorCall, type SandboxRequest } from '../sandbox-http.js';
import { LeanSandboxEmulator } from './lean.emulator.js';
import { LeanFaults } from './lean.faults.js';
import {
  LEAN_API_PREFIX,
  LEAN_AUTH_PREFIX,
  LeanError,
  LeanErrorStatus,
  LeanRoute,
  VerifiedToken,
  leanErrorBody,
  parseLeanJson,
  requireScope,
  resolveLeanRoute,
} from './lean.rules.js';

export type LeanProtocolRoute = Extract<LeanRoute, { kind: 'api' } | { kind: 'token' }>;
type Work = (ctx: { token?: VerifiedToken; faults: LeanFaults }) => Promise<{ status: number; body: string }>;

const JSON_TYPE = /^application\/([\w.+-]*\+)?json\s*(;|$)/i;
const FORM_TYPE = /^application\/x-www-form-urlencoded\s*(;|$)/i;

/** The request's JSON body, parsed exactly from the raw bytes (amounts stay decimal text). */
export function leanJsonBody(req: RawBodyRequest<SandboxRequest>): unknown {
  if (!JSON_TYPE.test(req.headers['content-type'] ?? '')) {
    throw new LeanError('INVALID_PARAMETERS', 'Content-Type must be application/json');
  }
  return parseLeanJson(req.rawBody ? req.rawBody.toString('utf8') : '');
}

/** The token request's form fields; anything but a form is refused. */
export function leanFormBody(req: SandboxRequest): Record<string, unknown> {
  if (!FORM_TYPE.test(req.headers['content-type'] ?? '')) {
    throw new LeanError('INVALID_PARAMETERS', 'Content-Type must be application/x-www-form-urlencoded');
  }
  const body: unknown = req.body;
  return body !== null && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>) : {};
}

function leanErrorAnswer(status: LeanErrorStatus, message: string): EmulatorAnswer {
  return { status: new LeanError(status, message).httpStatus, text: leanErrorBody(status, message) };
}

function sendLeanError(res: FastifyReply, status: LeanErrorStatus, message: string): void {
  sendAnswer(res, leanErrorAnswer(status, message));
}

/**
 * The transport of the emulated API and auth host: faults, bearer-token checks, and
 * answers in Lean's `{status, message, timestamp}` envelope whatever happens (never
 * problem+json). A provider, so the error responder below can answer through it.
 */
@Injectable()
export class LeanSandboxHttp {
  private readonly logger = new Logger('LeanSandbox');

  constructor(private readonly emulator: LeanSandboxEmulator) {}

  handle(req: SandboxRequest, res: FastifyReply, route: LeanProtocolRoute, work: Work): Promise<void> {
    return serveEmulatorCall<LeanFaults>(req, res, {
      faults: () => this.emulator.faults(),
      refusal: (faults) => {
        if (chance(faults.errorRate)) {
          return { fault: 'server_error', ...leanErrorAnswer('INTERNAL_SERVER_ERROR', 'Sandbox: injected server error') };
        }
        if (chance(faults.rateLimitRate)) {
          const seconds = faults.rateLimitRetryAfterSeconds;
          const limited = leanErrorAnswer('RATE_LIMIT_EXCEEDED', `Sandbox: injected rate limit, retry after ${seconds} seconds`);
          return { fault: 'rate_limited', ...limited, headers: { 'Retry-After': String(seconds) } };
        }
        return undefined;
      },
      work: async (faults) => {
        let token: VerifiedToken | undefined;
        if (route.kind === 'api') {
          token = await this.emulator.authenticate(req.headers.authorization);
          requireScope(token, route.scope);
        }
        const { status, body } = await work({ token, faults });
        return { status, text: body };
      },
      failure: (err) => {
        if (err instanceof LeanError) return { status: err.httpStatus, text: leanErrorBody(err.status, err.message) };
        this.logger.error(`Lean API call failed: ${(err as Error)?.stack ?? String(err)}`);
        return { status: 500, text: leanErrorBody('INTERNAL_SERVER_ERROR', 'Internal server error') };
      },
      send: (answer) => sendAnswer(res, answer),
      injected: (kind) => this.emulator.countInjection(kind),
    });
  }

  /** A body the parsers refused: authenticate as usual, then answer 400 INVALID_PARAMETERS. */
  handleUnparsableBody(req: SandboxRequest, res: FastifyReply, route: LeanProtocolRoute, message: string): Promise<void> {
    return this.handle(req, res, route, async () => {
      throw new LeanError('INVALID_PARAMETERS', message);
    });
  }
}

/**
 * Answers, in Lean's format instead of the service's problem+json, what no Lean route
 * handled under `/sandbox/lean` and `/sandbox/lean-auth` (a responder, src/common/body-errors.ts):
 * - bodies the parsers refused (malformed JSON, too large): 400 INVALID_PARAMETERS after auth;
 * - unknown paths: 404 INVALID_URL; known paths with another method: 405 INVALID_HTTP_METHOD.
 */
@Injectable()
export class LeanSandboxHttpErrors implements OnModuleInit {
  constructor(
    private readonly adapterHost: HttpAdapterHost,
    private readonly http: LeanSandboxHttp,
  ) {}

  onModuleInit(): void {
    const adapter = this.adapterHost.httpAdapter;
    if (!adapter || adapter.getType() !== 'fastify') return;
    addUnhandledResponder(adapter.getInstance<FastifyInstance>(), (why, req, reply) => {
      const path = requestPath(req.url);
      if (![LEAN_API_PREFIX, LEAN_AUTH_PREFIX].some((prefix) => path === prefix || path.startsWith(`${prefix}/`))) return false;
      if (why.kind === 'no_route') this.notFound(req.method, path, reply);
      else this.bodyError(why.kind, req as SandboxRequest, path, reply);
      return true;
    });
  }

  private bodyError(kind: BodyErrorKind, req: SandboxRequest, path: string, res: FastifyReply): void {
    const route = resolveLeanRoute(req.method, path);
    const message = kind === 'too_large' ? 'Request body too large' : 'Malformed request body';
    if (route === undefined || route === 'wrong_method') return this.notFound(req.method, path, res);
    if (route.kind === 'control') {
      if (kind === 'too_large') sendError(res, 413, 'request body too large');
      else sendError(res, 400, 'malformed JSON body');
      return;
    }
    void this.http.handleUnparsableBody(req, res, route, message);
  }

  private notFound(method: string, path: string, res: FastifyReply): void {
    if (resolveLeanRoute(method, path) === 'wrong_method') {
      sendLeanError(res, 'INVALID_HTTP_METHOD', `Method ${method} is not supported for ${path}`);
    } else {
      sendLeanError(res, 'INVALID_URL', `No endpoint ${method} ${path}`);
    }
  }
}
