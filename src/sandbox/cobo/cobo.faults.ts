import { FaultRule, parseFaultPatch, resolveFaults } from '../sandbox-faults.js';

/**
 * Fault injection and timing settings of the Cobo emulator. Stored in Postgres
 * (sandbox.faults, one row per provider) so every process serving the emulator applies
 * the same ones.
 */
export interface CoboFaults {
  /** Delay before handling an API call. */
  latencyMs: number;
  /** Share of API calls answered HTTP 500 (signed error 2000) before anything is done. */
  errorRate: number;
  /** Share of API calls that do their work and commit, then drop the connection unanswered. */
  timeoutAfterCommitRate: number;
  /** Wait between the commit and dropping the connection. */
  timeoutAfterCommitDelayMs: number;
  /**
   * Share of calls that do their work and commit, then answer a spoiled body: cut short, cut
   * off mid-body (full length announced, connection dropped) or not JSON at all (sandbox-http.ts).
   */
  malformedResponseRate: number;
  /**
   * Share of API calls answered HTTP 429 with `Retry-After` before anything is done: body
   * `{"error_code":2026,...}` (2026 "too many requests", providers.md §2.6), and unsigned,
   * like the gateway answers the Python SDK accepts without Biz-Resp-Signature (§2.4).
   */
  rateLimitRate: number;
  /** The `Retry-After` (seconds) of those 429 answers. */
  rateLimitRetryAfterSeconds: number;
  /** Share of API answers sent without Biz-Timestamp / Biz-Resp-Signature. */
  unsignedResponseRate: number;
  /** Share of API answers sent with a Biz-Resp-Signature that does not verify. */
  badSignatureRate: number;
  /** Accepted distance between Biz-Api-Nonce (ms) and the arrival time; Cobo's is [UNKNOWN]. */
  nonceWindowMs: number;
  /** Time a refund stays Pending before processing starts. */
  processAfterMs: number;
  /** Time from the start of processing to the final status (half Submitted, half Confirming). */
  settleAfterMs: number;
  /** Share of refunds that end PartiallyCompleted (decided when processing starts). */
  partialRate: number;
  /** Share of a partially completed refund that completes (rounded down to 2 decimals). */
  partialCompletedRatio: number;
  /** Share of refunds that end Failed (decided when processing starts). */
  failRate: number;
  /** Refuse new refunds with 12002 (balance too low). */
  insufficientBalance: boolean;
  /** A repeated request_id: refuse with 2040 (default), or return the stored refund. */
  duplicateRequestId: 'reject' | 'return_existing';
  /** Where refund webhooks go; null (default) sends none. */
  webhookUrl: string | null;
  /** Share of refund webhooks never sent. */
  dropWebhookRate: number;
  /** Share of refund webhooks sent twice (the same event_id). */
  duplicateWebhookRate: number;
  /** Delay before the first delivery attempt of a webhook. */
  webhookDelayMs: number;
  /**
   * Up to this much more delay, drawn per webhook (and per copy of a duplicated one), so
   * webhooks overtake each other: an earlier status (Pending) may arrive after a later one.
   */
  webhookJitterMs: number;
}

export const COBO_FAULT_DEFAULTS: Readonly<CoboFaults> = Object.freeze({
  latencyMs: 0,
  errorRate: 0,
  timeoutAfterCommitRate: 0,
  timeoutAfterCommitDelayMs: 0,
  malformedResponseRate: 0,
  rateLimitRate: 0,
  rateLimitRetryAfterSeconds: 1,
  unsignedResponseRate: 0,
  badSignatureRate: 0,
  nonceWindowMs: 300_000,
  processAfterMs: 300,
  settleAfterMs: 1_000,
  partialRate: 0,
  partialCompletedRatio: 0.5,
  failRate: 0,
  insufficientBalance: false,
  duplicateRequestId: 'reject',
  webhookUrl: null,
  dropWebhookRate: 0,
  duplicateWebhookRate: 0,
  webhookDelayMs: 0,
  webhookJitterMs: 0,
});

const HOUR_MS = 3_600_000;
const RULES: Record<keyof CoboFaults, FaultRule> = {
  latencyMs: { kind: 'ms', max: 120_000 },
  errorRate: { kind: 'rate' },
  timeoutAfterCommitRate: { kind: 'rate' },
  timeoutAfterCommitDelayMs: { kind: 'ms', max: 120_000 },
  malformedResponseRate: { kind: 'rate' },
  rateLimitRate: { kind: 'rate' },
  rateLimitRetryAfterSeconds: { kind: 'int', min: 0, max: 3_600, unit: 'seconds' },
  unsignedResponseRate: { kind: 'rate' },
  badSignatureRate: { kind: 'rate' },
  nonceWindowMs: { kind: 'ms', max: 24 * HOUR_MS },
  processAfterMs: { kind: 'ms', max: 24 * HOUR_MS },
  settleAfterMs: { kind: 'ms', max: 24 * HOUR_MS },
  partialRate: { kind: 'rate' },
  partialCompletedRatio: { kind: 'ratio' },
  failRate: { kind: 'rate' },
  insufficientBalance: { kind: 'boolean' },
  duplicateRequestId: { kind: 'enum', values: ['reject', 'return_existing'] },
  webhookUrl: { kind: 'url' },
  dropWebhookRate: { kind: 'rate' },
  duplicateWebhookRate: { kind: 'rate' },
  webhookDelayMs: { kind: 'ms', max: HOUR_MS },
  webhookJitterMs: { kind: 'ms', max: HOUR_MS },
};

/** Validates a partial update; throws FaultValidationError (sandbox-faults.ts) naming the key. */
export function parseCoboFaultPatch(body: unknown): Partial<CoboFaults> {
  return parseFaultPatch<CoboFaults>(RULES, body);
}

export function resolveCoboFaults(stored: Record<string, unknown> | undefined): CoboFaults {
  return resolveFaults<CoboFaults>(COBO_FAULT_DEFAULTS, RULES, stored);
}
