/**
 * Fault injection settings of the Binance Pay emulator. Stored in Postgres (sandbox.faults,
 * one row per provider) so every process serving the emulator applies the same ones.
 */
export interface BinancePayFaults {
  /** Delay before handling a merchant API call. */
  latencyMs: number;
  /** Share of merchant API calls answered HTTP 500 before anything is done. */
  errorRate: number;
  /** Share of merchant API calls that do their work and commit, then drop the connection unanswered. */
  timeoutAfterCommitRate: number;
  /** Wait between the commit and dropping the connection. */
  timeoutAfterCommitDelayMs: number;
  /** Accepted distance between BinancePay-Timestamp and the server clock (docs: 1 s). */
  timestampWindowMs: number;
  /** Time a refund stays REFUND_PENDING. */
  settleAfterMs: number;
  /** Share of refunds that end REFUND_FAIL (decided when the refund is created). */
  refundFailRate: number;
  /** Refuse new refunds with 400304 (merchant balance too low). */
  insufficientBalance: boolean;
  /** A repeated refundRequestId with another amount or prepayId: return the stored refund, or refuse with 400102. */
  duplicateMismatch: 'return_existing' | 'reject';
  /** Share of refund webhooks never sent. */
  dropWebhookRate: number;
  /** Share of refund webhooks sent twice. */
  duplicateWebhookRate: number;
  /** Delay before the first delivery attempt of a webhook. */
  webhookDelayMs: number;
}

export const BINANCE_PAY_FAULT_DEFAULTS: Readonly<BinancePayFaults> = Object.freeze({
  latencyMs: 0,
  errorRate: 0,
  timeoutAfterCommitRate: 0,
  timeoutAfterCommitDelayMs: 0,
  timestampWindowMs: 1_000,
  settleAfterMs: 1_000,
  refundFailRate: 0,
  insufficientBalance: false,
  duplicateMismatch: 'return_existing',
  dropWebhookRate: 0,
  duplicateWebhookRate: 0,
  webhookDelayMs: 0,
});

type Rule =
  | { kind: 'rate' }
  | { kind: 'ms'; max: number }
  | { kind: 'boolean' }
  | { kind: 'enum'; values: readonly string[] };

const HOUR_MS = 3_600_000;
const RULES: Record<keyof BinancePayFaults, Rule> = {
  latencyMs: { kind: 'ms', max: 120_000 },
  errorRate: { kind: 'rate' },
  timeoutAfterCommitRate: { kind: 'rate' },
  timeoutAfterCommitDelayMs: { kind: 'ms', max: 120_000 },
  // Up to a day: the "relaxed mode" of providers.md §4 for clients with skewed clocks.
  timestampWindowMs: { kind: 'ms', max: 24 * HOUR_MS },
  settleAfterMs: { kind: 'ms', max: 24 * HOUR_MS },
  refundFailRate: { kind: 'rate' },
  insufficientBalance: { kind: 'boolean' },
  duplicateMismatch: { kind: 'enum', values: ['return_existing', 'reject'] },
  dropWebhookRate: { kind: 'rate' },
  duplicateWebhookRate: { kind: 'rate' },
  webhookDelayMs: { kind: 'ms', max: HOUR_MS },
};

export class FaultValidationError extends Error {}

/** Validates a partial update; throws FaultValidationError naming the offending key. */
export function parseBinancePayFaultPatch(body: unknown): Partial<BinancePayFaults> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new FaultValidationError('the body must be a JSON object');
  }
  const patch: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) {
    const rule = (RULES as Record<string, Rule | undefined>)[key];
    if (!rule) throw new FaultValidationError(`unknown fault setting "${key}"`);
    switch (rule.kind) {
      case 'rate':
        if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1) {
          throw new FaultValidationError(`${key} must be a number between 0 and 1`);
        }
        break;
      case 'ms':
        if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > rule.max) {
          throw new FaultValidationError(`${key} must be a whole number of milliseconds between 0 and ${rule.max}`);
        }
        break;
      case 'boolean':
        if (typeof value !== 'boolean') throw new FaultValidationError(`${key} must be true or false`);
        break;
      case 'enum':
        if (typeof value !== 'string' || !rule.values.includes(value)) {
          throw new FaultValidationError(`${key} must be one of ${rule.values.join(', ')}`);
        }
        break;
    }
    patch[key] = value;
  }
  return patch as Partial<BinancePayFaults>;
}

/** Defaults overlaid with the stored settings; stored keys no longer known are ignored. */
export function resolveBinancePayFaults(stored: Record<string, unknown> | undefined): BinancePayFaults {
  const out: Record<string, unknown> = { ...BINANCE_PAY_FAULT_DEFAULTS };
  for (const key of Object.keys(RULES)) {
    if (stored && stored[key] !== undefined) out[key] = stored[key];
  }
  return out as unknown as BinancePayFaults;
}

/** Math.random is fine here: fault rates decide test behaviour, never amounts or secrets. */
export function chance(rate: number): boolean {
  return rate > 0 && Math.random() < rate;
}
