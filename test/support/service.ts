import type { INestApplication } from '@nestjs/common';
import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import pg from 'pg';
import request from 'supertest';
import { createApp } from '../../src/app.js';
import { SANDBOX_ADMIN_KEY } from '../../src/auth/api-keys.service.js';
import { loadConfig } from '../../src/config/config.js';
import { createTestDatabase, dropTestDatabase } from './database.js';

export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export interface TestService {
  url: string;
  port: number;
  databaseUrl: string;
  queuePrefix: string;
  adminKey: string;
  app: INestApplication;
  db: pg.Pool;
  http: () => ReturnType<typeof request>;
  stop(): Promise<void>;
}

/** Fast timings so the suite sees retries, polls and sweeps within seconds. */
export const FAST_ENV: Record<string, string> = {
  POLL_INITIAL_DELAY_MS: '100',
  POLL_MAX_DELAY_MS: '500',
  SWEEP_INTERVAL_MS: '300',
  SWEEP_GRACE_MS: '1000',
  PROVIDER_TIMEOUT_MS: '2000',
  LEASE_MS: '6000',
  ABSENCE_GRACE_MS: '1000',
};

/**
 * Boots the whole service (ROLE=all, sandbox on) in this process on its own database and
 * its own BullMQ key prefix, listening on 127.0.0.1.
 */
export async function startService(label: string, env: Record<string, string> = {}): Promise<TestService> {
  const databaseUrl = await createTestDatabase(label);
  const port = await freePort();
  const queuePrefix = `test_${label}_${randomBytes(4).toString('hex')}`;
  const cfg = loadConfig({
    NODE_ENV: 'test',
    PORT: String(port),
    DATABASE_URL: databaseUrl,
    REDIS_URL,
    QUEUE_PREFIX: queuePrefix,
    SANDBOX: 'true',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    DB_POOL_SIZE: '30',
    ...FAST_ENV,
    ...env,
  });
  const app = (await createApp(cfg)) as INestApplication;
  await app.listen(port, '127.0.0.1');
  const db = new pg.Pool({ connectionString: databaseUrl, max: 5 });
  // Tests that terminate backends (or drop the database) would otherwise crash the run
  // through an idle client's unhandled 'error' event.
  db.on('error', () => undefined);
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    port,
    databaseUrl,
    queuePrefix,
    adminKey: SANDBOX_ADMIN_KEY,
    app,
    db,
    http: () => request(url),
    async stop() {
      await app.close();
      await db.end();
      await dropTestDatabase(databaseUrl);
      await deleteRedisPrefix(queuePrefix);
    },
  };
}

/**
 * A second API process (ROLE=api) on the same database and queue prefix as `svc`, booted in
 * this process: its own pool, its own per-payment gate, so creates sent to both race the way
 * two api processes behind a load balancer do.
 */
export async function startPeer(svc: TestService, env: Record<string, string> = {}): Promise<{ url: string; http: () => ReturnType<typeof request>; stop(): Promise<void> }> {
  const port = await freePort();
  const cfg = loadConfig({
    NODE_ENV: 'test',
    ROLE: 'api',
    PORT: String(port),
    DATABASE_URL: svc.databaseUrl,
    REDIS_URL,
    QUEUE_PREFIX: svc.queuePrefix,
    SANDBOX: 'true',
    SANDBOX_URL: `${svc.url}/sandbox`,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    DB_POOL_SIZE: '30',
    ...FAST_ENV,
    ...env,
  });
  const app = (await createApp(cfg)) as INestApplication;
  await app.listen(port, '127.0.0.1');
  const url = `http://127.0.0.1:${port}`;
  return { url, http: () => request(url), stop: () => app.close() };
}

export async function deleteRedisPrefix(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      if (keys.length) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/** Polls `fn` until it returns a truthy value; fails after `timeoutMs` (bounded). */
export async function waitFor<T>(fn: () => Promise<T | undefined | null | false>, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/** Creates a merchant API key through the admin API. */
export async function merchantKey(svc: TestService, merchantId: string): Promise<string> {
  const res = await svc
    .http()
    .post('/v1/api-keys')
    .set('Authorization', `Bearer ${svc.adminKey}`)
    .send({ role: 'merchant', merchantId, name: `${merchantId} test key` })
    .expect(201);
  return res.body.key as string;
}

export async function roleKey(svc: TestService, role: 'ops' | 'finance' | 'admin'): Promise<string> {
  const res = await svc
    .http()
    .post('/v1/api-keys')
    .set('Authorization', `Bearer ${svc.adminKey}`)
    .send({ role, name: `${role} test key` })
    .expect(201);
  return res.body.key as string;
}

/** A paid order at the sandbox provider. */
export async function sandboxPayment(svc: TestService, provider: string, amount: string, currency = 'USDT', status?: string) {
  const res = await svc
    .http()
    .post('/sandbox/payments')
    .send({ provider, amount, currency, ...(status ? { status } : {}) })
    .expect(201);
  return res.body.paymentId as string;
}

export async function setFaults(svc: TestService, provider: string, faults: Record<string, unknown>): Promise<void> {
  await svc.http().put(`/sandbox/${provider}/faults`).send(faults).expect((r) => {
    if (r.status >= 300) throw new Error(`faults rejected: ${r.status} ${JSON.stringify(r.body)}`);
  });
}
