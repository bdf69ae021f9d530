import { createPrivateKey } from 'node:crypto';

/**
 * Typed configuration, read once from the environment at start.
 *
 * Every variable is validated here so that a bad value stops the process with a
 * message naming the variable, instead of failing later in the middle of a refund.
 * Secrets are kept in this object only; nothing here is ever logged.
 */
export type Role = 'all' | 'api' | 'worker';

export interface BinancePayConfig {
  baseUrl: string;
  apiKey: string;
  secretKey: string;
}

export interface CoboConfig {
  baseUrl: string;
  apiPrivateKey?: string;
  publicKey: string;
}

export interface LeanConfig {
  baseUrl: string;
  authUrl: string;
  clientId?: string;
  clientSecret?: string;
  webhookSecret?: string;
}

export class AppConfig {
  nodeEnv!: string;
  port!: number;
  role!: Role;
  databaseUrl!: string;
  redisUrl!: string;
  /** Prefix of every BullMQ key, so several deployments (or test runs) can share one Redis. */
  queuePrefix!: string;
  /**
   * REDIS_URL names one node of a Redis Cluster (any node: the client learns the others).
   * Each BullMQ queue then gets a hash-tagged prefix of its own (`queuePrefix()`), so a
   * queue's keys share one slot and different queues can live on different shards.
   */
  redisCluster!: boolean;
  adminApiKey?: string;
  sandbox!: boolean;
  /**
   * Whether an API process serves the emulators itself (SANDBOX_SERVE, default true). False:
   * it uses the sandbox providers at sandboxUrl, served by another process, as workers do.
   */
  sandboxServe!: boolean;
  /** Where processes reach the built-in emulators (an API process serves them). */
  sandboxUrl!: string;
  /** Our own public address, used in the webhook URL we hand to providers. */
  publicUrl!: string;
  /** Whether PUBLIC_URL was set (a live provider is only told a webhook URL that is). */
  publicUrlExplicit!: boolean;
  migrationsRun!: boolean;
  logLevel!: string;
  dbPoolSize!: number;
  /** Named (server-side prepared) statements for repeated SQL; off behind a transaction-pooling PgBouncer. */
  dbPreparedStatements!: boolean;
  /** Most creates per batched statement (RefundsService); 1: no batching. */
  createBatchSize!: number;
  /** Explicit provider configuration; undefined when the credentials are absent. */
  binancePay?: BinancePayConfig;
  binancePayBaseUrl!: string;
  cobo!: CoboConfig;
  lean!: LeanConfig;
  processing!: ProcessingConfig;
  metrics!: MetricsConfig;
  rateLimit!: RateLimitConfig;
  /** How long an API process remembers an authenticated key (0: never); see ApiKeyCache. */
  apiKeyCacheMs!: number;
  providerWebhooks!: ProviderWebhookConfig;
}

/** Replay protection of the providers' webhooks (the receivers in src/providers, one per provider). */
export interface ProviderWebhookConfig {
  /**
   * Largest distance between a webhook's signed timestamp and our clock, either way
   * (Binance BinancePay-Timestamp, Cobo Biz-Timestamp: fresh on every delivery attempt).
   */
  toleranceMs: number;
  /**
   * Lean signs only the body, whose `timestamp` is the event's time and stays the same on
   * every retry (Lean retries for up to 258 minutes): the oldest event accepted.
   */
  leanMaxAgeMs: number;
}

/** Per-API-key request budget, shared across processes through Redis (src/auth/rate-limit.ts). */
export interface RateLimitConfig {
  /** Sustained requests per minute per key; 0 turns rate limiting off. */
  perMinute: number;
  /** Requests a key may send back to back (bucket size); defaults to perMinute. */
  burst: number;
}

export interface MetricsConfig {
  /**
   * Port of the small /metrics server a ROLE=worker process starts (it has no HTTP API);
   * 0 disables it. API processes serve /metrics on PORT.
   */
  port: number;
  /** Address that server binds (loopback by default: scrape through a sidecar or set 0.0.0.0). */
  host: string;
  /** When set, /metrics requires `Authorization: Bearer <token>`; unset, /metrics is public. */
  token?: string;
}

export interface ProcessingConfig {
  /** Upper bound of one provider HTTP call. */
  providerTimeoutMs: number;
  /** Jobs handled at once per provider queue in one worker process (I/O bound). */
  concurrency: number;
  /**
   * Most refunds per batched worker statement (lease claims, attempt rows); 1 sends each
   * alone. Batches form only while earlier ones are at Postgres (no timer).
   */
  batchSize: number;
  /** First delay before re-checking a refund the provider has not finalised. */
  pollInitialDelayMs: number;
  /** Cap of the exponential back-off between checks of one refund. */
  pollMaxDelayMs: number;
  /** How long a worker holds a refund exclusively; must exceed one provider call. */
  leaseMs: number;
  /** How often the recovery sweeper looks for refunds with no live job. */
  sweepIntervalMs: number;
  /** A refund due this long ago with no worker on it is presumed to have lost its job. */
  sweepGraceMs: number;
  /** Non-final refunds unchanged for longer than this are reported as stuck. */
  stuckAfterMs: number;
  /** The same horizon per provider (STUCK_AFTER_MS_<PROVIDER>, default STUCK_AFTER_MS). */
  stuckAfterMsByProvider: Record<'binance_pay' | 'cobo' | 'lean', number>;
  /**
   * For providers without idempotency (Lean): how long after a create whose answer was lost
   * its absence from the provider's list is still not taken as proof (lists can lag).
   */
  absenceGraceMs: number;
}

export class ConfigError extends Error {}

const ROLES: Role[] = ['all', 'api', 'worker'];

function bool(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (/^(true|1|yes)$/i.test(raw)) return true;
  if (/^(false|0|no)$/i.test(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${value}`);
  return value;
}

function url(env: NodeJS.ProcessEnv, name: string, fallback: string, protocols: string[]): string {
  const raw = env[name] === undefined || env[name] === '' ? fallback : env[name]!;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(`${name} is not a valid URL`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(`${name} must use ${protocols.join(' or ')}`);
  }
  // Base URLs are joined with paths later; a trailing slash would double it.
  return raw.replace(/\/+$/, '');
}

function optional(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw === '' ? undefined : raw;
}

function hexKey(env: NodeJS.ProcessEnv, name: string, bytes: number): string | undefined {
  const raw = optional(env, name);
  if (raw === undefined) return undefined;
  if (!new RegExp(`^[0-9a-fA-F]{${bytes * 2}}$`).test(raw)) {
    throw new ConfigError(`${name} must be ${bytes} bytes of hex (${bytes * 2} hex characters)`);
  }
  return raw.toLowerCase();
}

/** Cobo's production response-signing key (providers.md §2.4). */
export const COBO_PRODUCTION_PUBLIC_KEY = '8d4a482641adb2a34b726f05827dba9a9653e5857469b8749052bf4458a86729';

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  const cfg = new AppConfig();
  cfg.nodeEnv = env.NODE_ENV ?? 'development';
  cfg.port = int(env, 'PORT', 3000, 0, 65535);
  const role = (env.ROLE ?? 'all') as Role;
  if (!ROLES.includes(role)) throw new ConfigError(`ROLE must be one of ${ROLES.join(', ')}, got "${env.ROLE}"`);
  cfg.role = role;
  cfg.databaseUrl = url(env, 'DATABASE_URL', 'postgres://postgres:postgres@127.0.0.1:5432/refunds', [
    'postgres:',
    'postgresql:',
  ]);
  cfg.redisUrl = url(env, 'REDIS_URL', 'redis://127.0.0.1:6379', ['redis:', 'rediss:']);
  cfg.queuePrefix = optional(env, 'QUEUE_PREFIX') ?? 'refunds';
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(cfg.queuePrefix)) {
    throw new ConfigError('QUEUE_PREFIX may hold only letters, digits, "_", "." and "-" (at most 64)');
  }
  cfg.redisCluster = bool(env, 'REDIS_CLUSTER', false);
  if (cfg.redisCluster && !/^\/?0?$/.test(new URL(cfg.redisUrl).pathname)) {
    // A cluster has database 0 only; a URL naming another one is a mistake to report, not ignore.
    throw new ConfigError('REDIS_URL may not name a database other than 0 when REDIS_CLUSTER=true');
  }
  cfg.sandbox = bool(env, 'SANDBOX', cfg.nodeEnv !== 'production');
  cfg.sandboxServe = bool(env, 'SANDBOX_SERVE', true);
  cfg.adminApiKey = optional(env, 'ADMIN_API_KEY');
  if (cfg.adminApiKey !== undefined && cfg.adminApiKey.length < 16) {
    throw new ConfigError('ADMIN_API_KEY must be at least 16 characters');
  }
  if (cfg.adminApiKey === undefined && !cfg.sandbox) {
    throw new ConfigError('ADMIN_API_KEY is required unless SANDBOX=true');
  }
  cfg.migrationsRun = bool(env, 'MIGRATIONS_RUN', true);
  cfg.logLevel = optional(env, 'LOG_LEVEL') ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(cfg.logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent`);
  }
  cfg.dbPoolSize = int(env, 'DB_POOL_SIZE', 20, 2, 500);
  cfg.dbPreparedStatements = bool(env, 'DB_PREPARED_STATEMENTS', true);
  cfg.createBatchSize = int(env, 'CREATE_BATCH_SIZE', 64, 1, 1000);
  cfg.publicUrl = url(env, 'PUBLIC_URL', `http://127.0.0.1:${cfg.port}`, ['http:', 'https:']);
  cfg.sandboxUrl = url(env, 'SANDBOX_URL', `http://127.0.0.1:${cfg.port}/sandbox`, ['http:', 'https:']);

  cfg.binancePayBaseUrl = url(env, 'BINANCE_PAY_BASE_URL', 'https://bpay.binanceapi.com', ['http:', 'https:']);
  const binanceKey = optional(env, 'BINANCE_PAY_API_KEY');
  const binanceSecret = optional(env, 'BINANCE_PAY_SECRET_KEY');
  if ((binanceKey === undefined) !== (binanceSecret === undefined)) {
    throw new ConfigError('BINANCE_PAY_API_KEY and BINANCE_PAY_SECRET_KEY must be set together');
  }
  if (binanceKey !== undefined && binanceSecret !== undefined) {
    cfg.binancePay = { baseUrl: cfg.binancePayBaseUrl, apiKey: binanceKey, secretKey: binanceSecret };
  }

  const coboPrivate = hexKey(env, 'COBO_API_PRIVATE_KEY', 32);
  if (coboPrivate !== undefined) assertEd25519Seed(coboPrivate);
  cfg.cobo = {
    baseUrl: url(env, 'COBO_BASE_URL', 'https://api.cobo.com/v2', ['http:', 'https:']),
    apiPrivateKey: coboPrivate,
    publicKey: hexKey(env, 'COBO_PUBLIC_KEY', 32) ?? COBO_PRODUCTION_PUBLIC_KEY,
  };
  cfg.lean = {
    baseUrl: url(env, 'LEAN_BASE_URL', 'https://api2.leantech.me', ['http:', 'https:']),
    authUrl: url(env, 'LEAN_AUTH_URL', 'https://auth.leantech.me', ['http:', 'https:']),
    clientId: optional(env, 'LEAN_CLIENT_ID'),
    clientSecret: optional(env, 'LEAN_CLIENT_SECRET'),
    webhookSecret: optional(env, 'LEAN_WEBHOOK_SECRET'),
  };

  cfg.processing = {
    providerTimeoutMs: int(env, 'PROVIDER_TIMEOUT_MS', 10_000, 100, 120_000),
    concurrency: int(env, 'WORKER_CONCURRENCY', 512, 1, 5_000),
    batchSize: int(env, 'WORKER_BATCH_SIZE', 64, 1, 1_000),
    pollInitialDelayMs: int(env, 'POLL_INITIAL_DELAY_MS', 1_000, 10, 3_600_000),
    pollMaxDelayMs: int(env, 'POLL_MAX_DELAY_MS', 60_000, 10, 86_400_000),
    leaseMs: int(env, 'LEASE_MS', 60_000, 1_000, 3_600_000),
    sweepIntervalMs: int(env, 'SWEEP_INTERVAL_MS', 10_000, 100, 3_600_000),
    sweepGraceMs: int(env, 'SWEEP_GRACE_MS', 30_000, 0, 86_400_000),
    stuckAfterMs: int(env, 'STUCK_AFTER_MS', 30 * 60_000, 1_000, 30 * 86_400_000),
    absenceGraceMs: int(env, 'ABSENCE_GRACE_MS', 30_000, 0, 86_400_000),
    stuckAfterMsByProvider: { binance_pay: 0, cobo: 0, lean: 0 },
  };
  for (const p of ['binance_pay', 'cobo', 'lean'] as const) {
    cfg.processing.stuckAfterMsByProvider[p] = int(
      env,
      `STUCK_AFTER_MS_${p.toUpperCase()}`,
      cfg.processing.stuckAfterMs,
      1_000,
      30 * 86_400_000,
    );
  }
  // A step may make two calls back to back (query, then create); the lease is renewed per call.
  if (cfg.processing.leaseMs < 2 * cfg.processing.providerTimeoutMs + 1_000) {
    throw new ConfigError('LEASE_MS must be at least 2 x PROVIDER_TIMEOUT_MS + 1000');
  }
  const live = cfg.binancePay !== undefined || cfg.cobo.apiPrivateKey !== undefined || cfg.lean.clientId !== undefined;
  if (cfg.sandbox && live && cfg.adminApiKey === undefined) {
    // The sandbox's well-known admin key must never guard real provider credentials.
    throw new ConfigError('ADMIN_API_KEY is required when provider credentials are set (SANDBOX is on)');
  }
  cfg.metrics = {
    port: int(env, 'METRICS_PORT', 9464, 0, 65535),
    host: optional(env, 'METRICS_HOST') ?? '127.0.0.1',
    token: optional(env, 'METRICS_TOKEN'),
  };
  if (!/^[A-Za-z0-9.:-]{1,253}$/.test(cfg.metrics.host)) {
    throw new ConfigError('METRICS_HOST must be an IP address or a host name');
  }
  if (cfg.metrics.token !== undefined && !/^[\x21-\x7e]{16,512}$/.test(cfg.metrics.token)) {
    throw new ConfigError('METRICS_TOKEN must be 16 to 512 printable characters without spaces');
  }
  cfg.publicUrlExplicit = optional(env, 'PUBLIC_URL') !== undefined;
  const perMinute = int(env, 'RATE_LIMIT_PER_MINUTE', 600, 0, 1_000_000);
  cfg.rateLimit = { perMinute, burst: int(env, 'RATE_LIMIT_BURST', Math.max(perMinute, 1), 1, 1_000_000) };
  cfg.apiKeyCacheMs = int(env, 'API_KEY_CACHE_MS', 10_000, 0, 300_000);
  cfg.providerWebhooks = {
    toleranceMs: int(env, 'PROVIDER_WEBHOOK_TOLERANCE_MS', 300_000, 1_000, 86_400_000),
    leanMaxAgeMs: int(env, 'LEAN_WEBHOOK_MAX_AGE_MS', 6 * 3_600_000, 1_000, 7 * 86_400_000),
  };
  return cfg;
}

function assertEd25519Seed(hex: string): void {
  try {
    // PKCS#8 wrapper of a raw 32-byte Ed25519 seed.
    const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), Buffer.from(hex, 'hex')]);
    createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } catch {
    throw new ConfigError('COBO_API_PRIVATE_KEY is not a valid Ed25519 seed');
  }
}
