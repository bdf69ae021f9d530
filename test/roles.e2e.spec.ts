import type { INestApplicationContext } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApp } from '../src/app.js';
import { money } from '../src/common/money.js';
import { loadConfig } from '../src/config/config.js';
import { Database } from '../src/database/database.js';
import { RefundWorkerService } from '../src/processing/refund-worker.service.js';
import { BinancePayAdapter } from '../src/providers/binance-pay/binance-pay.adapter.js';
import { FAST_ENV, merchantKey, REDIS_URL, sandboxPayment, setFaults, startService, TestService, waitFor } from './support/service.js';

// One ROLE=api process and two ROLE=worker processes (as Nest apps in this test process)
// on one database and one Redis prefix.
let api: TestService;
const workers: INestApplicationContext[] = [];
let key: string;

async function startWorker(): Promise<INestApplicationContext> {
  const cfg = loadConfig({
    NODE_ENV: 'test',
    ROLE: 'worker',
    DATABASE_URL: api.databaseUrl,
    REDIS_URL,
    QUEUE_PREFIX: api.queuePrefix,
    SANDBOX: 'true',
    SANDBOX_URL: `${api.url}/sandbox`,
    PUBLIC_URL: api.url,
    LOG_LEVEL: 'silent',
    ...FAST_ENV,
  });
  const ctx = await createApp(cfg);
  await ctx.init();
  return ctx;
}

beforeAll(async () => {
  api = await startService('roles', { ROLE: 'api' });
  key = await merchantKey(api, 'M1001');
  await setFaults(api, 'binance-pay', { settleAfterMs: 100 });
});

afterAll(async () => {
  for (const w of workers) await w.close();
  await api?.stop();
});

function create(paymentId: string, amount: string) {
  return api
    .http()
    .post('/v1/refunds')
    .set('Authorization', `Bearer ${key}`)
    .set('Idempotency-Key', randomUUID())
    .send({ provider: 'binance_pay', paymentId, amount, currency: 'USDT' })
    .expect(202);
}

describe('ROLE=api and ROLE=worker', () => {
  it('an api-only process accepts refunds but does not process them', async () => {
    const paymentId = await sandboxPayment(api, 'binance_pay', '10.00');
    const res = await create(paymentId, '1');
    await new Promise((r) => setTimeout(r, 1500));
    const { rows } = await api.db.query(`SELECT status, attempt_count FROM refunds WHERE id = $1`, [res.body.id]);
    expect(rows[0]).toEqual({ status: 'queued', attempt_count: 0 });
  });

  it('never lets two workers call the provider for one refund at once', async () => {
    const paymentId = await sandboxPayment(api, 'binance_pay', '10.00');
    const res = await create(paymentId, '2');
    const steps = api.app.get(RefundWorkerService);
    // Ten steps at once, then ten more while the create is still at the (slowed) provider.
    await setFaults(api, 'binance-pay', { latencyMs: 300 });
    try {
      const running = Array.from({ length: 10 }, () => steps.step(res.body.id));
      for (let i = 0; i < 10; i++) {
        await new Promise((r) => setTimeout(r, 25));
        running.push(steps.step(res.body.id));
      }
      await Promise.all(running);
    } finally {
      await setFaults(api, 'binance-pay', { latencyMs: 0 });
    }
    // One create. A later step may legitimately query the refund once the first step has
    // rescheduled it and its next check is due (the ten claims run one after another on a
    // slow machine), but never while another step still holds it: each attempt starts after
    // the one before it completed.
    const { rows } = await api.db.query(
      `SELECT operation, created_at, completed_at FROM refund_attempts WHERE refund_id = $1 ORDER BY number`,
      [res.body.id],
    );
    expect(rows.filter((r) => r.operation === 'create')).toHaveLength(1);
    expect(rows[0].operation).toBe('create');
    for (let i = 1; i < rows.length; i++) {
      expect(rows[i - 1].completed_at).not.toBeNull();
      expect(rows[i].created_at.getTime()).toBeGreaterThanOrEqual(rows[i - 1].completed_at.getTime());
    }
    const atProvider = await api.http().get('/sandbox/binance-pay/refunds').query({ prepayId: paymentId }).expect(200);
    expect(atProvider.body.data).toHaveLength(1);
  });

  it('decides when to look again at refunds it cannot claim from the claim statement alone', async () => {
    const paymentId = await sandboxPayment(api, 'binance_pay', '10.00');
    const [leased, notDue, final] = await Promise.all(['1', '1', '1'].map(async (a) => (await create(paymentId, a)).body.id as string));
    const missing = randomUUID();
    // Held by another worker for 10 s; due in 10 s; final already (its webhook won the race).
    await api.db.query(`UPDATE refunds SET lease_owner = 'another-worker', lease_until = now() + interval '10 seconds' WHERE id = $1`, [leased]);
    await api.db.query(`UPDATE refunds SET next_check_at = now() + interval '10 seconds' WHERE id = $1`, [notDue]);
    await api.db.query(
      `UPDATE refunds SET status = 'succeeded', refunded_amount = amount, completed_at = now(), next_check_at = NULL WHERE id = $1`,
      [final],
    );
    const rows = await api.db.query(`SELECT id, lease_until, next_check_at FROM refunds WHERE id = ANY($1::uuid[])`, [[leased, notDue]]);
    const times = Object.fromEntries(rows.rows.map((r) => [r.id, r]));

    const db = api.app.get(Database);
    const statements = vi.spyOn(db, 'query');
    try {
      // At once, so they share claim statements.
      const steps = api.app.get(RefundWorkerService);
      const [a, b, c, d] = await Promise.all([leased, notDue, final, missing].map((id) => steps.step(id)));
      expect(a).toEqual({ done: false, at: expect.any(Date) });
      expect(a.done === false && a.at.getTime()).toBeGreaterThanOrEqual(times[leased].lease_until.getTime());
      expect(b).toEqual({ done: false, at: expect.any(Date) });
      expect(b.done === false && b.at.getTime()).toBeGreaterThanOrEqual(times[notDue].next_check_at.getTime());
      expect(c).toEqual({ done: true });
      expect(d).toEqual({ done: true });
      // Claims (the first goes alone, the others batch behind it), and no row read per
      // refund a claim could not take. The sandbox's own loops share this Database, so the
      // statements are picked out by their text.
      const sql = statements.mock.calls.map(([text]) => text);
      expect(sql.some((text) => text.includes('FOR UPDATE OF r SKIP LOCKED'))).toBe(true);
      expect(sql.filter((text) => /FROM refunds WHERE id = \$1\b/.test(text))).toEqual([]);
    } finally {
      statements.mockRestore();
    }
    // Nothing was changed by the look: the other worker's lease and the next check stand.
    const after = await api.db.query(`SELECT id, status, lease_owner, next_check_at FROM refunds WHERE id = ANY($1::uuid[])`, [[leased, notDue, final]]);
    const byId = Object.fromEntries(after.rows.map((r) => [r.id, r]));
    expect(byId[leased]).toMatchObject({ status: 'queued', lease_owner: 'another-worker' });
    expect(byId[notDue]).toMatchObject({ status: 'queued', lease_owner: null });
    expect(byId[notDue].next_check_at.getTime()).toBe(times[notDue].next_check_at.getTime());
    expect(byId[final]).toMatchObject({ status: 'succeeded', lease_owner: null });
  });

  it('reads a failed refund afresh rather than trust the claim\'s snapshot (an ops retry may have put it back in line)', async () => {
    const paymentId = await sandboxPayment(api, 'binance_pay', '10.00');
    const id = (await create(paymentId, '1')).body.id as string;
    await api.db.query(`UPDATE refunds SET status = 'failed', failure_code = 'TEST', completed_at = now(), next_check_at = NULL WHERE id = $1`, [id]);
    const db = api.app.get(Database);
    const statements = vi.spyOn(db, 'query');
    try {
      expect(await api.app.get(RefundWorkerService).step(id)).toEqual({ done: true });
      expect(statements.mock.calls.map(([text]) => text).filter((text) => /FROM refunds WHERE id = \$1\b/.test(text))).toHaveLength(1);
    } finally {
      statements.mockRestore();
    }
    // Settled, as the next test expects every refund of this database to end.
    await api.db.query(`UPDATE refunds SET status = 'succeeded', refunded_amount = amount, failure_code = NULL WHERE id = $1`, [id]);
  });

  it("moves a queued refund to processing in its claim, except one that may take Binance's last slot, which waits for the refund ahead of it", async () => {
    // Eight refunds of the payment final already (as if settled earlier; Binance is never
    // asked about them here), then a ninth of 1 and the last, the remainder: 91.
    const paymentId = await sandboxPayment(api, 'binance_pay', '100.00');
    const earlier = [];
    for (let i = 0; i < 8; i++) earlier.push((await create(paymentId, '1')).body.id as string);
    await api.db.query(
      `UPDATE refunds SET status = 'succeeded', provider_state = 'acknowledged', refunded_amount = amount, completed_at = now(), next_check_at = NULL
        WHERE id = ANY($1::uuid[])`,
      [earlier],
    );
    const ninth = (await create(paymentId, '1')).body.id as string;
    const last = (await create(paymentId, '91')).body.id as string;
    const steps = api.app.get(RefundWorkerService);
    const db = api.app.get(Database);
    const statements = vi.spyOn(db, 'query');
    // A move to processing made by a statement of its own (startMany()), not by a claim.
    const starts = () => statements.mock.calls.filter(([text]) => text.includes('attempt_start AS (INSERT')).length;
    const row = async (id: string) => (await api.db.query(`SELECT status, next_check_at, attempt_count FROM refunds WHERE id = $1`, [id])).rows[0];
    const untilFinal = (id: string) =>
      waitFor(
        async () => {
          await steps.step(id);
          const r = await row(id);
          return r.status === 'succeeded' ? r : (await new Promise((w) => setTimeout(w, 100)), undefined);
        },
        15_000,
        `refund ${id} final`,
      );
    try {
      const [a, b] = await Promise.all([steps.step(ninth), steps.step(last)]);
      // The ninth: far enough from the limit (8 used), moved and sent by its claim's statement.
      expect(a).toEqual({ done: false, at: expect.any(Date) });
      expect(await row(ninth)).toMatchObject({ status: 'processing', attempt_count: 1 });
      // The last: the quick count says it may take the last slot, so the claim only leased
      // it, and the locked look found the ninth ahead of it in flight: it waits, unsent.
      expect(b).toEqual({ done: false, at: expect.any(Date) });
      expect(await row(last)).toMatchObject({ status: 'queued', attempt_count: 0 });
      expect(starts()).toBe(0);

      await untilFinal(ninth);
      // Once the ninth is final, the last is sent for exactly the remainder, moved by startMany().
      const due = (await row(last)).next_check_at.getTime();
      await new Promise((w) => setTimeout(w, Math.max(0, due - Date.now())));
      expect(await untilFinal(last)).toMatchObject({ status: 'succeeded' });
      expect(starts()).toBe(1);
    } finally {
      statements.mockRestore();
    }
    const atProvider = (await api.http().get('/sandbox/binance-pay/refunds').query({ prepayId: paymentId }).expect(200)).body.data;
    expect(atProvider.map((r: { refundAmount: string }) => money(r.refundAmount).toFixed(2)).sort()).toEqual(['1.00', '91.00']);
  });

  it("writes the same move to processing from a claim as from startMany(): row, event, outbox entry and the create's attempt row", async () => {
    const [p1, p2] = await Promise.all([sandboxPayment(api, 'binance_pay', '10.00'), sandboxPayment(api, 'binance_pay', '10.00')]);
    const inline = (await create(p1, '3')).body.id as string;
    const alone = (await create(p2, '3')).body.id as string;
    const steps = api.app.get(RefundWorkerService) as unknown as {
      claimMany(ids: string[]): Promise<unknown[]>;
      startMany(items: Array<{ refundId: string; requestId: string }>): Promise<unknown[]>;
    };
    // As a step's first statement would (a crash right after it, say: nothing is sent).
    await steps.claimMany([inline]);
    await steps.startMany([{ refundId: alone, requestId: randomUUID().replace(/-/g, '') }]);
    const { rows } = await api.db.query(
      `SELECT r.id, r.status, r.provider_state, r.check_count, r.attempt_count, r.refunded_amount::text, r.completed_at,
              r.failure_code, r.provider_request_id, r.status_changed_at > r.created_at AS changed, r.updated_at >= r.status_changed_at AS updated,
              (SELECT json_agg(json_build_object('from', e.from_status, 'to', e.to_status, 'actor', e.actor, 'detail', e.detail,
                                                 'outbox', (SELECT count(*) FROM refund_event_outbox o WHERE o.event_id = e.id)) ORDER BY e.id)
                 FROM refund_events e WHERE e.refund_id = r.id) AS events,
              (SELECT json_agg(json_build_object('number', a.number, 'operation', a.operation, 'outcome', a.outcome, 'request', a.provider_request_id = r.provider_request_id))
                 FROM refund_attempts a WHERE a.refund_id = r.id) AS attempts
         FROM refunds r WHERE r.id = ANY($1::uuid[])`,
      [[inline, alone]],
    );
    const byId = Object.fromEntries(rows.map(({ id, provider_request_id, ...rest }) => [id, { ...rest, requestIdShape: /^[0-9a-f]{32}$/.test(provider_request_id) }]));
    expect(byId[inline]).toMatchObject({ status: 'processing', provider_state: 'unknown', check_count: 0, attempt_count: 1, requestIdShape: true, changed: true });
    expect(byId[inline].attempts).toEqual([{ number: 1, operation: 'create', outcome: 'in_flight', request: true }]);
    expect(byId[inline].events.map((e: { to: string }) => e.to)).toEqual(['queued', 'processing']);
    expect(byId[inline]).toEqual(byId[alone]);
    // Unsent, as after a crash: released, the next steps ask Binance with that id, find
    // nothing and send the create once.
    await api.db.query(`UPDATE refunds SET lease_owner = NULL, lease_until = NULL WHERE id = ANY($1::uuid[])`, [[inline, alone]]);
    for (const [id, paymentId] of [[inline, p1], [alone, p2]]) {
      await waitFor(
        async () => {
          await api.app.get(RefundWorkerService).step(id);
          const { rows: r } = await api.db.query(`SELECT status FROM refunds WHERE id = $1`, [id]);
          return r[0].status === 'succeeded' ? true : (await new Promise((w) => setTimeout(w, 100)), undefined);
        },
        15_000,
        `refund ${id} final`,
      );
      const atProvider = (await api.http().get('/sandbox/binance-pay/refunds').query({ prepayId: paymentId }).expect(200)).body.data;
      expect(atProvider).toHaveLength(1);
    }
  });

  it('lets a queued refund whose provider is off wait with its own back-off, its lease released and nothing sent', async () => {
    const paymentId = await sandboxPayment(api, 'binance_pay', '10.00');
    const id = (await create(paymentId, '1')).body.id as string;
    const steps = api.app.get(RefundWorkerService);
    // A provider's configuration is fixed at start, so this is forced (after the refund was accepted).
    const off = vi.spyOn(api.app.get(BinancePayAdapter), 'isEnabled').mockReturnValue(false);
    try {
      const step = await steps.step(id);
      expect(step).toEqual({ done: false, at: expect.any(Date) });
      const { rows } = await api.db.query(`SELECT status, lease_owner, check_count, attempt_count, next_check_at FROM refunds WHERE id = $1`, [id]);
      // Rescheduled as queued (not left leased until LEASE_MS runs out), no call, no attempt row.
      expect(rows[0]).toMatchObject({ status: 'queued', lease_owner: null, check_count: 1, attempt_count: 0 });
      expect(rows[0].next_check_at.getTime()).toBe(step.done === false ? step.at.getTime() : NaN);
    } finally {
      off.mockRestore();
    }
    // Back on: the claim moves it and the create is sent; it settles as usual.
    await waitFor(
      async () => {
        await steps.step(id);
        const { rows } = await api.db.query(`SELECT status FROM refunds WHERE id = $1`, [id]);
        return rows[0].status === 'succeeded' ? true : (await new Promise((w) => setTimeout(w, 100)), undefined);
      },
      15_000,
      'the refund final',
    );
  });

  it('two worker processes finish every refund, each sent exactly once', async () => {
    workers.push(await startWorker(), await startWorker());
    const payments = await Promise.all(Array.from({ length: 4 }, () => sandboxPayment(api, 'binance_pay', '100.00')));
    const ids: string[] = [];
    await Promise.all(
      payments.map(async (p) => {
        for (let i = 0; i < 10; i++) ids.push((await create(p, '10')).body.id);
      }),
    );
    // Everything accepted so far, including the refunds the api-only process left queued.
    await waitFor(async () => {
      const { rows } = await api.db.query(`SELECT count(*)::int AS n FROM refunds WHERE status <> 'succeeded'`);
      return rows[0].n === 0;
    }, 60_000, 'all refunds succeeded');
    // Each refund used one provider request id, whatever retries a provider hiccup caused.
    const { rows: mixed } = await api.db.query(
      `SELECT refund_id FROM refund_attempts WHERE operation = 'create' GROUP BY refund_id HAVING count(DISTINCT provider_request_id) <> 1`,
    );
    expect(mixed).toEqual([]);
    for (const p of payments) {
      const atProvider = await api.http().get('/sandbox/binance-pay/refunds').query({ prepayId: p }).expect(200);
      expect(atProvider.body.data).toHaveLength(10);
      expect(new Set(atProvider.body.data.map((r: { refundRequestId: string }) => r.refundRequestId)).size).toBe(10);
    }
  });
});
