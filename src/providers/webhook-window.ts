import { Problem } from '../common/problem.js';

/**
 * Replay protection of provider webhooks: a webhook whose signed time is too far from our
 * clock is refused (401, nothing changed), so a captured request cannot be replayed later.
 * Within the window a replay is still possible, and harmless: every webhook is applied like
 * a poll result, conditionally on the refund's status (idempotent, order-independent).
 */
export interface WebhookWindow {
  /** Accepted distance into the future (clock skew). */
  futureMs: number;
  /** Accepted age. */
  pastMs: number;
}

/** Reads a signed time: Unix milliseconds as digits, or an ISO 8601 date-time. */
export function parseSignedTime(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (typeof value !== 'string' || value.trim() === '') return undefined;
  const text = value.trim();
  if (/^\d{1,16}$/.test(text)) return Number(text);
  // A date without a time or an offset would be read in some time zone: require both.
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i.test(text)) return undefined;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? undefined : ms;
}

/** Throws 401 unless `signedAt` lies within the window around `now`. */
export function assertWithinWindow(provider: string, what: string, raw: unknown, window: WebhookWindow, now = Date.now()): void {
  const signedAt = parseSignedTime(raw);
  if (signedAt === undefined) {
    throw new Problem('unauthorized', `${provider} webhook without a readable ${what}; refused.`, { reason: 'webhook_timestamp_invalid' });
  }
  const age = now - signedAt;
  if (age > window.pastMs || -age > window.futureMs) {
    const seconds = (ms: number) => Math.round(ms / 1000);
    const where = age > 0 ? `${seconds(age)} s old` : `${seconds(-age)} s in the future`;
    throw new Problem(
      'unauthorized',
      `${provider} webhook ${what} is ${where}; accepted from ${seconds(window.pastMs)} s in the past to ${seconds(window.futureMs)} s in the future. Nothing was changed.`,
      { reason: 'webhook_timestamp_out_of_window' },
    );
  }
}
