import { Injectable } from '@nestjs/common';
import { AppConfig } from '../config/config.js';
import type { AuthContext } from './auth-context.js';
import { RateLimiter } from './rate-limit.js';

/** Most keys remembered per process; beyond it the cache starts over (keys are few; this bounds a flood). */
const MAX_ENTRIES = 10_000;

/**
 * Authenticated API keys, remembered for API_KEY_CACHE_MS per API process, so a request
 * does not spend a database round trip on its key: it was one of a create's three
 * statements (docs/performance.md). Only keys that authenticated are kept, so guessing
 * cannot fill memory.
 *
 * A revoked key must stop at once in every process. A remembered key is therefore trusted
 * only together with the rate limiter's answer for the same request: the revocation writes
 * a marker to Redis before it commits (and is refused when it cannot), and the limiter's
 * script, which every request runs anyway, reports the marker (ApiKeyGuard answers 401).
 * When the limiter gives no answer (rate limiting off, Redis away) the guard looks the key
 * up in the database instead, and whatever was remembered before the limiter's connection
 * last closed is forgotten (a restarted Redis has lost its markers). What is left: a Redis
 * failover that loses a marker written just before it (replication is asynchronous); then a
 * process that remembers the key may serve it until the entry expires (API_KEY_CACHE_MS).
 */
@Injectable()
export class ApiKeyCache {
  private readonly entries = new Map<string, { auth: AuthContext; until: number; epoch: number }>();

  constructor(
    private readonly cfg: AppConfig,
    private readonly limiter: RateLimiter,
  ) {}

  /** Only where the rate limiter runs, since its answer is what confirms a remembered key. */
  get enabled(): boolean {
    return this.cfg.apiKeyCacheMs > 0 && this.cfg.rateLimit.perMinute > 0 && this.cfg.role !== 'worker';
  }

  get(hash: string): AuthContext | undefined {
    if (!this.enabled) return undefined;
    const entry = this.entries.get(hash);
    if (!entry) return undefined;
    if (entry.until > Date.now() && entry.epoch === this.limiter.connectionEpoch) return entry.auth;
    this.entries.delete(hash);
    return undefined;
  }

  put(hash: string, auth: AuthContext): void {
    if (!this.enabled) return;
    if (this.entries.size >= MAX_ENTRIES) this.entries.clear();
    this.entries.set(hash, { auth, until: Date.now() + this.cfg.apiKeyCacheMs, epoch: this.limiter.connectionEpoch });
  }

  forget(keyId: string): void {
    for (const [hash, entry] of this.entries) if (entry.auth.keyId === keyId) this.entries.delete(hash);
  }
}
