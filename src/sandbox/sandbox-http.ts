import { Delete, Get, Put, Req, Res } from '@nestjs/common';
import type { Logger } from '@nestjs/common';
import type { Request, Response } from 'express';
import { FaultValidationError, chance } from './sandbox-faults.js';

/**
 * Small helpers shared by the emulators' controllers. Emulator routes write their own
 * responses (`@Res()`), so the service's problem+json filter never answers for them.
 */

export function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}

/** Sends text already serialised as JSON (lossless-json output included). */
export function sendJsonText(res: Response, status: number, text: string): void {
  res.status(status).type('application/json').send(text);
}

export function sendJson(res: Response, status: number, body: unknown): void {
  sendJsonText(res, status, JSON.stringify(body));
}

/** Error answer of the sandbox's own control endpoints (not a provider protocol). */
export function sendError(res: Response, status: number, error: string): void {
  sendJson(res, status, { error });
}

// --- the emulated provider APIs ------------------------------------------------------------

/** The fault settings every emulated API call applies. */
export interface CallFaults {
  latencyMs: number;
  timeoutAfterCommitRate: number;
  timeoutAfterCommitDelayMs: number;
}

/** An answer in the provider's format: JSON text, plus headers to set first. */
export interface EmulatorAnswer {
  status: number;
  text: string;
  headers?: Record<string, string>;
}

/** What one provider contributes to an emulated API call (see serveEmulatorCall). */
export interface EmulatorCall<F extends CallFaults> {
  faults(): Promise<F>;
  /** An injected refusal (error, rate limit) to answer instead of doing anything, or undefined. */
  refusal(faults: F): EmulatorAnswer | undefined;
  /** Authenticates the request and does the work. */
  work(faults: F): Promise<EmulatorAnswer>;
  /** The answer to whatever `faults` or `work` threw. */
  failure(err: unknown): EmulatorAnswer;
  send(answer: EmulatorAnswer, faults: F | undefined): void | Promise<void>;
}

/**
 * One call of an emulated provider API, with the faults in the order all emulators apply
 * them: latency; an injected refusal before anything is done (never followed by a dropped
 * connection); the work; then, whatever the outcome, maybe the timeout-after-commit fault
 * (the work is committed, the connection dropped unanswered) instead of the answer.
 */
export async function serveEmulatorCall<F extends CallFaults>(req: Request, call: EmulatorCall<F>): Promise<void> {
  let faults: F | undefined;
  let answer: EmulatorAnswer;
  try {
    faults = await call.faults();
    await sleep(faults.latencyMs);
    const refusal = call.refusal(faults);
    if (refusal) {
      await call.send(refusal, faults);
      return;
    }
    answer = await call.work(faults);
  } catch (err) {
    answer = call.failure(err);
  }
  if (faults && chance(faults.timeoutAfterCommitRate)) {
    // The caller never learns the outcome and must recover through the provider's read paths.
    await sleep(faults.timeoutAfterCommitDelayMs);
    req.socket.destroy();
    return;
  }
  await call.send(answer, faults);
}

/** Sends an answer as it is, headers first. */
export function sendAnswer(res: Response, answer: EmulatorAnswer): void {
  for (const [name, value] of Object.entries(answer.headers ?? {})) res.setHeader(name, value);
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
  res: Response,
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
    if (!res.headersSent) sendError(res, 500, 'internal error');
  }
}

/** An emulator's fault settings, as its `faults` control endpoints serve them. */
export interface FaultSettings {
  faults(): Promise<object>;
  /** Validates (throws FaultValidationError) and merges a partial update. */
  patchFaults(body: unknown): Promise<object>;
  resetFaults(): Promise<object>;
}

/**
 * `GET`, `PUT` (a partial update, 400 `{ error }` when invalid) and `DELETE` (back to the
 * defaults) `faults` under an emulator's controller path: every emulator's controller
 * extends this, and each answer is the resulting settings.
 */
export abstract class SandboxFaultsController {
  protected constructor(
    protected readonly logger: Logger,
    private readonly settings: FaultSettings,
  ) {}

  @Get('faults')
  getFaults(@Res() res: Response): Promise<void> {
    return control(res, this.logger, async () => ({ body: await this.settings.faults() }));
  }

  @Put('faults')
  putFaults(@Req() req: Request, @Res() res: Response): Promise<void> {
    return control(res, this.logger, async () => ({ body: await this.settings.patchFaults(req.body) }), [FaultValidationError]);
  }

  @Delete('faults')
  resetFaults(@Res() res: Response): Promise<void> {
    return control(res, this.logger, async () => ({ body: await this.settings.resetFaults() }));
  }
}
