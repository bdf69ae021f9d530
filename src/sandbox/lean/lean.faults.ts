import { FaultRule, parseFaultPatch, resolveFaults } from '../sandbox-faults.js';
import { FIXED_REFUND_STATUSES } from './lean.rules.js';

/**
 * Fault injection and behaviour settings of the Lean emulator. Stored in Postgres
 * (sandbox.lean_faults, one row) so every process serving the emulator applies the same ones.
 */
export interface LeanFaults {
  /** Delay before handling an API or token call. */
  latencyMs: number;
  /** Share of API/token calls answered 500 INTERNAL_SERVER_ERROR before anything is done. */
  errorRate: number;
  /** Share of API/token calls that do their work and commit, then drop the connection unanswered. */
  timeoutAfterCommitRate: number;
  /** Wait between the commit and dropping the connection. */
  timeoutAfterCommitDelayMs: number;
  /**
   * Share of calls that do their work and commit, then answer a spoiled body: cut short, cut
   * off mid-body (full length announced, connection dropped) or not JSON at all (sandbox-http.ts).
   */
  malformedResponseRate: number;
  /** Share of API/token calls answered 429 RATE_LIMIT_EXCEEDED with `Retry-After` before anything is done. */
  rateLimitRate: number;
  /** The `Retry-After` (seconds) of those 429 answers. */
  rateLimitRetryAfterSeconds: number;
  /** Lifetime of issued access tokens (Lean: 3599 s). */
  tokenTtlSeconds: number;
  /** Time an APPROVED refund takes to reach its final status. */
  settleAfterMs: number;
  /** Share of approved refunds that end FAILED (decided at approval). */
  failRate: number;
  /** Name of the final success status (Lean's is undocumented). */
  successStatus: string;
  /** Share of created refunds a checker at Lean rejects right away, before anyone approves. */
  checkerRejectRate: number;
  /** One bad item: refuse the whole batch (false) or create/process the good ones (true). */
  partialBatch: boolean;
  /** Where refund webhooks go (Lean: configured in the dashboard); null sends none. */
  webhookUrl: string | null;
  /** Webhook type is `<eventPrefix>.<status lowercased>` (Lean's refund event names are undocumented). */
  eventPrefix: string;
  /** Share of webhooks never sent. */
  dropWebhookRate: number;
  /** Share of webhooks sent twice (same event_id). */
  duplicateWebhookRate: number;
  /** Delay before the first delivery attempt of a webhook. */
  webhookDelayMs: number;
  /**
   * Up to this much more delay, drawn per webhook (and per copy of a duplicated one), so
   * webhooks overtake each other: an earlier status may arrive after a later one.
   */
  webhookJitterMs: number;
}

export const LEAN_FAULT_DEFAULTS: Readonly<LeanFaults> = Object.freeze({
  latencyMs: 0,
  errorRate: 0,
  timeoutAfterCommitRate: 0,
  timeoutAfterCommitDelayMs: 0,
  malformedResponseRate: 0,
  rateLimitRate: 0,
  rateLimitRetryAfterSeconds: 1,
  tokenTtlSeconds: 3599,
  settleAfterMs: 1_000,
  failRate: 0,
  successStatus: 'COMPLETED',
  checkerRejectRate: 0,
  partialBatch: false,
  webhookUrl: null,
  eventPrefix: 'refund',
  dropWebhookRate: 0,
  duplicateWebhookRate: 0,
  webhookDelayMs: 0,
  webhookJitterMs: 0,
});

/**
 * Lean's own URL check: any URL the WHATWG parser reads as http: or https:, up to 2,000
 * characters. Not the generic 'url' rule, which also wants a literal http(s):// prefix,
 * allows 2,048 characters and words its error differently.
 */
function checkWebhookUrl(value: unknown): string | undefined {
  if (value === null) return undefined;
  let parsed: URL | undefined;
  try {
    parsed = typeof value === 'string' && value.length <= 2_000 ? new URL(value) : undefined;
  } catch {
    parsed = undefined;
  }
  return !parsed || !['http:', 'https:'].includes(parsed.protocol) ? 'must be an http(s) URL or null' : undefined;
}

function checkSuccessStatus(value: unknown): string | undefined {
  if (typeof value !== 'string' || !/^[A-Z][A-Z_]{1,39}$/.test(value)) return 'must be an upper-case status name';
  if ((FIXED_REFUND_STATUSES as readonly string[]).includes(value)) return `must differ from ${FIXED_REFUND_STATUSES.join(', ')}`;
  return undefined;
}

function checkEventPrefix(value: unknown): string | undefined {
  return typeof value !== 'string' || !/^[a-z][a-z0-9_]{0,39}(\.[a-z][a-z0-9_]{0,39}){0,3}$/.test(value)
    ? 'must be lower-case words joined by dots, e.g. "refund" or "payout.refund"'
    : undefined;
}

const HOUR_MS = 3_600_000;
const RULES: Record<keyof LeanFaults, FaultRule> = {
  latencyMs: { kind: 'ms', max: 120_000 },
  errorRate: { kind: 'rate' },
  timeoutAfterCommitRate: { kind: 'rate' },
  timeoutAfterCommitDelayMs: { kind: 'ms', max: 120_000 },
  malformedResponseRate: { kind: 'rate' },
  rateLimitRate: { kind: 'rate' },
  rateLimitRetryAfterSeconds: { kind: 'int', min: 0, max: 3_600, unit: 'seconds' },
  tokenTtlSeconds: { kind: 'int', min: 1, max: 86_400, unit: 'seconds' },
  settleAfterMs: { kind: 'ms', max: 24 * HOUR_MS },
  failRate: { kind: 'rate' },
  successStatus: { kind: 'check', check: checkSuccessStatus },
  checkerRejectRate: { kind: 'rate' },
  partialBatch: { kind: 'boolean' },
  webhookUrl: { kind: 'check', check: checkWebhookUrl },
  eventPrefix: { kind: 'check', check: checkEventPrefix },
  dropWebhookRate: { kind: 'rate' },
  duplicateWebhookRate: { kind: 'rate' },
  webhookDelayMs: { kind: 'ms', max: HOUR_MS },
  webhookJitterMs: { kind: 'ms', max: HOUR_MS },
};

/** Validates a partial update; throws FaultValidationError (sandbox-faults.ts) naming the key. */
export function parseLeanFaultPatch(body: unknown): Partial<LeanFaults> {
  return parseFaultPatch<LeanFaults>(RULES, body);
}

/** `defaults` (the configured webhookUrl included) overlaid with the stored settings. */
export function resolveLeanFaults(stored: Record<string, unknown> | undefined, defaults: Readonly<LeanFaults>): LeanFaults {
  return resolveFaults<LeanFaults>(defaults, RULES, stored);
}
