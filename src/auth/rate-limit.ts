import { Injectable, Logger, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import type { FastifyReply } from 'fastify';
import type { Redis } from 'ioredis';
import { Problem } from '../common/problem.js';
import { withTimeout } from '../common/with-timeout.js';
import { AppConfig } from '../config/config.js';
import { redisClient } from '../processing/queues.js';

/**
 * GCRA (a token bucket kept as one timestamp, the "theoretical arrival time") in one Lua
 * script, so the check and the update are atomic for every process sharing the Redis.
 * Time is Redis's own clock (TIME), so processes with skewed clocks still agree.
 *
 * KEYS[1] the key's bucket; KEYS[2] the key's revocation marker (ApiKeysService.revoke);
 * ARGV[1] ms between requests at the sustained rate (may be fractional); ARGV[2] bucket size
 * (burst). Returns { allowed (1|0), remaining, retryAfterMs, resetMs (until the bucket is
 * full), revoked (1|0) }; a revoked key takes nothing from the budget.
 */
const GCRA_SCRIPT = `
if redis.call('EXISTS', KEYS[2]) == 1 then
  return { 0, 0, 0, 0, 1 }
end
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local tolerance = emission * burst
local newTat = tat + emission
local allowAt = newTat - tolerance
if now < allowAt then
  return { 0, 0, math.ceil(allowAt - now), math.ceil(tat - now), 0 }
end
redis.call('SET', KEYS[1], tostring(newTat), 'PX', math.max(1, math.ceil(newTat - now)))
return { 1, math.floor((now + tolerance - newTat) / emission), 0, math.ceil(newTat - now), 0 }
`;

/** How long start-up waits for the limiter's connection before going on without it. */
const CONNECT_WAIT_MS = 3_000;

type RedisWithGcra = Redis & {
  gcra(bucket: string, revoked: string, emissionMs: string, burst: string): Promise<[number, number, number, number, number]>;
};

export interface RateLimitDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Seconds until the next request is allowed (0 when allowed). */
  retryAfterSeconds: number;
  /** Seconds until the bucket is full again. */
  resetSeconds: number;
  /** The key was revoked (a marker written after the revocation committed). */
  revoked: boolean;
}

/** How long a revocation marker stays: far longer than any API_KEY_CACHE_MS (at most 5 min). */
const REVOKED_MARKER_SECONDS = 86_400;

/** Logs "Redis unavailable, failing open" at most this often. */
const OUTAGE_LOG_INTERVAL_MS = 30_000;
/** A rate-limit check never holds a request up longer than this (then it fails open). */
const COMMAND_TIMEOUT_MS = 500;

/**
 * Per-API-key rate limit (refunds-api.md §8 `rate_limited`), shared by every process on
 * one Redis: RATE_LIMIT_PER_MINUTE requests per minute sustained, RATE_LIMIT_BURST back to
 * back (default: one minute's budget). Keyed by the authenticated key's id (the bootstrap
 * admin key included), so it runs after authentication; see ApiKeyGuard.
 *
 * When Redis cannot answer within COMMAND_TIMEOUT_MS the request is let through and the
 * outage is logged: a limiter outage must not turn into an API outage (the API's own
 * dependency checks answer 503 where Redis is really needed).
 */
@Injectable()
export class RateLimiter implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('RateLimiter');
  private redis?: RedisWithGcra;
  private lastOutageLog = 0;
  /**
   * Moves whenever the Redis connection closes: revocation markers written while it was away,
   * or lost with a restarted Redis, cannot be trusted to be seen, so ApiKeyCache forgets
   * what it remembered before (see there).
   */
  connectionEpoch = 0;
  private readonly emissionMs: number;

  constructor(private readonly cfg: AppConfig) {
    this.emissionMs = cfg.rateLimit.perMinute > 0 ? 60_000 / cfg.rateLimit.perMinute : 0;
  }

  get enabled(): boolean {
    return this.cfg.rateLimit.perMinute > 0 && this.cfg.role !== 'worker';
  }

  async onModuleInit(): Promise<void> {
    if (!this.enabled) return;
    // A cluster client (REDIS_CLUSTER=true) is typed apart but takes the same calls here.
    const redis = redisClient(this.cfg, {
      lazyConnect: true,
      // Fail fast (and open) while Redis is away instead of queueing requests behind it.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectTimeout: 2_000,
      connectionName: `${this.cfg.queuePrefix}:ratelimit`,
      // One script per API request: under load, the scripts of all requests read in one
      // event-loop turn go out in one write, and their answers come back in one read,
      // instead of a socket write each (docs/performance.md, finding 32). Standalone only:
      // a cluster client takes this from its own options, which redisClient() leaves alone.
      // A batch waits for the one before it, so take() bounds the wait itself.
      enableAutoPipelining: true,
    }) as unknown as RedisWithGcra;
    redis.defineCommand('gcra', { numberOfKeys: 2, lua: GCRA_SCRIPT });
    redis.on('error', (err: Error) => this.outage(err));
    redis.on('close', () => this.connectionEpoch++);
    // A cluster client emits no 'close' when one master drops (its connection to that node
    // errors instead), yet that node's revocation markers may be gone: forget remembered keys.
    redis.on('node error', () => this.connectionEpoch++);
    this.redis = redis;
    // Bounded: a cluster client's connect() never settles while the cluster state is 'fail'
    // (a master down at start), and the API must still start and fail open.
    const connecting = redis.connect();
    connecting.catch(() => undefined);
    try {
      await Promise.race([
        connecting,
        new Promise((_, reject) => setTimeout(() => reject(new Error('Redis not ready within 3 s')), CONNECT_WAIT_MS).unref()),
      ]);
    } catch (err) {
      // Start anyway: ioredis keeps reconnecting, and until then requests pass (fail open).
      this.outage(err);
    }
  }

  async onModuleDestroy(): Promise<void> {
    const redis = this.redis;
    this.redis = undefined;
    if (!redis) return;
    try {
      await redis.quit();
    } catch {
      redis.disconnect();
    }
  }

  /** Takes one request from the key's budget; undefined when limiting is off or Redis is away. */
  async take(keyId: string): Promise<RateLimitDecision | undefined> {
    if (!this.enabled || !this.redis) return undefined;
    const burst = this.cfg.rateLimit.burst;
    try {
      // A deadline from the call: ioredis's commandTimeout starts only when the command is
      // written, and with auto-pipelining a command first waits for the batch in flight
      // before it, which on a stalled Redis would double the wait.
      const [allowed, remaining, retryAfterMs, resetMs, revoked] = await withTimeout(
        this.redis.gcra(this.bucketKey(keyId), this.revokedKey(keyId), String(this.emissionMs), String(burst)),
        COMMAND_TIMEOUT_MS,
      );
      return {
        allowed: allowed === 1,
        limit: burst,
        remaining: Math.max(0, Math.min(burst, Number(remaining))),
        retryAfterSeconds: Math.max(allowed === 1 ? 0 : 1, Math.ceil(Number(retryAfterMs) / 1000)),
        resetSeconds: Math.max(0, Math.ceil(Number(resetMs) / 1000)),
        revoked: revoked === 1,
      };
    } catch (err) {
      this.outage(err);
      return undefined;
    }
  }

  /**
   * Takes one request for the key, sets the RateLimit-* headers (IETF draft
   * httpapi-ratelimit-headers) and throws 429 `rate_limited` (with Retry-After, set by
   * ProblemFilter) when the budget is spent.
   */
  async enforce(keyId: string, reply: FastifyReply | undefined): Promise<RateLimitDecision | undefined> {
    const d = await this.take(keyId);
    if (!d || d.revoked) return d;
    if (reply && !reply.sent) {
      const windowSeconds = Math.max(1, Math.round((60 * d.limit) / this.cfg.rateLimit.perMinute));
      reply.header('RateLimit-Limit', String(d.limit));
      reply.header('RateLimit-Remaining', String(d.remaining));
      reply.header('RateLimit-Reset', String(d.resetSeconds));
      reply.header('RateLimit-Policy', `${d.limit};w=${windowSeconds}`);
    }
    if (!d.allowed) {
      throw new Problem('rate_limited', `Rate limit of ${this.cfg.rateLimit.perMinute} requests per minute for this API key exceeded; retry in ${d.retryAfterSeconds} s.`, {
        retryAfterSeconds: d.retryAfterSeconds,
      });
    }
    return d;
  }

  /**
   * Marks a key revoked for every API process's next request (see ApiKeyCache), before the
   * revocation is committed: when Redis cannot take the marker the revocation is refused
   * (503, nothing changed), since processes that remember the key would not hear of it. A
   * marker whose revocation then fails to commit only refuses a key one step early; the
   * revocation is retried. No-op when rate limiting is off (nothing is remembered then).
   */
  async markRevoked(keyId: string): Promise<void> {
    if (!this.enabled) return;
    try {
      if (!this.redis) throw new Error('no Redis connection');
      await this.redis.set(this.revokedKey(keyId), '1', 'EX', REVOKED_MARKER_SECONDS);
    } catch (err) {
      this.outage(err);
      throw new Problem('service_unavailable', 'The revocation cannot be announced to every API process right now (Redis is unavailable); nothing was changed. Try again shortly.', {
        retryAfterSeconds: 5,
      });
    }
  }

  // The key id as a hash tag: both keys of the script land in one Redis Cluster slot.
  private bucketKey(keyId: string): string {
    return `${this.cfg.queuePrefix}:ratelimit:{${keyId}}`;
  }

  private revokedKey(keyId: string): string {
    return `${this.cfg.queuePrefix}:revoked:{${keyId}}`;
  }

  private outage(err: unknown): void {
    const now = Date.now();
    if (now - this.lastOutageLog < OUTAGE_LOG_INTERVAL_MS) return;
    this.lastOutageLog = now;
    this.logger.warn(`rate limiter cannot reach Redis, letting requests through: ${(err as Error)?.message ?? String(err)}`);
  }
}
