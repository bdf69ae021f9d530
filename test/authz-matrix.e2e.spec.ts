import type { INestApplication } from '@nestjs/common';
import type { FastifyInstance } from 'fastify';
import { servedRoutes } from '../src/common/served-routes.js';
import { createHash, randomUUID } from 'node:crypto';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiKeyCache } from '../src/auth/api-key-cache.js';
import { ApiKeysService } from '../src/auth/api-keys.service.js';
import type { RateLimiter } from '../src/auth/rate-limit.js';
import type { AppConfig } from '../src/config/config.js';
import type { Database } from '../src/database/database.js';
import { freePort, merchantKey, roleKey, sandboxPayment, startService, TestService, waitFor } from './support/service.js';

/**
 * Authorization matrix (refunds-api.md §2): every /v1 route × every kind of caller.
 *
 *   ok      the caller passes authorization: 2xx, or a 4xx that is about the request or the
 *           resource's state (400 validation, 409 invalid_state, 422), never 401/403/404/5xx;
 *           GETs must be 2xx. A merchant's answer never mentions another merchant's data.
 *   denied  403 forbidden (the role may not call the route)
 *   hidden  404 (another merchant's refund, payment or webhook endpoint: never revealed)
 *
 * Callers without a key, with an unknown key or with a revoked key get 401 on every route
 * (checked for every row below, not written in each). The table must cover every /v1 route
 * the application registers: a new route without a row fails "covers every route".
 */
type Expect = 'ok' | 'denied' | 'hidden';
type Caller = 'merchant' | 'other' | 'ops' | 'finance' | 'admin';
const CALLERS: Caller[] = ['merchant', 'other', 'ops', 'finance', 'admin'];

interface Row {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** `:name` segments are filled from the fixtures; a query string may follow. */
  path: string;
  expect: Record<Caller, Expect>;
  body?: (fx: Fixtures) => unknown;
  headers?: () => Record<string, string>;
}

function row(
  method: Row['method'],
  path: string,
  [merchant, other, ops, finance, admin]: [Expect, Expect, Expect, Expect, Expect],
  extra: Pick<Row, 'body' | 'headers'> = {},
): Row {
  return { method, path, expect: { merchant, other, ops, finance, admin }, ...extra };
}

const fresh = () => ({ 'Idempotency-Key': randomUUID() });

// "merchant" owns every fixture below; "other" is a second merchant.
// prettier-ignore
const MATRIX: Row[] = [
  //   method    path                                                            merchant  other     ops       finance   admin
  row('POST',   '/v1/api-keys',                                                 ['denied', 'denied', 'denied', 'denied', 'ok'], { body: () => ({ role: 'finance', name: 'matrix' }) }),
  row('DELETE', '/v1/api-keys/:spareKeyId',                                     ['denied', 'denied', 'denied', 'denied', 'ok']),
  row('GET',    '/v1/merchants/:merchantId',                                    ['denied', 'denied', 'denied', 'denied', 'ok']),
  row('PUT',    '/v1/merchants/:merchantId',                                    ['denied', 'denied', 'denied', 'denied', 'ok'], { body: () => ({ name: 'Matrix merchant' }) }),
  // Refunds are created and changed by a merchant identity; admin has none, so 403.
  row('POST',   '/v1/refunds',                                                  ['ok',     'hidden', 'denied', 'denied', 'denied'], { body: (fx) => ({ provider: 'binance_pay', paymentId: fx.paymentId, amount: '0.01', currency: 'USDT' }), headers: fresh }),
  row('POST',   '/v1/refunds/retry',                                            ['denied', 'denied', 'ok',     'denied', 'ok'], { body: () => ({ provider: 'lean', limit: 1 }) }),
  row('GET',    '/v1/refunds',                                                  ['ok',     'ok',     'ok',     'ok',     'ok']),
  row('GET',    '/v1/refunds?merchantId=:merchantId',                           ['ok',     'ok',     'ok',     'ok',     'ok']),
  row('GET',    '/v1/refunds/:refundId',                                        ['ok',     'hidden', 'ok',     'ok',     'ok']),
  row('GET',    '/v1/refunds/:refundId/attempts',                               ['ok',     'hidden', 'ok',     'ok',     'ok']),
  row('GET',    '/v1/refunds/:refundId/events',                                 ['ok',     'hidden', 'ok',     'ok',     'ok']),
  row('PATCH',  '/v1/refunds/:refundId',                                        ['ok',     'hidden', 'denied', 'denied', 'denied'], { body: () => ({ cobo: { toAddress: 'TMatrixAddress' } }) }),
  row('POST',   '/v1/refunds/:refundId/cancel',                                 ['ok',     'hidden', 'ok',     'denied', 'ok']),
  row('POST',   '/v1/refunds/:refundId/retry',                                  ['denied', 'denied', 'ok',     'denied', 'ok']),
  row('POST',   '/v1/refunds/:refundId/approve',                                ['denied', 'denied', 'ok',     'denied', 'ok']),
  row('POST',   '/v1/refunds/:refundId/reject',                                 ['denied', 'denied', 'ok',     'denied', 'ok']),
  row('POST',   '/v1/refunds/:refundId/review/resolve',                         ['denied', 'denied', 'ok',     'denied', 'ok'], { body: () => ({ comment: 'matrix' }) }),
  row('POST',   '/v1/refunds/:refundId/sync',                                   ['denied', 'denied', 'ok',     'denied', 'ok']),
  row('GET',    '/v1/refund-reasons',                                           ['ok',     'ok',     'ok',     'ok',     'ok']),
  row('GET',    '/v1/payments/binance_pay/:paymentId',                          ['ok',     'hidden', 'ok',     'ok',     'ok']),
  // Creating an endpoint makes one for the caller's own merchant; admin has none, so 403.
  row('POST',   '/v1/webhook-endpoints',                                        ['ok',     'ok',     'denied', 'denied', 'denied'], { body: (fx) => ({ url: fx.hookUrl }) }),
  row('GET',    '/v1/webhook-endpoints',                                        ['ok',     'ok',     'ok',     'denied', 'ok']),
  row('GET',    '/v1/webhook-endpoints?merchantId=:merchantId',                 ['ok',     'ok',     'ok',     'denied', 'ok']),
  row('GET',    '/v1/webhook-endpoints/:endpointId',                            ['ok',     'hidden', 'ok',     'denied', 'ok']),
  row('DELETE', '/v1/webhook-endpoints/:spareEndpointId',                       ['ok',     'hidden', 'denied', 'denied', 'denied']),
  row('GET',    '/v1/webhook-endpoints/:endpointId/deliveries',                 ['ok',     'hidden', 'ok',     'denied', 'ok']),
  row('POST',   '/v1/webhook-endpoints/:endpointId/deliveries/:deliveryId/redeliver', ['ok', 'hidden', 'ok',     'denied', 'ok']),
  row('GET',    '/v1/me',                                                       ['ok',     'ok',     'ok',     'ok',     'ok']),
  row('GET',    '/v1/queues',                                                   ['denied', 'denied', 'ok',     'denied', 'ok']),
  row('GET',    '/v1/reports/summary',                                          ['denied', 'denied', 'ok',     'ok',     'ok']),
  row('GET',    '/v1/reports/refunds.csv',                                      ['denied', 'denied', 'ok',     'ok',     'ok']),
  row('POST',   '/v1/reconciliations',                                          ['denied', 'denied', 'ok',     'ok',     'ok'], { body: () => ({ provider: 'binance_pay', from: new Date(Date.now() - 3_600_000).toISOString(), to: new Date().toISOString() }) }),
  row('GET',    '/v1/reconciliations',                                          ['denied', 'denied', 'ok',     'ok',     'ok']),
  row('GET',    '/v1/reconciliations/:reconciliationId',                        ['denied', 'denied', 'ok',     'ok',     'ok']),
];

/** Routes outside /v1 that are public by design (each authenticates otherwise or serves no data). */
// /console: static files of the ops console (no data; it calls /v1 with the user's key).
const PUBLIC_PREFIXES = ['/health/', '/webhooks/', '/sandbox/', '/metrics', '/docs', '/console'];

/**
 * Routes outside /v1 behind the API key guard: the MCP endpoint (any role may connect; each
 * tool applies its REST route's roles, tested in mcp.e2e.spec.ts).
 */
const AUTHENTICATED_NON_V1 = ['POST /mcp', 'GET /mcp', 'DELETE /mcp'];

/**
 * Bull Board's routes (a Fastify plugin): behind their own key check for ops and admin keys
 * (src/ops/ops-auth.ts), tried route by route in ops-queues.e2e.spec.ts.
 */
const OPS_BOARD_PREFIX = '/ops/queues';

interface Fixtures {
  merchantId: string;
  paymentId: string;
  refundId: string;
  endpointId: string;
  spareEndpointId: string;
  deliveryId: string;
  reconciliationId: string;
  spareKeyId: string;
  hookUrl: string;
}

let svc: TestService;
let fx: Fixtures;
const keys = {} as Record<Caller | 'revoked', string>;

function call(method: Row['method'], path: string, key: string | undefined, body?: unknown, headers: Record<string, string> = {}) {
  const r = request(svc.url)[method.toLowerCase() as 'get'](path);
  if (key !== undefined) r.set('Authorization', `Bearer ${key}`);
  for (const [k, v] of Object.entries(headers)) r.set(k, v);
  return body === undefined ? r : r.send(body as object);
}

function fill(path: string): string {
  return path.replace(/:([A-Za-z]+)/g, (_, name: string) => {
    const v = (fx as unknown as Record<string, string>)[name];
    if (v === undefined) throw new Error(`no fixture ${name}`);
    return encodeURIComponent(v);
  });
}

beforeAll(async () => {
  svc = await startService('authz');
  keys.merchant = await merchantKey(svc, 'MAUTHZ1');
  keys.other = await merchantKey(svc, 'MAUTHZ2');
  keys.ops = await roleKey(svc, 'ops');
  keys.finance = await roleKey(svc, 'finance');
  keys.admin = await roleKey(svc, 'admin');
  const admin = (m: Row['method'], p: string, body?: unknown) => call(m, p, keys.admin, body);

  const revoked = await admin('POST', '/v1/api-keys', { role: 'merchant', merchantId: 'MAUTHZ1', name: 'to revoke' }).expect(201);
  keys.revoked = revoked.body.key;
  await call('GET', '/v1/refunds', keys.revoked).expect(200);
  await admin('DELETE', `/v1/api-keys/${revoked.body.id}`).expect(204);
  const spareKey = await admin('POST', '/v1/api-keys', { role: 'finance', name: 'spare' }).expect(201);

  // Nothing listens there: deliveries simply fail and are retried later.
  const hookUrl = `http://127.0.0.1:${await freePort()}/hooks`;
  const endpoint = await call('POST', '/v1/webhook-endpoints', keys.merchant, { url: hookUrl }).expect(201);
  const spareEndpoint = await call('POST', '/v1/webhook-endpoints', keys.merchant, { url: hookUrl }).expect(201);

  const paymentId = await sandboxPayment(svc, 'binance_pay', '100.00');
  const refund = await call('POST', '/v1/refunds', keys.merchant, { provider: 'binance_pay', paymentId, amount: '1.00', currency: 'USDT' }, fresh()).expect(202);
  const deliveryId = await waitFor(async () => {
    const res = await call('GET', `/v1/webhook-endpoints/${endpoint.body.id}/deliveries`, keys.merchant).expect(200);
    return (res.body.data as Array<{ id: string }>)[0]?.id;
  }, 20_000, 'a webhook delivery');
  const run = await call('POST', '/v1/reconciliations', keys.finance, {
    provider: 'binance_pay',
    from: new Date(Date.now() - 3_600_000).toISOString(),
    to: new Date().toISOString(),
  }).expect(202);

  fx = {
    merchantId: 'MAUTHZ1',
    paymentId,
    refundId: refund.body.id,
    endpointId: endpoint.body.id,
    spareEndpointId: spareEndpoint.body.id,
    deliveryId,
    reconciliationId: run.body.id,
    spareKeyId: spareKey.body.id,
    hookUrl,
  };
});

afterAll(async () => {
  await svc?.stop();
});

/** Method and path of every route the app serves (Fastify's onRoute, src/common/served-routes.ts). */
function registeredRoutes(app: INestApplication): string[] {
  const routes = servedRoutes(app.getHttpAdapter().getInstance() as FastifyInstance);
  return [...new Set(routes.map((r) => `${r.method} ${normalise(r.url)}`))].sort();
}
function normalise(path: string): string {
  return path.split('?')[0].replace(/:[A-Za-z]+/g, ':p').replace(/\/+$/, '') || '/';
}

describe('authorization matrix', () => {
  it('covers every registered /v1 route, and every other route is public by design', () => {
    const registered = registeredRoutes(svc.app);
    expect(registered.length).toBeGreaterThan(20);
    const v1 = registered.filter((r) => r.split(' ')[1].startsWith('/v1/'));
    const table = new Set(MATRIX.map((r) => `${r.method} ${normalise(r.path.replace(/\/binance_pay\//, '/:provider/'))}`));
    expect(v1.filter((r) => !table.has(r)), 'routes without a row in MATRIX').toEqual([]);
    expect([...table].filter((r) => !v1.includes(r)), 'rows for routes that do not exist').toEqual([]);
    const board = registered.filter((r) => `${r.split(' ')[1]}/`.startsWith(`${OPS_BOARD_PREFIX}/`));
    expect(board, 'the queue dashboard is mounted').toContain(`GET ${OPS_BOARD_PREFIX}`);
    const others = registered.filter((r) => !r.split(' ')[1].startsWith('/v1/') && !AUTHENTICATED_NON_V1.includes(r) && !board.includes(r));
    expect(others.filter((r) => !PUBLIC_PREFIXES.some((p) => `${r.split(' ')[1]}/`.startsWith(p))), 'unexpected non-/v1 routes').toEqual([]);
  });

  it.each(AUTHENTICATED_NON_V1)('%s: 401 without a valid key, never 401/403 for any role', async (route) => {
    const [method, path] = route.split(' ') as [Row['method'], string];
    for (const key of [undefined, 'rk_merchant_unknownunknownunknownunknown', keys.revoked]) {
      const res = await call(method, path, key);
      expect(res.status, `${route} with ${key}`).toBe(401);
      expect(res.body.code).toBe('unauthorized');
    }
    for (const caller of CALLERS) {
      const res = await call(method, path, keys[caller], method === 'POST' ? { jsonrpc: '2.0', id: 1, method: 'tools/list' } : undefined, {
        Accept: 'application/json, text/event-stream',
      });
      expect([401, 403], `${route} as ${caller}: ${res.status}`).not.toContain(res.status);
    }
  });

  describe.each(MATRIX.map((r) => [`${r.method} ${r.path}`, r] as const))('%s', (_name, r) => {
    it.each(CALLERS.map((c) => [c, r.expect[c]] as const))('%s → %s', async (caller, expected) => {
      const res = await call(r.method, fill(r.path), keys[caller], r.body?.(fx), r.headers?.());
      const what = `${r.method} ${r.path} as ${caller}: ${res.status} ${res.text.slice(0, 300)}`;
      expect(res.status, what).toBeLessThan(500);
      if (res.status >= 400) expect(res.headers['content-type'], what).toMatch(/^application\/problem\+json/);
      switch (expected) {
        case 'denied':
          expect(res.status, what).toBe(403);
          expect(res.body.code, what).toBe('forbidden');
          break;
        case 'hidden':
          expect(res.status, what).toBe(404);
          expect(['not_found', 'payment_not_found'], what).toContain(res.body.code);
          break;
        case 'ok':
          expect([401, 403, 404], what).not.toContain(res.status);
          if (r.method === 'GET') expect(res.status, what).toBeGreaterThanOrEqual(200);
          if (r.method === 'GET') expect(res.status, what).toBeLessThan(300);
          break;
      }
      if (caller === 'other' && res.status < 300) {
        // Nothing of the first merchant's data comes back.
        for (const secret of [fx.refundId, fx.endpointId, fx.spareEndpointId, fx.deliveryId, fx.merchantId]) {
          expect(res.text.includes(secret), `${what} leaks ${secret}`).toBe(false);
        }
      }
    });

    it.each([
      ['no key', undefined],
      ['a malformed header', 'not a bearer'],
      ['an unknown key', 'rk_merchant_unknownunknownunknownunknown'],
      ['a revoked key', 'revoked'],
    ] as const)('401 with %s', async (_label, key) => {
      const k = key === 'revoked' ? keys.revoked : key;
      const req = call(r.method, fill(r.path), undefined, r.body?.(fx), r.headers?.());
      if (k === 'not a bearer') req.set('Authorization', 'Basic Zm9vOmJhcg==');
      else if (k !== undefined) req.set('Authorization', `Bearer ${k}`);
      const res = await req;
      expect(res.status, `${r.method} ${r.path}: ${res.text.slice(0, 200)}`).toBe(401);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(res.body.code).toBe('unauthorized');
    });
  });
});

describe('API keys (refunds-api.md §2)', () => {
  it('stores only a SHA-256 hash: the key appears in no row of api_keys or audit_events', async () => {
    const res = await call('POST', '/v1/api-keys', keys.admin, { role: 'ops', name: 'hash check' }).expect(201);
    const key = res.body.key as string;
    expect(key).toMatch(/^rk_ops_[A-Za-z0-9_-]{43}$/); // 256 random bits
    const { rows } = await svc.db.query(`SELECT key_hash FROM api_keys WHERE id = $1`, [res.body.id]);
    expect(Buffer.compare(rows[0].key_hash, createHash('sha256').update(key).digest())).toBe(0);
    const random = key.slice(7);
    for (const table of ['api_keys', 'audit_events', 'merchants']) {
      const dump = await svc.db.query(`SELECT t::text AS row FROM ${table} t`);
      for (const r of dump.rows) expect(String(r.row)).not.toContain(random);
      // bytea rendered as hex: the raw key bytes are not stored either.
      for (const r of dump.rows) expect(String(r.row)).not.toContain(Buffer.from(key).toString('hex'));
    }
    // The creation response is the only place the key is ever shown.
    expect(Object.keys(res.body).sort()).toEqual(['createdAt', 'id', 'key', 'merchantId', 'name', 'revokedAt', 'role']);
  });

  it('revocation takes effect on the very next request (no cache), on the API and the ops dashboard', async () => {
    const created = await call('POST', '/v1/api-keys', keys.admin, { role: 'ops', name: 'revoke me' }).expect(201);
    const key = created.body.key as string;
    await call('GET', '/v1/refunds', key).expect(200);
    await request(svc.url).get('/ops/queues/').set('Authorization', `Bearer ${key}`).expect((r) => expect(r.status).toBeLessThan(400));
    await call('DELETE', `/v1/api-keys/${created.body.id}`, keys.admin).expect(204);
    expect((await call('GET', '/v1/refunds', key)).status).toBe(401);
    expect((await request(svc.url).get('/ops/queues/').set('Authorization', `Bearer ${key}`)).status).toBe(401);
    // Revoking twice, or an unknown id, is 404; the revocation is audited.
    await call('DELETE', `/v1/api-keys/${created.body.id}`, keys.admin).expect(404);
    const audit = await svc.db.query(`SELECT action FROM audit_events WHERE subject = $1 ORDER BY id`, [created.body.id]);
    expect(audit.rows.map((r) => r.action)).toEqual(['api_key.create', 'api_key.revoke']);
  });

  it('compares in constant time: only a fixed-length digest of the presented key is ever compared or sent to the database', async () => {
    const seen: unknown[][] = [];
    const db = { one: async (_sql: string, params: unknown[]) => (seen.push(params), undefined) } as unknown as Database;
    const cfg = { adminApiKey: 'a-very-long-admin-key-for-this-test', apiKeyCacheMs: 0 } as AppConfig;
    const service = new ApiKeysService(db, cfg, new ApiKeyCache(cfg, {} as RateLimiter), {} as RateLimiter);
    const presented = ['a', 'a-very-long-admin-key-for-this-tesT', 'a-very-long-admin-key-for-this-test-and-more', 'x'.repeat(512)];
    for (const p of presented) expect(await service.authenticate(p)).toBeNull();
    // The admin key is compared as SHA-256 digests with timingSafeEqual (equal lengths, so it
    // never throws and never short-circuits); every other lookup is by digest, an index
    // probe whose timing says nothing about how much of a key was right.
    expect(seen).toHaveLength(presented.length);
    seen.forEach((params, i) => {
      expect(params).toHaveLength(1);
      expect(Buffer.isBuffer(params[0])).toBe(true);
      expect((params[0] as Buffer).equals(createHash('sha256').update(presented[i]).digest())).toBe(true);
    });
    await expect(service.authenticate('a-very-long-admin-key-for-this-test')).resolves.toMatchObject({ role: 'admin' });
  });
});
