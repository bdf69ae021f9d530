import { ConfigError } from '../config/config.js';

/** The BullMQ queue of reconciliation runs (one job per run, job id = run id). */
export const RECONCILIATION_QUEUE = 'reconciliations';

/** What a run's job carries: the run id only (the row is the truth). */
export interface ReconciliationJobData {
  runId: string;
}

/** The longest window one run may cover. */
export const MAX_WINDOW_MS = 31 * 24 * 3_600_000;

/**
 * Tunables of reconciliation runs, read from the environment when the module starts (kept
 * out of AppConfig, like WebhookSettings; documented in README "Reconciliation"). A bad
 * value stops the process at start with a message naming the variable.
 */
export class ReconciliationSettings {
  /** `HH:MM` (UTC) of the daily run per enabled provider over the previous UTC day; undefined = off. */
  dailyAt?: { hour: number; minute: number };
  /** Provider lookups in flight at once within one run (Binance: one query per refund). */
  concurrency = 8;
  /** Retries of one provider call (a page or a lookup) before the run is marked failed. */
  providerRetries = 4;
  /** First retry delay; doubled per retry, with ±20% jitter, capped at 30 s. */
  retryBaseMs = 1_000;
  /** Most list pages one run reads; a longer listing fails the run rather than loop on. */
  maxPages = 2_000;
  /**
   * Clock and hand-off slack between our created_at and the provider's: the provider list is
   * read this far beyond the window on both sides, so a refund created at 23:59:59.9 here and
   * at 00:00:00.3 at the provider is still paired (a longer delay is resolved by a lookup).
   */
  slackMs = 10 * 60_000;
  /** How long a worker holds a run between heartbeats before another may take it over. */
  leaseMs = 60_000;
  /** How often the sweeper re-enqueues runs without a live job and creates the daily runs. */
  sweepIntervalMs = 15_000;
  /** A queued run older than this with no job is presumed lost and re-enqueued. */
  sweepGraceMs = 30_000;
  /** Executions of one run (crashes, Postgres outages) before it is marked failed. */
  maxRunAttempts = 5;

  static fromEnv(env: NodeJS.ProcessEnv = process.env): ReconciliationSettings {
    const s = new ReconciliationSettings();
    const daily = env.RECONCILIATION_DAILY_AT;
    if (daily !== undefined && daily !== '') {
      const m = /^([01]\d|2[0-3]):([0-5]\d)$/.exec(daily);
      if (!m) throw new ConfigError(`RECONCILIATION_DAILY_AT must be HH:MM (UTC, 00:00 to 23:59), got "${daily}"`);
      s.dailyAt = { hour: Number(m[1]), minute: Number(m[2]) };
    }
    s.concurrency = int(env, 'RECONCILIATION_CONCURRENCY', s.concurrency, 1, 64);
    s.providerRetries = int(env, 'RECONCILIATION_PROVIDER_RETRIES', s.providerRetries, 0, 20);
    s.retryBaseMs = int(env, 'RECONCILIATION_RETRY_BASE_MS', s.retryBaseMs, 1, 60_000);
    s.maxPages = int(env, 'RECONCILIATION_MAX_PAGES', s.maxPages, 1, 1_000_000);
    s.slackMs = int(env, 'RECONCILIATION_SLACK_MS', s.slackMs, 0, 24 * 3_600_000);
    s.leaseMs = int(env, 'RECONCILIATION_LEASE_MS', s.leaseMs, 1_000, 3_600_000);
    s.sweepIntervalMs = int(env, 'RECONCILIATION_SWEEP_INTERVAL_MS', s.sweepIntervalMs, 50, 3_600_000);
    s.sweepGraceMs = int(env, 'RECONCILIATION_SWEEP_GRACE_MS', s.sweepGraceMs, 0, 3_600_000);
    return s;
  }
}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${value}`);
  return value;
}

/** The previous UTC day [yesterday 00:00, today 00:00) once `now` is past today's `at`; else undefined. */
export function dailyWindow(now: Date, at: { hour: number; minute: number }): { from: Date; to: Date } | undefined {
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  if (now.getTime() < today + (at.hour * 60 + at.minute) * 60_000) return undefined;
  return { from: new Date(today - 86_400_000), to: new Date(today) };
}

/**
 * Delay before retry `retry` (1-based) of a provider call: base · 2^(retry-1), capped at
 * 30 s, times a jitter factor in [0.8, 1.2); a provider's Retry-After (capped at 60 s) wins
 * when longer.
 */
export function retryDelayMs(retry: number, baseMs: number, retryAfterMs?: number, random: () => number = Math.random): number {
  const exp = Math.min(30_000, baseMs * 2 ** Math.min(retry - 1, 20));
  const delay = Math.round(exp * (0.8 + 0.4 * random()));
  return retryAfterMs !== undefined ? Math.max(delay, Math.min(retryAfterMs, 60_000)) : delay;
}
