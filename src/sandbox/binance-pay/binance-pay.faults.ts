import { FaultRule, parseFaultPatch, resolveFaults } from '../sandbox-faults.js';

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
  /**
   * Share of calls that do their work and commit, then answer a spoiled body: cut short, cut
   * off mid-body (full length announced, connection dropped) or not JSON at all (sandbox-http.ts).
   */
  malformedResponseRate: number;
  /**
   * Share of merchant API calls answered HTTP 429 with `Retry-After` before anything is done.
   * Binance Pay's rate-limit answer is undocumented (providers.md §1.4); the emulator answers
   * like Binance's other APIs: 429, `Retry-After` in seconds, and a FAIL envelope with
   * 400000 UNKNOWN_ERROR ("retry later").
   */
  rateLimitRate: number;
  /** The `Retry-After` (seconds) of those 429 answers. */
  rateLimitRetryAfterSeconds: number;
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
  /**
   * Up to this much more delay, drawn per webhook (and per copy of a duplicated one), so
   * webhooks overtake each other: an earlier status may arrive after a later one.
   */
  webhookJitterMs: number;
}

export const BINANCE_PAY_FAULT_DEFAULTS: Readonly<BinancePayFaults> = Object.freeze({
  latencyMs: 0,
  errorRate: 0,
  timeoutAfterCommitRate: 0,
  timeoutAfterCommitDelayMs: 0,
  malformedResponseRate: 0,
  rateLimitRate: 0,
  rateLimitRetryAfterSeconds: 1,
  timestampWindowMs: 1_000,
  settleAfterMs: 1_000,
  refundFailRate: 0,
  insufficientBalance: false,
  duplicateMismatch: 'return_existing',
  dropWebhookRate: 0,
  duplicateWebhookRate: 0,
  webhookDelayMs: 0,
  webhookJitterMs: 0,
});

const HOUR_MS = 3_600_000;
const RULES: Record<keyof BinancePayFaults, FaultRule> = {
  latencyMs: { kind: 'ms', max: 120_000 },
  errorRate: { kind: 'rate' },
  timeoutAfterCommitRate: { kind: 'rate' },
  timeoutAfterCommitDelayMs: { kind: 'ms', max: 120_000 },
  malformedResponseRate: { kind: 'rate' },
  rateLimitRate: { kind: 'rate' },
  rateLimitRetryAfterSeconds: { kind: 'int', min: 0, max: 3_600, unit: 'seconds' },
  // Up to a day: the "relaxed mode" of providers.md §4 for clients with skewed clocks.
  timestampWindowMs: { kind: 'ms', max: 24 * HOUR_MS },
  settleAfterMs: { kind: 'ms', max: 24 * HOUR_MS },
  refundFailRate: { kind: 'rate' },
  insufficientBalance: { kind: 'boolean' },
  duplicateMismatch: { kind: 'enum', values: ['return_existing', 'reject'] },
  dropWebhookRate: { kind: 'rate' },
  duplicateWebhookRate: { kind: 'rate' },
  webhookDelayMs: { kind: 'ms', max: HOUR_MS },
  webhookJitterMs: { kind: 'ms', max: HOUR_MS },
};

/** Validates a partial update; throws FaultValidationError (sandbox-faults.ts) naming the key. */
export function parseBinancePayFaultPatch(body: unknown): Partial<BinancePayFaults> {
  return parseFaultPatch<BinancePayFaults>(RULES, body);
}

/** Defaults overlaid with the stored settings; stored keys no longer known are ignored. */
export function resolveBinancePayFaults(stored: Record<string, unknown> | undefined): BinancePayFaults {
  return resolveFaults<BinancePayFaults>(BINANCE_PAY_FAULT_DEFAULTS, RULES, stored);
}
