import { Delete, Get, Put, Req, Res } from '@nestjs/common';
import type { Logger } from '@nestjs/common';
import type { ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { FaultValidationError, chance } from './sandbox-faults.js';

/**
 * Small helpers shared by the emulators' controllers. Emulator routes write their own
 * responses (`@Res()`), so the service's problem+json filter never answers for them.
 */

/** A request to an emulator route: its path parameters and query as Fastify parses them. */
export type SandboxRequest = FastifyRequest<{ Params: Record<string, string | undefined>; Querystring: Record<string, string | string[] | undefined> }>;

export function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}

/** Sends text already serialised as JSON (lossless-json output included). */
export function sendJsonText(res: FastifyReply, status: number, text: string): void {
  res.status(status).type('application/json').send(text);
}

export function sendJson(res: FastifyReply, status: number, body: unknown): void {
  sendJsonText(res, status, JSON.stringify(body));
}

/** Error answer of the sandbox's own control endpoints (not a provider protocol). */
export function sendError(res: FastifyReply, status: number, error: string): void {
  sendJson(res, status, { error });
}

// --- the emulated provider APIs ------------------------------------------------------------

/** The fault settings every emulated API call applies. */
export interface CallFaults {
  latencyMs: number;
  timeoutAfterCommitRate: number;
  timeoutAfterCommitDelayMs: number;
  /**
   * Share of calls whose work is done and committed, then whose answer body is spoiled:
   * cut short (a shorter body, complete as HTTP), cut off (the full length announced, the
   * connection dropped half-way through the body) or replaced by text that is not JSON (a
   * proxy's HTML error page), each a third of the time. The status and headers stay as they
   * were (Cobo's signature included: it no longer matches what arrives when cut off).
   */
  malformedResponseRate: number;
}

/** Ways serveEmulatorCall spoils an answer under `malformedResponseRate`. */
export const MALFORMED_MODES = ['truncated', 'cut_off', 'not_json'] as const;
export type MalformedMode = (typeof MALFORMED_MODES)[number];

/** An answer in the provider's format: JSON text, plus headers to set first. */
export interface EmulatorAnswer {
  status: number;
  text: string;
  headers?: Record<string, string>;
}

/** An injected refusal, with the fault kind it is counted under (sandbox.fault_injections). */
export interface EmulatorRefusal extends EmulatorAnswer {
  fault: string;
}

/** What one provider contributes to an emulated API call (see serveEmulatorCall). */
export interface EmulatorCall<F extends CallFaults> {
  faults(): Promise<F>;
  /** An injected refusal (error, rate limit) to answer instead of doing anything, or undefined. */
  refusal(faults: F): EmulatorRefusal | undefined;
  /** Authenticates the request and does the work. */
  work(faults: F): Promise<EmulatorAnswer>;
  /** The answer to whatever `faults` or `work` threw. */
  failure(err: unknown): EmulatorAnswer;
  send(answer: EmulatorAnswer, faults: F | undefined): void | Promise<void>;
  /** Counts one injected fault of `kind` (best effort, never throws; see FaultCounter). */
  injected?(kind: string): void;
}

/**
 * One call of an emulated provider API, with the faults in the order all emulators apply
 * them: latency; an injected refusal before anything is done (never followed by a dropped
 * connection); the work; then, whatever the outcome, maybe the timeout-after-commit fault
 * (the work is committed, the connection dropped unanswered) instead of the answer, or else
 * maybe a malformed answer (the work is committed, the body spoiled on the way).
 */
export async function serveEmulatorCall<F extends CallFaults>(req: FastifyRequest, reply: FastifyReply, call: EmulatorCall<F>): Promise<void> {
  let faults: F | undefined;
  let answer: EmulatorAnswer;
  try {
    faults = await call.faults();
    if (faults.latencyMs > 0) call.injected?.('latency');
    await sleep(faults.latencyMs);
    const refusal = call.refusal(faults);
    if (refusal) {
      call.injected?.(refusal.fault);
      const { fault: _fault, ...plain } = refusal;
      await call.send(plain, faults);
      return;
    }
    answer = await call.work(faults);
  } catch (err) {
    answer = call.failure(err);
  }
  if (faults && chance(faults.timeoutAfterCommitRate)) {
    // The caller never learns the outcome and must recover through the provider's read paths.
    call.injected?.('timeout_after_commit');
    await sleep(faults.timeoutAfterCommitDelayMs);
    req.socket.destroy();
    return;
  }
  if (faults && chance(faults.malformedResponseRate)) {
    const mode = MALFORMED_MODES[Math.floor(Math.random() * MALFORMED_MODES.length)]!;
    call.injected?.(`malformed_${mode}`);
    if (mode === 'cut_off') cutOffBody(reply.raw);
    else answer = { ...answer, text: mode === 'truncated' ? truncate(answer.text) : NOT_JSON };
  }
  await call.send(answer, faults);
}

/** What a proxy in front of the provider answers when it has lost its upstream. */
const NOT_JSON = '<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n';

/** A strict prefix of `text` (at least one character, never all of it): no longer valid JSON. */
function truncate(text: string): string {
  if (text.length < 2) return '';
  return text.slice(0, 1 + Math.floor(Math.random() * (text.length - 1)));
}

/**
 * Makes the response announce its full length but send only part of the body, then drop
 * the connection: the caller sees the headers (and status) and then a premature end.
 */
function cutOffBody(res: ServerResponse): void {
  res.end = ((chunk?: unknown, encoding?: unknown) => {
    const body = Buffer.isBuffer(chunk)
      ? chunk
      : Buffer.from(typeof chunk === 'string' ? chunk : '', typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
    const cut = body.length < 2 ? 0 : 1 + Math.floor(Math.random() * (body.length - 1));
    res.write(body.subarray(0, cut), () => res.socket?.destroy());
    return res;
  }) as typeof res.end;
}

/** Sends an answer as it is, headers first. */
export function sendAnswer(res: FastifyReply, answer: EmulatorAnswer): void {
  for (const [name, value] of Object.entries(answer.headers ?? {})) res.header(name, value);
  sendJsonText(res, answer.status, answer.text);
}

// --- the sandbox's own control endpoints ------------------------------------------------------

/** An error meant for the caller of a control endpoint, answered with its status as `{ error }`. */
export class SandboxControlError extends Error {
  constructor(
    readonly httpStatus: number,
    message: string,
  ) {
    super(message);
  }
}

/** An error meant for the caller of a control endpoint, answered as 400 `{ error }`. */
export class SandboxBadRequest extends SandboxControlError {
  constructor(message: string) {
    super(400, message);
  }
}

/**
 * Runs a control endpoint: SandboxControlErrors are answered with their status, the
 * `badRequest` error types with 400, both as `{ error }`; anything else is a 500.
 */
export async function control(
  res: FastifyReply,
  logger: Logger,
  fn: () => Promise<{ status?: number; body: unknown }>,
  badRequest: Array<new (...args: never[]) => Error> = [],
): Promise<void> {
  try {
    const { status = 200, body } = await fn();
    sendJson(res, status, body);
  } catch (err) {
    if (err instanceof SandboxControlError) {
      sendError(res, err.httpStatus, err.message);
      return;
    }
    if (badRequest.some((type) => err instanceof type)) {
      sendError(res, 400, (err as Error).message);
      return;
    }
    logger.error(`sandbox control endpoint failed: ${(err as Error)?.message}`);
    if (!res.sent) sendError(res, 500, 'internal error');
  }
}

/** An emulator's fault settings, as its `faults` control endpoints serve them. */
export interface FaultSettings {
  faults(): Promise<object>;
  /** Validates (throws FaultValidationError) and merges a partial update. */
  patchFaults(body: unknown): Promise<object>;
  resetFaults(): Promise<object>;
  /** How many faults of each kind were injected since the last reset (all processes). */
  injected(): Promise<Record<string, number>>;
  resetInjected(): Promise<void>;
}

/**
 * `GET`, `PUT` (a partial update, 400 `{ error }` when invalid) and `DELETE` (back to the
 * defaults) `faults`, and `GET`/`DELETE` `faults/injected` (the counts), under an emulator's controller path: every emulator's controller
 * extends this, and each answer is the resulting settings.
 */
export abstract class SandboxFaultsController {
  protected constructor(
    protected readonly logger: Logger,
    private readonly settings: FaultSettings,
  ) {}

  @Get('faults')
  getFaults(@Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => ({ body: await this.settings.faults() }));
  }

  @Put('faults')
  putFaults(@Req() req: FastifyRequest, @Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => ({ body: await this.settings.patchFaults(req.body) }), [FaultValidationError]);
  }

  @Delete('faults')
  resetFaults(@Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => ({ body: await this.settings.resetFaults() }));
  }

  /** `{ "<kind>": n }`: faults injected so far, counted by every process serving the emulator. */
  @Get('faults/injected')
  getInjected(@Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => ({ body: await this.settings.injected() }));
  }

  @Delete('faults/injected')
  resetInjected(@Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => {
      await this.settings.resetInjected();
      return { body: {} };
    });
  }
}
