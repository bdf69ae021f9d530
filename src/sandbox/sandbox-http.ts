import type { Logger } from '@nestjs/common';
import type { Response } from 'express';

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

/** An error meant for the caller of a control endpoint, answered as 400 `{ error }`. */
export class SandboxBadRequest extends Error {}

/** Runs a control endpoint: its own errors become 400 `{ error }`, anything else 500. */
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
    if (err instanceof SandboxBadRequest || badRequest.some((type) => err instanceof type)) {
      sendError(res, 400, (err as Error).message);
      return;
    }
    logger.error(`sandbox control endpoint failed: ${(err as Error)?.message}`);
    if (!res.headersSent) sendError(res, 500, 'internal error');
  }
}
