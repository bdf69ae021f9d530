import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BinancePayAdapter } from '../src/providers/binance-pay/binance-pay.adapter.js';
import { RefundWorkerService } from '../src/processing/refund-worker.service.js';
import { RefundOutcomeService } from '../src/processing/refund-outcome.service.js';
import { RefundQueueService } from '../src/processing/refund-queue.service.js';
import { money } from '../src/common/money.js';
import { Database } from '../src/database/database.js';
import {
  deleteRedisPrefix,
  merchantKey,
  roleKey,
  sandboxPayment,
  setFaults,
  startPeer,
  startService,
  TestService,
  waitFor,
} from './support/service.js';
import { batchCounts, scrapeMetrics } from './support/metrics.js';
import { signedBinanceWebhook } from './support/binance-webhook.js';

let svc: TestService;
let m1: string;
let m2: string;
let ops: string;

beforeAll(async () => {
  svc = await startService('binance');
  m1 = await merchantKey(svc, 'M1001');
  m2 = await merchantKey(svc, 'M2002');
  ops = await roleKey(svc, 'ops');
  await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
});

afterAll(async () => {
  await svc?.stop();
});

function createRefund(key: string, body: Record<string, unknown>, idem: string | null = randomUUID()) {
  const req = svc.http().post('/v1/refunds').set('Authorization', `Bearer ${key}`);
  if (idem !== null) req.set('Idempotency-Key', idem);
  return req.send(body);
}

async function refundOf(key: string, id: string) {
  const res = await svc.http().get(`/v1/refunds/${id}`).set('Authorization', `Bearer ${key}`).expect(200);
  return res.body;
}

async function untilFinal(key: string, id: string) {
  return waitFor(async () => {
    const r = await refundOf(key, id);
    return ['succeeded', 'partially_succeeded', 'failed', 'canceled'].includes(r.status) ? r : undefined;
  }, 30_000, `refund ${id} final`);
}

async function providerRefunds(prepayId: string): Promise<Array<{ refundRequestId: string; refundAmount: string; status: string }>> {
  const res = await svc.http().get(`/sandbox/binance-pay/refunds`).query({ prepayId }).expect(200);
  return res.body.data;
}

async function countRows(table: string): Promise<number> {
  const { rows } = await svc.db.query(`SELECT count(*)::int AS n FROM ${table}`);
  return rows[0].n;
}

describe('Binance Pay refunds end to end', () => {
  it('takes a refund from 202 to succeeded, recording attempts and events', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '100.00');
    const res = await createRefund(m1, {
      provider: 'binance_pay',
      paymentId,
      amount: '25.17',
      currency: 'USDT',
      reason: 'requested_by_customer',
      metadata: { orderId: '1001' },
    }).expect(202);
    expect(res.body).toMatchObject({
      merchantId: 'M1001',
      provider: 'binance_pay',
      paymentId,
      amount: '25.17',
      currency: 'USDT',
      status: 'queued',
      refundedAmount: '0',
      metadata: { orderId: '1001' },
    });
    expect(res.headers['content-type']).toMatch(/application\/json/);

    const done = await untilFinal(m1, res.body.id);
    expect(done.status).toBe('succeeded');
    expect(done.refundedAmount).toBe('25.17');
    expect(done.providerStatus).toBe('REFUND_SUCCESS');
    expect(done.providerRefundId).toMatch(/^\d{15,}$/);
    expect(done.providerDetails.remainingAttempts).toBe(9);
    expect(done.completedAt).not.toBeNull();

    const attempts = await svc.http().get(`/v1/refunds/${done.id}/attempts`).set('Authorization', `Bearer ${m1}`).expect(200);
    expect(attempts.body.data[0]).toMatchObject({ number: 1, operation: 'create', outcome: 'pending', httpStatus: 200 });
    for (const a of attempts.body.data.slice(1)) expect(a.operation).toBe('query');
    const requestIds = new Set(attempts.body.data.map((a: { providerRequestId: string }) => a.providerRequestId));
    expect(requestIds.size).toBe(1);
    expect(done.attemptCount).toBe(attempts.body.data.length);

    const events = await svc.http().get(`/v1/refunds/${done.id}/events`).set('Authorization', `Bearer ${m1}`).expect(200);
    expect(events.body.data.map((e: { to: string }) => e.to)).toEqual(['queued', 'processing', 'succeeded']);
    expect(events.body.data[0].actor).toMatch(/^api_key:/);
    // Whichever came first, the poll or Binance's webhook, finalised it.
    expect(['worker', 'webhook:binance_pay']).toContain(events.body.data[2].actor);

    const payment = await svc.http().get(`/v1/payments/binance_pay/${paymentId}`).set('Authorization', `Bearer ${m1}`).expect(200);
    expect(payment.body).toMatchObject({ amount: '100', refundedAmount: '25.17', reservedAmount: '0', refundableAmount: '74.83' });

    const atProvider = await providerRefunds(paymentId);
    expect(atProvider).toHaveLength(1);
    expect(atProvider[0].status).toBe('REFUND_SUCCESS');
  });

  it('completes every attempt row and clears the lease in the statements that finish each step', async () => {
    // Webhooks held back, so the worker's own poll finalises: its answer, the attempt row's
    // completion and the lease's release are written by one statement (RefundOutcomeService).
    await setFaults(svc, 'binance-pay', { settleAfterMs: 200, webhookDelayMs: 60_000 });
    try {
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
        const res = await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '1.50', currency: 'USDT' }).expect(202);
        ids.push(res.body.id);
      }
      for (const id of ids) expect((await untilFinal(m1, id)).status).toBe('succeeded');
      const { rows } = await svc.db.query(
        `SELECT r.id, r.lease_owner, r.lease_until, r.attempt_count,
                (SELECT actor FROM refund_events e WHERE e.refund_id = r.id AND e.to_status = 'succeeded') AS final_actor,
                (SELECT json_agg(json_build_object('op', a.operation, 'outcome', a.outcome, 'http', a.http_status,
                                                   'latency', a.latency_ms, 'done', a.completed_at IS NOT NULL) ORDER BY a.number)
                   FROM refund_attempts a WHERE a.refund_id = r.id) AS attempts
           FROM refunds r WHERE r.id = ANY($1::uuid[])`,
        [ids],
      );
      expect(rows).toHaveLength(6);
      for (const r of rows) {
        expect(r.final_actor).toBe('worker');
        expect(r.lease_owner).toBeNull();
        expect(r.lease_until).toBeNull();
        expect(r.attempts).toHaveLength(r.attempt_count);
        for (const a of r.attempts) {
          expect(a).toMatchObject({ done: true, http: 200 });
          expect(a.outcome).not.toBe('in_flight');
          expect(a.latency).toEqual(expect.any(Number));
        }
        expect(r.attempts[0]).toMatchObject({ op: 'create', outcome: 'pending' });
        expect(r.attempts.at(-1)).toMatchObject({ op: 'query', outcome: 'succeeded' });
      }
    } finally {
      await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
    }
  });

  it("leaves a refund its webhook made final while the worker's poll was out: the poll's answer changes nothing, its attempt is completed, no lease is left", async () => {
    // The emulator's own webhooks held back, so the one this test posts is the provider's
    // word; then every call slowed (below the provider timeout), so that post lands while the
    // worker's first poll waits for its answer, which will say succeeded too. A webhook about
    // no refund of ours goes first, so that the service has fetched the provider's
    // certificate (a provider call) before the calls are slowed.
    await setFaults(svc, 'binance-pay', { settleAfterMs: 0, webhookDelayMs: 60_000 });
    const warm = await signedBinanceWebhook(svc, `not-ours-${randomUUID()}`, '123', 'REFUND_SUCCESS');
    await svc.http().post('/webhooks/binance-pay').set(warm.headers).send(warm.body).expect(200);
    await setFaults(svc, 'binance-pay', { settleAfterMs: 0, webhookDelayMs: 60_000, latencyMs: 1_200 });
    const outcomes = svc.app.get(RefundOutcomeService);
    const answers: string[] = [];
    const spy = vi.spyOn(outcomes, 'apply').mockImplementation(async function (this: RefundOutcomeService, ...args) {
      const result = await RefundOutcomeService.prototype.apply.apply(this, args);
      if (args[2] === 'worker') answers.push(result);
      return result;
    });
    // Statements the service sends on its own (not in a transaction), to see whether the step
    // released a lease that the webhook's move had cleared already.
    const db = svc.app.get(Database);
    const sent: Array<{ sql: string; params: unknown[] }> = [];
    const querySpy = vi.spyOn(db, 'query').mockImplementation(async function (this: Database, sql: string, params: unknown[] = []) {
      sent.push({ sql, params });
      return Database.prototype.query.call(this, sql, params);
    } as Database['query']);
    let id: string;
    try {
      const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
      id = (await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '1', currency: 'USDT' }).expect(202)).body.id;
      const requestId = await waitFor(async () => {
        const { rows } = await svc.db.query(
          `SELECT r.provider_request_id FROM refund_attempts a JOIN refunds r ON r.id = a.refund_id
            WHERE a.refund_id = $1 AND a.operation = 'query' AND a.outcome = 'in_flight'`,
          [id],
        );
        return rows[0]?.provider_request_id as string | undefined;
      }, 15_000, 'a poll out');
      const hook = await signedBinanceWebhook(svc, requestId, paymentId, 'REFUND_SUCCESS');
      await svc.http().post('/webhooks/binance-pay').set(hook.headers).send(hook.body).expect(200);
      await waitFor(async () => {
        const { rows } = await svc.db.query(`SELECT count(*)::int AS n FROM refund_attempts WHERE refund_id = $1 AND outcome = 'in_flight'`, [id]);
        return rows[0].n === 0 || undefined;
      }, 15_000, 'the poll answered');
      // The step ends (and would release its lease) after the answer's statement; its job is
      // removed once it has ended.
      const queue = svc.app.get(RefundQueueService).queue('binance_pay');
      await waitFor(async () => ((await queue.getJob(id)) === undefined ? true : undefined), 10_000, "the worker's step ended");
    } finally {
      spy.mockRestore();
      querySpy.mockRestore();
      await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
    }
    expect(answers).toEqual(['already_final']);
    expect(sent.filter((q) => q.sql.includes('SET lease_owner = NULL') && q.params[0] === id!)).toEqual([]);
    const { rows } = await svc.db.query(
      `SELECT r.status, r.lease_owner, r.lease_until, r.review_flagged_at,
              (SELECT json_agg(e.actor ORDER BY e.id) FROM refund_events e WHERE e.refund_id = r.id AND e.to_status = 'succeeded') AS final_actors,
              (SELECT json_agg(json_build_object('op', a.operation, 'outcome', a.outcome, 'done', a.completed_at IS NOT NULL) ORDER BY a.number)
                 FROM refund_attempts a WHERE a.refund_id = r.id) AS attempts
         FROM refunds r WHERE r.id = $1`,
      [id!],
    );
    expect(rows[0]).toMatchObject({ status: 'succeeded', lease_owner: null, lease_until: null, review_flagged_at: null, final_actors: ['webhook:binance_pay'] });
    expect(rows[0].attempts).toEqual([
      { op: 'create', outcome: 'pending', done: true },
      { op: 'query', outcome: 'succeeded', done: true },
    ]);
  });

  it('marks a query its claim started as not sent when the step finds the provider off, and numbers the calls after it in order', async () => {
    // Settles at the provider 5 s after its create (the time is fixed then) and sends no
    // webhook meanwhile, so the worker keeps querying until then.
    await setFaults(svc, 'binance-pay', { settleAfterMs: 5_000, webhookDelayMs: 60_000 });
    const adapter = svc.app.get(BinancePayAdapter);
    const worker = svc.app.get(RefundWorkerService) as unknown as { queryOnClaimProviders(): string[] };
    try {
      const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
      const { id } = (await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '2.50', currency: 'USDT' }).expect(202)).body;
      await waitFor(async () => ((await refundOf(m1, id)).attemptCount >= 2 ? true : undefined), 10_000, 'a query sent');
      // A provider's configuration is fixed at start, so this is forced: claims go on starting
      // Binance Pay queries until a step has looked at the adapter, which now reads as off.
      let stepLooked = false;
      vi.spyOn(worker, 'queryOnClaimProviders').mockImplementation(() => (stepLooked ? [] : ['binance_pay']));
      vi.spyOn(adapter, 'isEnabled').mockImplementation(() => {
        stepLooked = true;
        return false;
      });
      const notSent = await waitFor(async () => {
        const { rows } = await svc.db.query(`SELECT * FROM refund_attempts WHERE refund_id = $1 AND outcome = 'not_sent'`, [id]);
        return rows[0];
      }, 10_000, 'the started query marked not sent');
      expect(notSent).toMatchObject({ operation: 'query', http_status: null, provider_code: null });
      expect(notSent.completed_at).not.toBeNull();
      expect(notSent.error_message).toMatch(/not sent/);
      // Steps go on while the provider is off (each one a reschedule), with no call and no row.
      const { rows: [off] } = await svc.db.query(`SELECT check_count, attempt_count FROM refunds WHERE id = $1`, [id]);
      const later = await waitFor(async () => {
        const { rows } = await svc.db.query(`SELECT check_count, attempt_count, status FROM refunds WHERE id = $1`, [id]);
        return rows[0].check_count >= off.check_count + 2 ? rows[0] : undefined;
      }, 10_000, 'two more steps while the provider is off');
      expect(later).toMatchObject({ status: 'processing', attempt_count: off.attempt_count });
      vi.restoreAllMocks();

      expect((await untilFinal(m1, id)).status).toBe('succeeded');
      const { rows } = await svc.db.query(
        `SELECT a.number, a.operation, a.outcome, a.completed_at IS NOT NULL AS done, r.attempt_count
           FROM refund_attempts a JOIN refunds r ON r.id = a.refund_id WHERE a.refund_id = $1 ORDER BY a.number`,
        [id],
      );
      expect(rows.map((r) => r.number)).toEqual(Array.from({ length: rows[0].attempt_count }, (_, k) => k + 1));
      expect(rows.every((r) => r.done && r.outcome !== 'in_flight')).toBe(true);
      expect(rows.filter((r) => r.outcome === 'not_sent')).toHaveLength(1);
      expect(rows.at(-1)).toMatchObject({ operation: 'query', outcome: 'succeeded' });
      expect(await providerRefunds(paymentId)).toHaveLength(1);
    } finally {
      vi.restoreAllMocks();
      await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
    }
  });

  it('marks a create its claim started as not sent when the step finds the provider off, then asks about the refund and sends it once', async () => {
    await setFaults(svc, 'binance-pay', { settleAfterMs: 0, webhookDelayMs: 60_000 });
    const adapter = svc.app.get(BinancePayAdapter);
    const enabled = adapter.isEnabled.bind(adapter);
    const worker = svc.app.get(RefundWorkerService) as unknown as { advance(row: { payment_id: string }, ...rest: unknown[]): Promise<unknown> };
    const advance = worker.advance.bind(worker);
    try {
      const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
      // A provider's configuration is fixed at start, so this is forced: the first step of this
      // payment's refund finds the adapter off, after its claim moved it to processing and
      // wrote its create's row.
      let off = false;
      let first = true;
      vi.spyOn(adapter, 'isEnabled').mockImplementation(() => !off && enabled());
      vi.spyOn(worker, 'advance').mockImplementation(async (row, ...rest) => {
        if (row.payment_id !== paymentId || !first) return advance(row, ...rest);
        first = false;
        off = true;
        try {
          return await advance(row, ...rest);
        } finally {
          off = false;
        }
      });
      const { id } = (await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '2.75', currency: 'USDT' }).expect(202)).body;
      expect((await untilFinal(m1, id)).status).toBe('succeeded');
      expect(first).toBe(false);
      const { rows } = await svc.db.query(
        `SELECT a.number, a.operation, a.outcome, a.http_status, a.error_message, a.completed_at IS NOT NULL AS done, r.attempt_count
           FROM refund_attempts a JOIN refunds r ON r.id = a.refund_id WHERE a.refund_id = $1 ORDER BY a.number`,
        [id],
      );
      expect(rows[0]).toMatchObject({ number: 1, operation: 'create', outcome: 'not_sent', http_status: null, done: true });
      expect(rows[0].error_message).toMatch(/not sent/);
      // Then, as after a crash mid-create: a query with the same id finds nothing, and the create is sent.
      expect(rows[1]).toMatchObject({ operation: 'query', outcome: 'not_found' });
      expect(rows.map((r) => r.number)).toEqual(Array.from({ length: rows[0].attempt_count }, (_, k) => k + 1));
      expect(rows.filter((r) => r.operation === 'create' && r.outcome !== 'not_sent')).toHaveLength(1);
      expect(rows.every((r) => r.done && r.outcome !== 'in_flight')).toBe(true);
      expect(await providerRefunds(paymentId)).toHaveLength(1);
      const { rows: events } = await svc.db.query(`SELECT from_status, to_status FROM refund_events WHERE refund_id = $1 ORDER BY id`, [id]);
      expect(events.map((e) => `${e.from_status}>${e.to_status}`)).toEqual(['null>queued', 'queued>processing', 'processing>succeeded']);
    } finally {
      vi.restoreAllMocks();
      await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
    }
  });

  it('re-sends the create with the same id, not a query, every sixth check of a refund whose outcome is unknown', async () => {
    await setFaults(svc, 'binance-pay', { settleAfterMs: 5_000, webhookDelayMs: 60_000 });
    try {
      const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
      const { id } = (await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '3.25', currency: 'USDT' }).expect(202)).body;
      await waitFor(async () => ((await refundOf(m1, id)).attemptCount >= 2 ? true : undefined), 10_000, 'a query sent');
      // As if five queries in a row had been inconclusive: set between steps (no lease held).
      const forced = await waitFor(async () => {
        const { rows } = await svc.db.query(
          `UPDATE refunds SET provider_state = 'unknown', check_count = 6
            WHERE id = $1 AND status = 'processing' AND lease_owner IS NULL RETURNING attempt_count, provider_request_id`,
          [id],
        );
        return rows[0];
      }, 10_000, 'the refund between steps');
      const next = await waitFor(async () => {
        const { rows } = await svc.db.query(`SELECT * FROM refund_attempts WHERE refund_id = $1 AND number = $2`, [id, forced.attempt_count + 1]);
        return rows[0]?.outcome !== 'in_flight' ? rows[0] : undefined;
      }, 10_000, 'the next call');
      // The claim did not start a query for it (its copy of the step's test), the step re-sent the create.
      expect(next).toMatchObject({ operation: 'create', provider_request_id: forced.provider_request_id });
      expect((await untilFinal(m1, id)).status).toBe('succeeded');
      // Binance deduplicated it: one refund there.
      expect(await providerRefunds(paymentId)).toHaveLength(1);
      const { rows } = await svc.db.query(`SELECT number FROM refund_attempts WHERE refund_id = $1 ORDER BY number`, [id]);
      expect(rows.map((r) => r.number)).toEqual(Array.from({ length: rows.length }, (_, k) => k + 1));
    } finally {
      await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
    }
  });

  it('claims, moves, reschedules and finishes refunds and writes attempt rows in batches under load, each refund keeping its own numbered attempts', async () => {
    const before = await workerBatches();
    // 40 refunds at once on 40 payments, with webhooks held back: every refund takes two
    // worker steps (create, then the query that finds it settled), concurrently. About half
    // fail at the provider, so an attempt row completed with another refund's answer shows.
    await setFaults(svc, 'binance-pay', { settleAfterMs: 0, webhookDelayMs: 60_000, refundFailRate: 0.5 });
    try {
      const payments = await Promise.all(Array.from({ length: 40 }, () => sandboxPayment(svc, 'binance_pay', '10.00')));
      const created = await Promise.all(
        payments.map((paymentId, i) =>
          createRefund(m1, { provider: 'binance_pay', paymentId, amount: `1.${String(i).padStart(2, '0')}`, currency: 'USDT' }).expect(202),
        ),
      );
      const ids = created.map((r) => r.body.id as string);
      for (const id of ids) expect(['succeeded', 'failed']).toContain((await untilFinal(m1, id)).status);

      const { rows } = await svc.db.query(
        `SELECT r.id, r.payment_id, r.amount::text, r.status, r.attempt_count, r.provider_request_id,
                array_agg(a.outcome ORDER BY a.number) AS outcomes,
                array_agg(a.number ORDER BY a.number) AS numbers,
                array_agg(DISTINCT a.provider_request_id) AS request_ids,
                bool_and(a.completed_at IS NOT NULL AND a.outcome <> 'in_flight') AS all_done
           FROM refunds r JOIN refund_attempts a ON a.refund_id = r.id
          WHERE r.id = ANY($1::uuid[]) GROUP BY r.id`,
        [ids],
      );
      expect(rows).toHaveLength(40);
      for (const r of rows) {
        // Numbered 1..n from the refund's own counter, no gaps or doubles, all about its request.
        expect(r.numbers).toEqual(Array.from({ length: r.attempt_count }, (_, k) => k + 1));
        expect(r.request_ids).toEqual([r.provider_request_id]);
        expect(r.all_done).toBe(true);
        // Each call's row holds that call's answer: the create's, then the settling query's.
        expect(r.outcomes[0]).toBe('pending');
        expect(r.outcomes.at(-1)).toBe(r.status);
        // And the provider holds exactly this refund, for this amount, on this payment.
        const atProvider = await providerRefunds(r.payment_id);
        expect(atProvider).toHaveLength(1);
        expect(atProvider[0]).toMatchObject({
          status: r.status === 'succeeded' ? 'REFUND_SUCCESS' : 'REFUND_FAIL',
          refundRequestId: r.provider_request_id,
        });
        expect(money(atProvider[0].refundAmount).eq(r.amount)).toBe(true);
      }
      const after = await workerBatches();
      // Claims (with the moves to processing and the creates' and queries' attempt rows),
      // reschedules after the creates and final answers of several refunds really did share
      // statements.
      for (const kind of ['claim', 'reschedule', 'final'] as const) {
        expect(after[kind].multi - before[kind].multi, kind).toBeGreaterThan(0);
      }
      // Every move to processing was made by its refund's claim (finding 50): none of these
      // payments is near Binance's last slot, so no move needed a statement of its own.
      expect(after.start.all - before.start.all).toBe(0);
      const { rows: moves } = await svc.db.query(
        `SELECT refund_id, count(*)::int AS n, bool_and(actor = 'worker') AS by_worker FROM refund_events
          WHERE refund_id = ANY($1::uuid[]) AND from_status = 'queued' AND to_status = 'processing' GROUP BY refund_id`,
        [ids],
      );
      expect(moves).toHaveLength(40);
      for (const m of moves) expect(m).toMatchObject({ n: 1, by_worker: true });
      // And no query's attempt row needed a statement of its own: each was written by the
      // claim of its step (finding 48), each first create's by the move to processing. Only a
      // create sent again (after a timeout, say, on a busy machine) writes its row alone.
      const { rows: [again] } = await svc.db.query(
        `SELECT (count(*) FILTER (WHERE operation = 'create') - count(DISTINCT refund_id))::int AS creates
           FROM refund_attempts WHERE refund_id = ANY($1::uuid[])`,
        [ids],
      );
      expect(after.attempt.all - before.attempt.all).toBeLessThanOrEqual(again.creates);
      // The fail rate did its part (40 refunds at 0.5: both kinds all but certain).
      expect(new Set(rows.map((r) => r.status)).size).toBe(2);
    } finally {
      await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
    }
  });

  it('ends failed with the provider code when the provider refuses (insufficient balance)', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '50.00');
    await setFaults(svc, 'binance-pay', { insufficientBalance: true });
    try {
      const res = await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '5', currency: 'USDT' }).expect(202);
      const done = await untilFinal(m1, res.body.id);
      expect(done).toMatchObject({ status: 'failed', failureCode: '400304', refundedAmount: '0' });
      expect(done.failureMessage).toBeTruthy();
      // Not retried automatically: exactly one create call.
      const attempts = await svc.http().get(`/v1/refunds/${done.id}/attempts`).set('Authorization', `Bearer ${ops}`).expect(200);
      expect(attempts.body.data).toHaveLength(1);
      expect(attempts.body.data[0]).toMatchObject({ operation: 'create', outcome: 'failed', providerCode: '400304' });
      // The failed refund no longer holds its amount.
      const payment = await svc.http().get(`/v1/payments/binance_pay/${paymentId}`).set('Authorization', `Bearer ${m1}`).expect(200);
      expect(payment.body.refundableAmount).toBe('50');
    } finally {
      await setFaults(svc, 'binance-pay', { insufficientBalance: false });
    }
  });

  it('ends failed when the provider settles the refund as REFUND_FAIL', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '20.00');
    await setFaults(svc, 'binance-pay', { refundFailRate: 1 });
    try {
      const res = await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '20', currency: 'USDT' }).expect(202);
      const done = await untilFinal(m1, res.body.id);
      // The poll reads REFUND_FAIL, the webhook REFUND_REJECTED: both mean failed.
      expect(done.status).toBe('failed');
      expect(['REFUND_FAIL', 'REFUND_REJECTED']).toContain(done.failureCode);
    } finally {
      await setFaults(svc, 'binance-pay', { refundFailRate: 0 });
    }
  });

  it('replays the same request, rejects a changed body, and creates one refund for 50 concurrent identical requests', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '100.00');
    const body = { provider: 'binance_pay', paymentId, amount: '10.00', currency: 'USDT', description: 'once only' };
    const key = randomUUID();
    const results = await Promise.all(Array.from({ length: 50 }, () => createRefund(m1, body, key)));
    const statuses = results.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 202)).toHaveLength(1);
    expect(statuses.filter((s) => s === 200)).toHaveLength(49);
    const ids = new Set(results.map((r) => r.body.id));
    expect(ids.size).toBe(1);
    for (const r of results.filter((x) => x.status === 200)) expect(r.headers['idempotent-replayed']).toBe('true');

    const [id] = [...ids];
    const done = await untilFinal(m1, id);
    expect(done.status).toBe('succeeded');

    // Any time later: the current state of the same refund.
    const again = await createRefund(m1, body, key).expect(200);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body).toMatchObject({ id, status: 'succeeded' });

    const changed = await createRefund(m1, { ...body, amount: '11.00' }, key).expect(409);
    expect(changed.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(changed.body.code).toBe('idempotency_key_reused');

    // Keys are per merchant: another merchant may use the same key for its own refund.
    const { rows } = await svc.db.query(`SELECT count(*)::int AS n FROM refunds WHERE payment_id = $1`, [paymentId]);
    expect(rows[0].n).toBe(1);
    expect(await providerRefunds(paymentId)).toHaveLength(1);
  });

  it('never over-refunds: 50 concurrent 10.00 refunds on a 100.00 payment accept exactly 10', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '100.00');
    const results = await Promise.all(
      Array.from({ length: 50 }, () => createRefund(m1, { provider: 'binance_pay', paymentId, amount: '10.00', currency: 'USDT' })),
    );
    const accepted = results.filter((r) => r.status === 202);
    const refused = results.filter((r) => r.status === 422);
    expect(accepted).toHaveLength(10);
    expect(refused).toHaveLength(40);
    for (const r of refused) {
      expect(r.body.code).toBe('amount_exceeds_refundable');
      expect(r.body.refundableAmount).toBe('0');
    }
    await Promise.all(accepted.map((r) => untilFinal(m1, r.body.id)));
    const { rows } = await svc.db.query(
      `SELECT COALESCE(sum(refunded_amount), 0)::text AS s, count(*)::int AS n FROM refunds WHERE payment_id = $1 AND status = 'succeeded'`,
      [paymentId],
    );
    expect(rows[0]).toEqual({ s: '100.000000000000000000', n: 10 });
    const atProvider = await providerRefunds(paymentId);
    expect(atProvider).toHaveLength(10);
    const providerTotal = atProvider.reduce((sum, r) => sum + Math.round(Number(r.refundAmount) * 100), 0);
    expect(providerTotal).toBe(10_000);
  });

  it('surfaces the 10-refund limit and the last-refund-takes-the-remainder rule', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '100.00');
    for (let i = 0; i < 9; i++) {
      await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '1.00', currency: 'USDT' }).expect(202);
    }
    const partial = await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '1.00', currency: 'USDT' }).expect(422);
    expect(partial.body).toMatchObject({ code: 'payment_not_refundable', refundableAmount: '91', remainingRefunds: 1 });
    await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '91.00', currency: 'USDT' }).expect(202);
    const over = await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '0.01', currency: 'USDT' }).expect(422);
    expect(over.body.code).toBe('amount_exceeds_refundable');
  });

  it("checks Binance's own slot count without counting a refund twice: one in flight is in its latest report, one not yet sent is not", async () => {
    const accept = async (paymentId: string, n: number) => {
      const ids: string[] = [];
      for (let i = 0; i < n; i++) ids.push((await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '1.00', currency: 'USDT' }).expect(202)).body.id);
      return Promise.all(ids.map((id) => untilFinal(m1, id)));
    };
    // What Binance reports on every refund of the payment (its query answers carry the order's count).
    const report = (paymentId: string, left: number) =>
      svc.db.query(`UPDATE refunds SET provider_details = provider_details || jsonb_build_object('remainingAttempts', $2::int) WHERE payment_id = $1`, [
        paymentId,
        left,
      ]);
    // Rewinds a finished refund to a state it passed through, leased so no worker touches it.
    const rewind = (id: string, status: 'queued' | 'processing', providerState: 'not_sent' | 'unknown') =>
      svc.db.query(
        `UPDATE refunds SET status = $2, provider_state = $3, refunded_amount = 0, completed_at = NULL,
                provider_details = provider_details - 'remainingAttempts',
                next_check_at = now() + interval '1 hour', lease_until = now() + interval '1 hour'
          WHERE id = $1`,
        [id, status, providerState],
      );
    const restore = (id: string, remaining: number) =>
      svc.db.query(
        `UPDATE refunds SET status = 'succeeded', provider_state = 'acknowledged', refunded_amount = amount, completed_at = now(),
                provider_details = provider_details || jsonb_build_object('remainingAttempts', $2::int),
                next_check_at = NULL, lease_until = NULL
          WHERE id = $1`,
        [id, remaining],
      );

    // Nine refunds, Binance's answers recorded for eight, which report one slot left; the
    // ninth is still in flight (sent, its answer not yet written). Those reports count it
    // already, so one slot is left, not none.
    const p1 = await sandboxPayment(svc, 'binance_pay', '100.00');
    const nine = await accept(p1, 9);
    await report(p1, 1);
    const inFlight = nine[0].id;
    await rewind(inFlight, 'processing', 'unknown');
    const partial = await createRefund(m1, { provider: 'binance_pay', paymentId: p1, amount: '1.00', currency: 'USDT' }).expect(422);
    expect(partial.body).toMatchObject({ code: 'payment_not_refundable', refundableAmount: '91', remainingRefunds: 1 });
    const last = await createRefund(m1, { provider: 'binance_pay', paymentId: p1, amount: '91.00', currency: 'USDT' }).expect(202);
    await restore(inFlight, 1);
    expect((await untilFinal(m1, last.body.id)).status).toBe('succeeded');

    // Three refunds here, but Binance reports two slots left (seven refunds made outside this
    // service), and one of ours is accepted but not yet sent, so no report can include it:
    // one slot is left.
    const p2 = await sandboxPayment(svc, 'binance_pay', '100.00');
    const three = await accept(p2, 3);
    await report(p2, 2);
    const notSent = three[0].id;
    await rewind(notSent, 'queued', 'not_sent');
    const refused = await createRefund(m1, { provider: 'binance_pay', paymentId: p2, amount: '1.00', currency: 'USDT' }).expect(422);
    expect(refused.body).toMatchObject({ code: 'payment_not_refundable', refundableAmount: '97', remainingRefunds: 1 });
    // Once it is sent and answered, the report's two slots are what is left.
    await restore(notSent, 2);
    const more = await createRefund(m1, { provider: 'binance_pay', paymentId: p2, amount: '1.00', currency: 'USDT' }).expect(202);
    expect((await untilFinal(m1, more.body.id)).status).toBe('succeeded');
  });

  it('resolves a lost response by query: one refund at the provider, ours succeeded', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '30.00');
    // Reference the payment first: the fault below would also cut the payment lookup.
    const first = await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '1', currency: 'USDT' }).expect(202);
    await untilFinal(m1, first.body.id);
    await setFaults(svc, 'binance-pay', { timeoutAfterCommitRate: 1 });
    let id: string;
    try {
      const res = await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '29', currency: 'USDT' }).expect(202);
      id = res.body.id;
      // The provider committed the refund; our worker never saw the answer.
      await waitFor(async () => (await providerRefunds(paymentId)).length === 2, 15_000, 'refund at provider');
      await waitFor(async () => {
        const { rows } = await svc.db.query(`SELECT outcome FROM refund_attempts WHERE refund_id = $1 ORDER BY number`, [id]);
        return rows.length > 0 && rows[0].outcome === 'unknown';
      }, 15_000, 'unknown outcome recorded');
    } finally {
      await setFaults(svc, 'binance-pay', { timeoutAfterCommitRate: 0 });
    }
    const done = await untilFinal(m1, id!);
    expect(done.status).toBe('succeeded');
    const atProvider = (await providerRefunds(paymentId)).filter((r) => r.refundAmount.startsWith('29'));
    expect(atProvider).toHaveLength(1);
    expect(await providerRefunds(paymentId)).toHaveLength(2);
    const attempts = await svc.http().get(`/v1/refunds/${id!}/attempts`).set('Authorization', `Bearer ${m1}`).expect(200);
    const ops = attempts.body.data.map((a: { operation: string; outcome: string }) => `${a.operation}:${a.outcome}`);
    expect(ops[0]).toBe('create:unknown');
    // Every call used the one stored request id, which is the one the provider holds.
    const ids = new Set(attempts.body.data.map((a: { providerRequestId: string }) => a.providerRequestId));
    expect([...ids]).toEqual([atProvider[0].refundRequestId]);
  });

  it('recovers refunds whose jobs were lost from Redis (flush)', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '40.00');
    const first = await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '1', currency: 'USDT' }).expect(202);
    await untilFinal(m1, first.body.id);
    // The provider is down, so the refunds stay non-final with jobs parked in Redis.
    await setFaults(svc, 'binance-pay', { errorRate: 1 });
    const ids: string[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const res = await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '2', currency: 'USDT' }).expect(202);
        ids.push(res.body.id);
      }
      await waitFor(async () => {
        const { rows } = await svc.db.query(`SELECT count(*)::int AS n FROM refunds WHERE id = ANY($1) AND status = 'processing'`, [ids]);
        return rows[0].n === 3;
      }, 15_000, 'refunds processing');
      await deleteRedisPrefix(svc.queuePrefix);
    } finally {
      await setFaults(svc, 'binance-pay', { errorRate: 0 });
    }
    for (const id of ids) expect((await untilFinal(m1, id)).status).toBe('succeeded');
    expect(await providerRefunds(paymentId)).toHaveLength(4);
  });
});

describe('bad input changes nothing', () => {
  it('answers every malformed request with a documented problem and persists nothing', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    const valid = { provider: 'binance_pay', paymentId, amount: '1.00', currency: 'USDT' };
    // Refunds of earlier tests may still be finishing (their events keep coming): count rows,
    // and events only of refunds that existed before this test started.
    const { rows: known } = await svc.db.query(`SELECT id FROM refunds`);
    const eventsOfNew = async () =>
      (await svc.db.query(`SELECT count(*)::int AS n FROM refund_events WHERE NOT (refund_id = ANY($1::uuid[]))`, [known.map((r) => r.id)])).rows[0].n;
    const before = { refunds: await countRows('refunds'), payments: await countRows('payments'), events: await eventsOfNew() };

    const cases: Array<[string, () => Promise<{ status: number; body: { code?: string }; headers: Record<string, string> }>, number, string]> = [
      ['no key', () => svc.http().post('/v1/refunds').set('Idempotency-Key', 'k1').send(valid), 401, 'unauthorized'],
      ['unknown key', () => svc.http().post('/v1/refunds').set('Authorization', 'Bearer nope').set('Idempotency-Key', 'k1').send(valid), 401, 'unauthorized'],
      ['no idempotency key', () => createRefund(m1, valid, null), 400, 'idempotency_key_required'],
      ['idempotency key too long', () => createRefund(m1, valid, 'x'.repeat(256)), 400, 'validation_failed'],
      [
        'malformed JSON',
        () =>
          svc.http().post('/v1/refunds').set('Authorization', `Bearer ${m1}`).set('Idempotency-Key', 'k2')
            .set('Content-Type', 'application/json').send('{"provider": "binance_pay",'),
        400,
        'validation_failed',
      ],
      ['amount as number', () => createRefund(m1, { ...valid, amount: 1 }), 400, 'validation_failed'],
      ['negative amount', () => createRefund(m1, { ...valid, amount: '-1.00' }), 400, 'validation_failed'],
      ['zero amount', () => createRefund(m1, { ...valid, amount: '0' }), 400, 'validation_failed'],
      ['exponent amount', () => createRefund(m1, { ...valid, amount: '1e3' }), 400, 'validation_failed'],
      ['too precise', () => createRefund(m1, { ...valid, amount: '0.123456789' }), 400, 'validation_failed'],
      ['unknown provider', () => createRefund(m1, { ...valid, provider: 'paypal' }), 400, 'validation_failed'],
      ['unknown field', () => createRefund(m1, { ...valid, surprise: true }), 400, 'validation_failed'],
      ['other provider block', () => createRefund(m1, { ...valid, lean: { reasonCode: 'CUSTOMER_REQUEST' } }), 400, 'validation_failed'],
      ['array body', () => createRefund(m1, [valid] as unknown as Record<string, unknown>), 400, 'validation_failed'],
      ['metadata too big', () => createRefund(m1, { ...valid, metadata: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, 'v'])) }), 400, 'validation_failed'],
      [
        'not JSON',
        () => svc.http().post('/v1/refunds').set('Authorization', `Bearer ${m1}`).set('Idempotency-Key', 'k3').set('Content-Type', 'text/plain').send('hello'),
        415,
        'unsupported_media_type',
      ],
      [
        'huge body',
        () => createRefund(m1, { ...valid, description: 'x'.repeat(200_000) }),
        413,
        'payload_too_large',
      ],
      ['unknown payment', () => createRefund(m1, { ...valid, paymentId: '999999999999999999' }), 404, 'payment_not_found'],
      ['wrong currency', () => createRefund(m1, { ...valid, currency: 'BUSD' }), 422, 'currency_mismatch'],
      ['above the payment', () => createRefund(m1, { ...valid, amount: '10.01' }), 422, 'amount_exceeds_refundable'],
      ['ops cannot create', () => createRefund(ops, valid), 403, 'forbidden'],
      ['NUL in a string', () => createRefund(m1, { ...valid, description: 'a\u0000b' }), 400, 'validation_failed'],
      ['NUL in metadata', () => createRefund(m1, { ...valid, metadata: { k: '\u0000' } }), 400, 'validation_failed'],
      ['upper-case path without a key', () => svc.http().post('/V1/refunds').set('Idempotency-Key', 'k9').send(valid), 401, 'unauthorized'],
      [
        'a form body',
        () =>
          svc.http().post('/v1/refunds').set('Authorization', `Bearer ${m1}`).set('Idempotency-Key', 'k10').type('form')
            .send(new URLSearchParams(Object.entries(valid).map(([k, v]): [string, string] => [k, String(v)])).toString()),
        415,
        'unsupported_media_type',
      ],
      [
        'text/plain to an escaped /v1 path',
        () => svc.http().post('/v%31/refunds').set('Authorization', `Bearer ${m1}`).set('Idempotency-Key', 'k11').set('Content-Type', 'text/plain').send('hello'),
        415,
        'unsupported_media_type',
      ],
      [
        'invalid UTF-8 to an upper-case /v1 path',
        () =>
          svc.http().post('/V1/refunds').set('Authorization', `Bearer ${m1}`).set('Idempotency-Key', 'k12').set('Content-Type', 'application/json')
            .send(Buffer.concat([Buffer.from(JSON.stringify({ ...valid, reason: 'x' }).slice(0, -2)), Buffer.from([0xff]), Buffer.from('"}')])),
        400,
        'validation_failed',
      ],
      ['an id longer than any route takes', () => svc.http().get(`/v1/refunds/${'a'.repeat(1100)}`).set('Authorization', `Bearer ${m1}`), 404, 'not_found'],
    ];
    for (const [name, send, status, code] of cases) {
      const res = await send();
      expect({ name, status: res.status, code: res.body.code }).toEqual({ name, status, code });
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    }
    const after = { refunds: await countRows('refunds'), payments: await countRows('payments'), events: await eventsOfNew() };
    expect(after).toEqual(before);
  });

  it('does not reveal another merchant’s refunds or payments', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    const res = await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '1', currency: 'USDT' }).expect(202);
    const other = await svc.http().get(`/v1/refunds/${res.body.id}`).set('Authorization', `Bearer ${m2}`).expect(404);
    expect(other.body.code).toBe('not_found');
    await svc.http().get(`/v1/refunds/${res.body.id}/attempts`).set('Authorization', `Bearer ${m2}`).expect(404);
    const pay = await svc.http().get(`/v1/payments/binance_pay/${paymentId}`).set('Authorization', `Bearer ${m2}`).expect(404);
    expect(pay.body.code).toBe('payment_not_found');
    // Referencing it to refund looks like an unknown payment too.
    const steal = await createRefund(m2, { provider: 'binance_pay', paymentId, amount: '1', currency: 'USDT' }).expect(404);
    expect(steal.body.code).toBe('payment_not_found');
    const list = await svc.http().get('/v1/refunds').set('Authorization', `Bearer ${m2}`).expect(200);
    expect(list.body.data.find((r: { id: string }) => r.id === res.body.id)).toBeUndefined();
    await svc.http().get('/v1/refunds/not-a-uuid').set('Authorization', `Bearer ${m1}`).expect(404);
  });

  it('rejects a payment that is not refundable at the provider', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00', 'USDT', 'EXPIRED');
    const res = await createRefund(m1, { provider: 'binance_pay', paymentId, amount: '1', currency: 'USDT' }).expect(422);
    expect(res.body.code).toBe('payment_not_refundable');
  });
});

describe('listing', () => {
  it('pages newest first with a stable cursor and filters', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '100.00');
    const merchant = await merchantKey(svc, 'M-list');
    const created: string[] = [];
    for (let i = 0; i < 7; i++) {
      const res = await createRefund(merchant, { provider: 'binance_pay', paymentId, amount: '1', currency: 'USDT' }).expect(202);
      created.push(res.body.id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 10; page++) {
      const res: { body: { data: Array<{ id: string }>; nextCursor: string | null } } = await svc
        .http()
        .get('/v1/refunds')
        .query({ limit: 3, ...(cursor ? { cursor } : {}) })
        .set('Authorization', `Bearer ${merchant}`)
        .expect(200);
      seen.push(...res.body.data.map((r: { id: string }) => r.id));
      // A refund created mid-pagination must not shift later pages.
      if (page === 0) await createRefund(merchant, { provider: 'binance_pay', paymentId, amount: '1', currency: 'USDT' }).expect(202);
      cursor = res.body.nextCursor;
      if (!cursor) break;
    }
    expect(seen).toEqual([...created].reverse());

    const byStatus = await svc.http().get('/v1/refunds').query({ status: 'queued,processing,succeeded', paymentId }).set('Authorization', `Bearer ${merchant}`).expect(200);
    expect(byStatus.body.data.length).toBeGreaterThan(0);
    await svc.http().get('/v1/refunds').query({ status: 'bogus' }).set('Authorization', `Bearer ${merchant}`).expect(400);
    await svc.http().get('/v1/refunds').query({ limit: 101 }).set('Authorization', `Bearer ${merchant}`).expect(400);
    await svc.http().get('/v1/refunds').query({ cursor: 'garbage' }).set('Authorization', `Bearer ${merchant}`).expect(400);
    // A well-formed but forged cursor is refused too, not passed on to Postgres casts.
    const forged = Buffer.from(JSON.stringify(['1', '-'.repeat(36)])).toString('base64url');
    await svc.http().get('/v1/refunds').query({ cursor: forged }).set('Authorization', `Bearer ${merchant}`).expect(400);
    await svc.http().get('/v1/refunds').query({ paymentId: 'a\u0000b' }).set('Authorization', `Bearer ${merchant}`).expect(400);
    const stuck = await svc.http().get('/v1/refunds').query({ status: 'processing', stuck: 'true' }).set('Authorization', `Bearer ${ops}`).expect(200);
    expect(stuck.body.data).toEqual([]);
  });
});

describe('API keys', () => {
  it('creates keys shown once, checks roles, and revokes at once', async () => {
    const admin = `Bearer ${svc.adminKey}`;
    const res = await svc.http().post('/v1/api-keys').set('Authorization', admin).send({ role: 'finance', name: 'books' }).expect(201);
    expect(res.body).toMatchObject({ role: 'finance', merchantId: null, name: 'books' });
    expect(res.body.key).toMatch(/^rk_finance_/);
    const { rows } = await svc.db.query(`SELECT key_hash FROM api_keys WHERE id = $1`, [res.body.id]);
    expect(rows[0].key_hash.toString('utf8')).not.toContain(res.body.key);

    await svc.http().get('/v1/refunds').set('Authorization', `Bearer ${res.body.key}`).expect(200);
    // finance may not create keys
    await svc.http().post('/v1/api-keys').set('Authorization', `Bearer ${res.body.key}`).send({ role: 'ops', name: 'x' }).expect(403);
    await svc.http().post('/v1/api-keys').set('Authorization', admin).send({ role: 'merchant', name: 'x' }).expect(400);
    await svc.http().post('/v1/api-keys').set('Authorization', admin).send({ role: 'ops', merchantId: 'M1', name: 'x' }).expect(400);

    // Route matching is case-insensitive; authentication must be too.
    await svc.http().delete(`/V1/api-keys/${res.body.id}`).expect(401);
    await svc.http().delete(`/v1/api-keys/${res.body.id}`).set('Authorization', admin).expect(204);
    const revoked = await svc.http().get('/v1/refunds').set('Authorization', `Bearer ${res.body.key}`).expect(401);
    expect(revoked.body.code).toBe('unauthorized');
  });

  it('echoes a plain X-Request-Id and gives every other request a UUID of its own', async () => {
    const given = await svc.http().get('/health/live').set('X-Request-Id', 'lb-7f3a.2').expect(200);
    expect(given.headers['x-request-id']).toBe('lb-7f3a.2');
    for (const header of [undefined, 'has space', '"},"level":60', 'x'.repeat(129)]) {
      const req = svc.http().get('/v1/refunds');
      const res = await (header === undefined ? req : req.set('X-Request-Id', header)).expect(401);
      expect(res.headers['x-request-id']).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    }
  });

  it('serves health', async () => {
    await svc.http().get('/health/live').expect(200);
    const ready = await svc.http().get('/health/ready').expect(200);
    expect(ready.body.status).toBe('ok');
  });
});

describe('an API process that does not serve the emulators (SANDBOX_SERVE=false)', () => {
  it('serves no /sandbox routes, and refunds it accepts go through the emulators another process serves', async () => {
    const peer = await startPeer(svc, { SANDBOX_SERVE: 'false' });
    try {
      await peer.http().get('/sandbox/binance-pay/faults').expect(404);
      await peer.http().post('/sandbox/payments').send({ provider: 'binance_pay', amount: '10.00' }).expect(404);
      const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
      const res = await peer
        .http()
        .post('/v1/refunds')
        .set('Authorization', `Bearer ${m1}`)
        .set('Idempotency-Key', randomUUID())
        .send({ provider: 'binance_pay', paymentId, amount: '4.00', currency: 'USDT' })
        .expect(202);
      expect((await untilFinal(m1, res.body.id)).status).toBe('succeeded');
      expect((await providerRefunds(paymentId)).map((r) => r.refundAmount)).toEqual(['4.00000000']);
    } finally {
      await peer.stop();
    }
  });
});

const BATCHED = ['claim', 'attempt', 'start', 'reschedule', 'final'] as const;

/** Batched worker statements so far, per kind: all of them, and those of more than one refund. */
async function workerBatches(): Promise<Record<(typeof BATCHED)[number], { all: number; multi: number }>> {
  const samples = await scrapeMetrics(svc.http);
  return Object.fromEntries(BATCHED.map((k) => [k, batchCounts(samples, 'refund_worker_batch_size', { statement: k })])) as Record<
    (typeof BATCHED)[number],
    { all: number; multi: number }
  >;
}
