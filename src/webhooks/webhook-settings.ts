import { ConfigError } from '../config/config.js';

/** The BullMQ queue of merchant webhook deliveries (one job per delivery, job id = delivery id). */
export const WEBHOOK_QUEUE = 'merchant-webhooks';

/** What a delivery job carries: the delivery id only (the row is the truth). */
export interface WebhookJobData {
  deliveryId: string;
}

/**
 * Tunables of merchant webhook delivery, read from the environment when the module starts
 * (kept out of AppConfig on purpose; documented in README "Merchant webhooks"). A bad value
 * stops the process at start with a message naming the variable, like AppConfig does.
 */
export class WebhookSettings {
  /** Upper bound of one POST to a merchant endpoint (connect + answer). */
  timeoutMs = 10_000;
  /** First retry delay; doubled per failed attempt, with ±20% jitter. */
  retryBaseMs = 30_000;
  /** Cap of one retry delay. */
  retryMaxMs = 6 * 3_600_000;
  /** Attempts before a delivery is `failed`: with the defaults the retries span about 1.6 days. */
  maxAttempts = 16;
  /** How often the dispatcher turns outbox rows into deliveries. */
  dispatchIntervalMs = 250;
  /** Outbox rows taken per dispatcher transaction. */
  dispatchBatch = 200;
  /** How often the sweeper looks for pending deliveries with no live job. */
  sweepIntervalMs = 15_000;
  /** A pending delivery overdue by this much is presumed to have lost its job. */
  sweepGraceMs = 30_000;
  /** Deliveries in flight at once per worker process. */
  concurrency = 20;
  /**
   * Whether endpoints may resolve to loopback, private, link-local or other non-public
   * addresses. Off in production (a merchant URL must not reach our own network), on
   * elsewhere so local receivers work.
   */
  allowPrivateTargets = true;

  /** How long a worker holds a delivery while it sends (one timeout plus margin). */
  get leaseMs(): number {
    return this.timeoutMs + 5_000;
  }

  static fromEnv(env: NodeJS.ProcessEnv = process.env): WebhookSettings {
    const s = new WebhookSettings();
    s.timeoutMs = int(env, 'WEBHOOK_TIMEOUT_MS', s.timeoutMs, 100, 60_000);
    s.retryBaseMs = int(env, 'WEBHOOK_RETRY_BASE_MS', s.retryBaseMs, 10, 3_600_000);
    s.retryMaxMs = int(env, 'WEBHOOK_RETRY_MAX_MS', s.retryMaxMs, 10, 24 * 3_600_000);
    if (s.retryMaxMs < s.retryBaseMs) throw new ConfigError('WEBHOOK_RETRY_MAX_MS must be at least WEBHOOK_RETRY_BASE_MS');
    s.maxAttempts = int(env, 'WEBHOOK_MAX_ATTEMPTS', s.maxAttempts, 1, 100);
    s.dispatchIntervalMs = int(env, 'WEBHOOK_DISPATCH_INTERVAL_MS', s.dispatchIntervalMs, 10, 60_000);
    s.dispatchBatch = int(env, 'WEBHOOK_DISPATCH_BATCH', s.dispatchBatch, 1, 5_000);
    s.sweepIntervalMs = int(env, 'WEBHOOK_SWEEP_INTERVAL_MS', s.sweepIntervalMs, 50, 3_600_000);
    s.sweepGraceMs = int(env, 'WEBHOOK_SWEEP_GRACE_MS', s.sweepGraceMs, 0, 3_600_000);
    s.concurrency = int(env, 'WEBHOOK_CONCURRENCY', s.concurrency, 1, 500);
    s.allowPrivateTargets = bool(env, 'WEBHOOK_ALLOW_PRIVATE_TARGETS', env.NODE_ENV !== 'production');
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

function bool(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (/^(true|1|yes)$/i.test(raw)) return true;
  if (/^(false|0|no)$/i.test(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

/**
 * Delay before the next attempt after `attempts` failed ones (1-based), or undefined when
 * the budget is spent: base · 2^(attempts-1), capped, times a jitter factor in [0.8, 1.2)
 * so that many deliveries failing together (a merchant outage) do not retry in lockstep.
 */
export function retryDelayMs(
  attempts: number,
  maxAttempts: number,
  s: Pick<WebhookSettings, 'retryBaseMs' | 'retryMaxMs'>,
  random: () => number = Math.random,
): number | undefined {
  if (attempts >= maxAttempts) return undefined;
  const exp = Math.min(s.retryMaxMs, s.retryBaseMs * 2 ** Math.min(attempts - 1, 40));
  return Math.round(exp * (0.8 + 0.4 * random()));
}
