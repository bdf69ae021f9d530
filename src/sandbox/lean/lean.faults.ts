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
  /** Share of API/token calls answered 429 RATE_LIMIT_EXCEEDED (Retry-After: 1) before anything is done. */
  rateLimitRate: number;
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
}

export const LEAN_FAULT_DEFAULTS: Readonly<LeanFaults> = Object.freeze({
  latencyMs: 0,
  errorRate: 0,
  timeoutAfterCommitRate: 0,
  timeoutAfterCommitDelayMs: 0,
  rateLimitRate: 0,
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
});

type Rule =
  | { kind: 'rate' }
  | { kind: 'int'; min: number; max: number; unit: string }
  | { kind: 'boolean' }
  | { kind: 'status' }
  | { kind: 'url' }
  | { kind: 'prefix' };

const HOUR_MS = 3_600_000;
const RULES: Record<keyof LeanFaults, Rule> = {
  latencyMs: { kind: 'int', min: 0, max: 120_000, unit: 'milliseconds' },
  errorRate: { kind: 'rate' },
  timeoutAfterCommitRate: { kind: 'rate' },
  timeoutAfterCommitDelayMs: { kind: 'int', min: 0, max: 120_000, unit: 'milliseconds' },
  rateLimitRate: { kind: 'rate' },
  tokenTtlSeconds: { kind: 'int', min: 1, max: 86_400, unit: 'seconds' },
  settleAfterMs: { kind: 'int', min: 0, max: 24 * HOUR_MS, unit: 'milliseconds' },
  failRate: { kind: 'rate' },
  successStatus: { kind: 'status' },
  checkerRejectRate: { kind: 'rate' },
  partialBatch: { kind: 'boolean' },
  webhookUrl: { kind: 'url' },
  eventPrefix: { kind: 'prefix' },
  dropWebhookRate: { kind: 'rate' },
  duplicateWebhookRate: { kind: 'rate' },
  webhookDelayMs: { kind: 'int', min: 0, max: HOUR_MS, unit: 'milliseconds' },
};

export class LeanFaultValidationError extends Error {}

function check(key: string, rule: Rule, value: unknown): void {
  const fail = (message: string) => {
    throw new LeanFaultValidationError(`${key} ${message}`);
  };
  switch (rule.kind) {
    case 'rate':
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1) fail('must be a number between 0 and 1');
      return;
    case 'int':
      if (typeof value !== 'number' || !Number.isInteger(value) || value < rule.min || value > rule.max) {
        fail(`must be a whole number of ${rule.unit} between ${rule.min} and ${rule.max}`);
      }
      return;
    case 'boolean':
      if (typeof value !== 'boolean') fail('must be true or false');
      return;
    case 'status':
      if (typeof value !== 'string' || !/^[A-Z][A-Z_]{1,39}$/.test(value)) fail('must be an upper-case status name');
      if ((FIXED_REFUND_STATUSES as readonly string[]).includes(value as string)) {
        fail(`must differ from ${FIXED_REFUND_STATUSES.join(', ')}`);
      }
      return;
    case 'url': {
      if (value === null) return;
      let parsed: URL | undefined;
      try {
        parsed = typeof value === 'string' && value.length <= 2_000 ? new URL(value) : undefined;
      } catch {
        parsed = undefined;
      }
      if (!parsed || !['http:', 'https:'].includes(parsed.protocol)) fail('must be an http(s) URL or null');
      return;
    }
    case 'prefix':
      if (typeof value !== 'string' || !/^[a-z][a-z0-9_]{0,39}(\.[a-z][a-z0-9_]{0,39}){0,3}$/.test(value)) {
        fail('must be lower-case words joined by dots, e.g. "refund" or "payout.refund"');
      }
      return;
  }
}

/** Validates a partial update; throws LeanFaultValidationError naming the offending key. */
export function parseLeanFaultPatch(body: unknown): Partial<LeanFaults> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new LeanFaultValidationError('the body must be a JSON object');
  }
  const patch: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) {
    const rule = (RULES as Record<string, Rule | undefined>)[key];
    if (!rule) throw new LeanFaultValidationError(`unknown fault setting "${key}"`);
    check(key, rule, value);
    patch[key] = value;
  }
  return patch as Partial<LeanFaults>;
}

/** Defaults overlaid with the stored settings; stored keys no longer known are ignored. */
export function resolveLeanFaults(stored: Record<string, unknown> | undefined, defaults: Readonly<LeanFaults>): LeanFaults {
  const out: Record<string, unknown> = { ...defaults };
  for (const key of Object.keys(RULES)) {
    if (stored && stored[key] !== undefined) out[key] = stored[key];
  }
  return out as unknown as LeanFaults;
}

/** Math.random is fine here: fault rates decide test behaviour, never amounts or secrets. */
export function chance(rate: number): boolean {
  return rate > 0 && Math.random() < rate;
}
