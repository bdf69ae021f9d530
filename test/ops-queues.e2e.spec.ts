import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { servedRoutes } from '../src/common/served-routes.js';
import { REFUND_QUEUES } from '../src/processing/queues.js';
import { WEBHOOK_QUEUE } from '../src/webhooks/webhook-settings.js';
import { merchantKey, roleKey, startService, TestService } from './support/service.js';

// Bull Board at /ops/queues: a Fastify plugin behind its own key check (src/ops/ops-auth.ts:
// ops and admin keys, Bearer or HTTP Basic), read-only.
let svc: TestService;
let ops: string;
let finance: string;
let merchant: string;

beforeAll(async () => {
  svc = await startService('opsqueues', { ROLE: 'api' });
  ops = await roleKey(svc, 'ops');
  finance = await roleKey(svc, 'finance');
  merchant = await merchantKey(svc, 'M1001');
});

afterAll(async () => {
  await svc?.stop();
});

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

describe('GET /ops/queues (Bull Board)', () => {
  it('answers 401 with a Basic challenge without a key, or with an unknown one', async () => {
    for (const path of ['/ops/queues', '/ops/queues/api/queues']) {
      const res = await svc.http().get(path).expect(401);
      expect(res.headers['www-authenticate']).toMatch(/^Basic realm="ops"/);
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
      expect(JSON.parse(res.text)).toMatchObject({ status: 401, code: 'unauthorized' });
    }
    const unknown = await svc.http().get('/ops/queues').set('Authorization', basic('ops', 'rk_ops_not_a_real_key')).expect(401);
    expect(unknown.headers['www-authenticate']).toMatch(/^Basic realm="ops"/);
    await svc.http().get('/ops/queues').set('Authorization', 'Bearer rk_ops_not_a_real_key').expect(401);
  });

  it('guards every route of the board, whatever its spelling: 401 without a key, 403 for a merchant', async () => {
    const board = servedRoutes(svc.app.getHttpAdapter().getInstance() as FastifyInstance).filter((r) => /^\/ops\/queues(\/|$)/.test(r.url));
    expect(board.length).toBeGreaterThan(20);
    for (const { method, url } of board) {
      const concrete = url.replace(/:\w+/g, 'x').replace(/\*$/, 'x.js');
      // Routes match case-insensitively and with a trailing slash; the check must too.
      for (const path of [concrete, concrete.toUpperCase(), `${concrete}/`]) {
        const none = await svc.http()[method.toLowerCase() as 'get'](path);
        expect(none.status, `${method} ${path} without a key`).toBe(401);
        const asMerchant = await svc.http()[method.toLowerCase() as 'get'](path).set('Authorization', `Bearer ${merchant}`);
        expect(asMerchant.status, `${method} ${path} as a merchant`).toBe(403);
      }
    }
  });

  it('answers 403 to merchant and finance keys', async () => {
    for (const key of [merchant, finance]) {
      const res = await svc.http().get('/ops/queues').set('Authorization', `Bearer ${key}`).expect(403);
      expect(JSON.parse(res.text)).toMatchObject({ code: 'forbidden' });
      await svc.http().get('/ops/queues/api/queues').set('Authorization', basic('x', key)).expect(403);
    }
  });

  it('serves the dashboard to ops (Bearer and Basic) and admin keys', async () => {
    for (const auth of [`Bearer ${ops}`, basic('ops', ops), basic(ops, ''), `Bearer ${svc.adminKey}`]) {
      const res = await svc.http().get('/ops/queues').set('Authorization', auth).expect(200);
      expect(res.headers['content-type']).toMatch(/text\/html/);
      expect(res.text).toMatch(/<html/i);
    }
  });

  it('lists the refund queues and the merchant webhook queue through the board API, read-only', async () => {
    const res = await svc.http().get('/ops/queues/api/queues').set('Authorization', basic('ops', ops)).expect(200);
    const queues = res.body.queues as Array<{ name: string; readOnlyMode: boolean; counts: Record<string, number> }>;
    const names = queues.map((q) => q.name);
    for (const name of [...REFUND_QUEUES, WEBHOOK_QUEUE]) expect(names).toContain(name);
    for (const q of queues) {
      expect(q.readOnlyMode).toBe(true);
      expect(typeof q.counts.waiting).toBe('number');
    }
  });

  it('refuses changes through the board, even to an admin', async () => {
    const res = await svc
      .http()
      .put(`/ops/queues/api/queues/${REFUND_QUEUES[0]}/pause`)
      .set('Authorization', `Bearer ${svc.adminKey}`)
      .expect(403);
    expect(JSON.parse(res.text)).toMatchObject({ code: 'forbidden' });
    const listed = await svc.http().get('/ops/queues/api/queues').set('Authorization', `Bearer ${ops}`).expect(200);
    expect(listed.body.queues.every((q: { isPaused: boolean }) => !q.isPaused)).toBe(true);
  });

  it('leaves the API keys guard in charge of /v1 (an ops key is still not admin there)', async () => {
    await svc.http().post('/v1/api-keys').set('Authorization', `Bearer ${ops}`).send({ role: 'ops', name: 'x' }).expect(403);
  });
});
