import type { INestApplication } from '@nestjs/common';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import net from 'node:net';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { RateLimiter } from '../src/auth/rate-limit.js';
import { loadConfig } from '../src/config/config.js';
import { FAST_ENV, freePort, REDIS_URL, startService, TestService } from './support/service.js';

// Two API processes (Nest apps in this test process) on one database and one Redis prefix,
// each with RATE_LIMIT_PER_MINUTE=5: one budget of 5 back to back per key, refilled one
// request every 12 s, shared by both.
const LIMIT = 5;
let a: TestService;
let b: INestApplication;
let bUrl: string;

beforeAll(async () => {
  a = await startService('ratelimit', { RATE_LIMIT_PER_MINUTE: String(LIMIT) });
  const port = await freePort();
  const cfg = loadConfig({
    NODE_ENV: 'test',
    ROLE: 'api',
    PORT: String(port),
    DATABASE_URL: a.databaseUrl,
    REDIS_URL,
    QUEUE_PREFIX: a.queuePrefix,
    SANDBOX: 'true',
    SANDBOX_URL: `${a.url}/sandbox`,
    PUBLIC_URL: a.url,
    LOG_LEVEL: 'silent',
    RATE_LIMIT_PER_MINUTE: String(LIMIT),
    ...FAST_ENV,
  });
  b = (await createApp(cfg)) as INestApplication;
  await b.listen(port, '127.0.0.1');
  bUrl = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  await b?.close();
  await a?.stop();
});

let merchantSeq = 0;
/**
 * A fresh merchant key (fresh budget), written straight to the database the way
 * ApiKeysService stores it (SHA-256 only), so setup spends no admin budget.
 */
async function freshKey(): Promise<string> {
  const merchantId = `MRL${++merchantSeq}`;
  const key = `rk_merchant_${randomBytes(32).toString('base64url')}`;
  await a.db.query(`INSERT INTO merchants (id) VALUES ($1) ON CONFLICT (id) DO NOTHING`, [merchantId]);
  await a.db.query(
    `INSERT INTO api_keys (id, key_hash, key_prefix, role, merchant_id, name, created_by) VALUES ($1, $2, $3, 'merchant', $4, 'rate limit test', 'test')`,
    [randomUUID(), createHash('sha256').update(key).digest(), key.slice(0, 16), merchantId],
  );
  return key;
}

function list(url: string, key: string) {
  return request(url).get('/v1/refunds').set('Authorization', `Bearer ${key}`);
}

describe('rate limiting per API key (RATE_LIMIT_PER_MINUTE=5)', () => {
  it('answers 429 rate_limited with Retry-After and RateLimit-* headers once the budget is spent', async () => {
    const key = await freshKey();
    for (let i = 0; i < LIMIT; i++) {
      const res = await list(a.url, key);
      expect(res.status).toBe(200);
      expect(res.headers['ratelimit-limit']).toBe(String(LIMIT));
      expect(res.headers['ratelimit-remaining']).toBe(String(LIMIT - 1 - i));
      expect(res.headers['ratelimit-policy']).toBe(`${LIMIT};w=60`);
      expect(Number(res.headers['ratelimit-reset'])).toBeGreaterThan(0);
    }
    const res = await list(a.url, key);
    expect(res.status).toBe(429);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.body).toMatchObject({ status: 429, code: 'rate_limited', title: 'Too many requests' });
    const retryAfter = Number(res.headers['retry-after']);
    // One request refills every 60/5 = 12 s.
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(12);
    expect(res.headers['ratelimit-remaining']).toBe('0');
    expect(Number(res.headers['ratelimit-reset'])).toBeGreaterThanOrEqual(retryAfter);
    // Still limited on every route, including ones the key's role may not call (403 otherwise).
    const other = await request(a.url).get('/v1/reports/summary').set('Authorization', `Bearer ${key}`);
    expect(other.status).toBe(429);
  });

  it('leaves other keys alone', async () => {
    const spent = await freshKey();
    const other = await freshKey();
    for (let i = 0; i <= LIMIT; i++) await list(a.url, spent);
    expect((await list(a.url, spent)).status).toBe(429);
    const res = await list(a.url, other);
    expect(res.status).toBe(200);
    expect(res.headers['ratelimit-remaining']).toBe(String(LIMIT - 1));
  });

  it('shares one budget between two processes', async () => {
    const key = await freshKey();
    for (let i = 0; i < 3; i++) expect((await list(a.url, key)).status).toBe(200);
    for (let i = 0; i < 2; i++) expect((await list(bUrl, key)).status).toBe(200);
    expect((await list(bUrl, key)).status).toBe(429);
    expect((await list(a.url, key)).status).toBe(429);
  });

  it('lets exactly the budget through when requests race across both processes', async () => {
    const key = await freshKey();
    const results = await Promise.all(Array.from({ length: 24 }, (_, i) => list(i % 2 ? a.url : bUrl, key)));
    const statuses = results.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 200)).toHaveLength(LIMIT);
    expect(statuses.filter((s) => s === 429)).toHaveLength(24 - LIMIT);
  });

  it('limits the bootstrap admin key too', async () => {
    let status = 0;
    for (let i = 0; i < 20 && status !== 429; i++) {
      status = (await request(bUrl).get('/v1/refunds').set('Authorization', `Bearer ${a.adminKey}`)).status;
    }
    expect(status).toBe(429);
  });

  it('does not rate-limit unauthenticated requests by key (they get 401, no RateLimit headers)', async () => {
    for (let i = 0; i < 3 * LIMIT; i++) {
      const res = await request(a.url).get('/v1/refunds').set('Authorization', 'Bearer not-a-key');
      expect(res.status).toBe(401);
      expect(res.headers['ratelimit-limit']).toBeUndefined();
    }
  });

  it('never limits public routes (health, provider webhooks)', async () => {
    for (let i = 0; i < 3 * LIMIT; i++) expect((await request(a.url).get('/health/live')).status).toBe(200);
  });
});

describe('RateLimiter outside the HTTP stack', () => {
  it('fails open, quickly, when Redis cannot be reached', async () => {
    const port = await freePort(); // nothing listens there
    const cfg = loadConfig({ NODE_ENV: 'test', REDIS_URL: `redis://127.0.0.1:${port}`, SANDBOX: 'true', RATE_LIMIT_PER_MINUTE: '1' });
    const limiter = new RateLimiter(cfg);
    await limiter.onModuleInit();
    try {
      const started = Date.now();
      for (let i = 0; i < 5; i++) {
        expect(await limiter.take('k')).toBeUndefined();
        await expect(limiter.enforce('k', undefined)).resolves.toBeUndefined();
      }
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      await limiter.onModuleDestroy();
    }
  });

  /** A started limiter with a budget of 10 a minute on `redisUrl`, under a fresh key prefix. */
  async function startLimiter(redisUrl: string, prefix: string): Promise<RateLimiter> {
    const cfg = loadConfig({
      NODE_ENV: 'test',
      REDIS_URL: redisUrl,
      SANDBOX: 'true',
      QUEUE_PREFIX: `${prefix}-${randomBytes(4).toString('hex')}`,
      RATE_LIMIT_PER_MINUTE: '10',
    });
    const limiter = new RateLimiter(cfg);
    await limiter.onModuleInit();
    return limiter;
  }

  it('takes exactly one unit per call when a burst of calls shares one pipelined write', async () => {
    const limiter = await startLimiter(REDIS_URL, 'rl-pipe');
    try {
      await limiter.take('warm'); // the script is loaded on the connection (EVAL once, then EVALSHA)
      const stream = (limiter as unknown as { redis: { stream: { write: (...args: unknown[]) => boolean } } }).redis.stream;
      const write = stream.write;
      let writes = 0;
      stream.write = function (this: unknown, ...args: unknown[]) {
        writes++;
        return write.apply(this, args);
      };
      // 50 requests of one key in one turn of the event loop, as under load.
      const decisions = await Promise.all(Array.from({ length: 50 }, () => limiter.take('burst')));
      stream.write = write;
      const allowed = decisions.filter((d) => d?.allowed);
      expect(allowed).toHaveLength(10);
      expect(decisions.filter((d) => d && !d.allowed)).toHaveLength(40);
      // Each allowed call took its own unit: remaining 9, 8, ..., 0, each once.
      expect(allowed.map((d) => d!.remaining).sort((x, y) => y - x)).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
      // One write for the 50 scripts, not one each (ioredis auto-pipelining).
      expect(writes).toBeLessThanOrEqual(2);
    } finally {
      await limiter.onModuleDestroy();
    }
  });

  it('fails open within its 500 ms of each call while Redis stalls, also behind a batch in flight', async () => {
    // A proxy in front of the test Redis that can hold Redis's answers back: a stalled Redis
    // without stalling the Redis other tests share.
    const target = new URL(REDIS_URL);
    let stalled = false;
    const sockets = new Set<net.Socket>();
    const proxy = net.createServer((client) => {
      const upstream = net.connect(Number(target.port || 6379), target.hostname);
      sockets.add(client).add(upstream);
      client.pipe(upstream);
      upstream.on('data', (chunk) => {
        if (!stalled) client.write(chunk);
      });
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const url = new URL(REDIS_URL);
    url.host = `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
    const limiter = await startLimiter(url.toString(), 'rl-stall');
    try {
      expect((await limiter.take('k'))?.allowed).toBe(true);
      stalled = true;
      const timed = async () => {
        const started = Date.now();
        const decision = await limiter.take('k');
        return { decision, ms: Date.now() - started };
      };
      // The first take's batch is written at once; the second, 50 ms later, waits behind it.
      const first = timed();
      await new Promise((resolve) => setTimeout(resolve, 50));
      const second = timed();
      for (const { decision, ms } of await Promise.all([first, second])) {
        expect(decision).toBeUndefined(); // failed open
        // 500 ms from its own call (with room for a busy machine); behind a batch without
        // a deadline of its own, the second took ~950 ms.
        expect(ms).toBeLessThan(800);
      }
    } finally {
      stalled = false;
      await limiter.onModuleDestroy();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  it('is off with RATE_LIMIT_PER_MINUTE=0', async () => {
    const cfg = loadConfig({ NODE_ENV: 'test', REDIS_URL, SANDBOX: 'true', RATE_LIMIT_PER_MINUTE: '0' });
    const limiter = new RateLimiter(cfg);
    await limiter.onModuleInit();
    expect(limiter.enabled).toBe(false);
    expect(await limiter.take('k')).toBeUndefined();
    await limiter.onModuleDestroy();
  });
});
