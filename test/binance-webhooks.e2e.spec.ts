import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { RefundOutcomeService } from '../src/processing/refund-outcome.service.js';
import { RefundQueueService } from '../src/processing/refund-queue.service.js';
import { RefundStateService } from '../src/refunds/refund-state.service.js';
import { merchantKey, sandboxPayment, setFaults, startService, TestService, waitFor } from './support/service.js';
import { metricSum, scrapeMetrics } from './support/metrics.js';
import { signedBinanceWebhook } from './support/binance-webhook.js';

// Polling is slowed to a minute here, so within these tests only webhooks can finalise a refund.
let svc: TestService;
let m1: string;

beforeAll(async () => {
  svc = await startService('bwebhooks', { POLL_INITIAL_DELAY_MS: '60000', POLL_MAX_DELAY_MS: '60000' });
  m1 = await merchantKey(svc, 'M1001');
});

afterAll(async () => {
  await svc?.stop();
});

async function createRefund(paymentId: string, amount: string) {
  const res = await svc
    .http()
    .post('/v1/refunds')
    .set('Authorization', `Bearer ${m1}`)
    .set('Idempotency-Key', randomUUID())
    .send({ provider: 'binance_pay', paymentId, amount, currency: 'USDT' })
    .expect(202);
  return res.body.id as string;
}

async function refund(id: string) {
  return (await svc.http().get(`/v1/refunds/${id}`).set('Authorization', `Bearer ${m1}`).expect(200)).body;
}

async function events(id: string): Promise<Array<{ to: string; actor: string }>> {
  return (await svc.http().get(`/v1/refunds/${id}/events`).set('Authorization', `Bearer ${m1}`).expect(200)).body.data;
}

/** A refund notification as Binance sends it, signed with the sandbox's webhook key. */
function signedWebhook(requestId: string, prepayId: string, bizStatus: string, timestamp?: string) {
  return signedBinanceWebhook(svc, requestId, prepayId, bizStatus, timestamp);
}

function post(w: { body: string; headers: Record<string, string> }) {
  return svc.http().post('/webhooks/binance-pay').set(w.headers).send(w.body);
}

async function requestIdOf(refundId: string): Promise<string> {
  return waitFor(async () => {
    const { rows } = await svc.db.query(`SELECT provider_request_id FROM refunds WHERE id = $1 AND status = 'processing'`, [refundId]);
    return rows[0]?.provider_request_id as string | undefined;
  }, 10_000, 'refund sent');
}

describe('Binance Pay webhooks', () => {
  it('finalises a refund from the provider’s own signed webhook', async () => {
    await setFaults(svc, 'binance-pay', { settleAfterMs: 300 });
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    const id = await createRefund(paymentId, '3');
    const done = await waitFor(async () => {
      const r = await refund(id);
      return r.status === 'succeeded' ? r : undefined;
    }, 15_000, 'webhook success');
    expect(done.refundedAmount).toBe('3');
    expect((await events(id)).at(-1)).toMatchObject({ to: 'succeeded', actor: 'webhook:binance_pay' });
  });

  it('refuses forged or altered webhooks with 401 and changes nothing; duplicates and late ones are harmless', async () => {
    // Settlement far away: the refund stays processing at the provider.
    await setFaults(svc, 'binance-pay', { settleAfterMs: 600_000 });
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    const id = await createRefund(paymentId, '1');
    const requestId = await requestIdOf(id);

    const valid = await signedWebhook(requestId, paymentId, 'REFUND_SUCCESS');
    const altered = { ...valid, body: valid.body.replace('REFUND_SUCCESS', 'REFUND_REJECTED') };
    const forged = { ...valid, headers: { ...valid.headers, 'BinancePay-Signature': Buffer.from('x'.repeat(256)).toString('base64') } };
    const unknownCert = { ...valid, headers: { ...valid.headers, 'BinancePay-Certificate-SN': 'f'.repeat(32) } };
    const unsigned = { body: valid.body, headers: { 'Content-Type': 'application/json' } };
    for (const bad of [altered, forged, unknownCert, unsigned]) {
      const res = await post(bad).expect(401);
      expect(res.body.code).toBe('unauthorized');
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    }
    expect((await refund(id)).status).toBe('processing');
    expect(await events(id)).toHaveLength(2);

    const ack = await post(valid).expect(200);
    expect(ack.body).toEqual({ returnCode: 'SUCCESS', returnMessage: null });
    expect((await refund(id)).status).toBe('succeeded');
    const after = await events(id);
    expect(after.at(-1)).toMatchObject({ to: 'succeeded', actor: 'webhook:binance_pay' });

    // The same webhook again, and a late contradicting one: acknowledged, nothing moves.
    await post(valid).expect(200);
    await post(await signedWebhook(requestId, paymentId, 'REFUND_REJECTED')).expect(200);
    const final = await refund(id);
    expect(final.status).toBe('succeeded');
    expect(final.refundedAmount).toBe('1');
    expect(await events(id)).toHaveLength(after.length);
  });

  it('refuses genuine but stale or future-dated webhooks (replays) with 401 and changes nothing', async () => {
    await setFaults(svc, 'binance-pay', { settleAfterMs: 600_000 });
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    const id = await createRefund(paymentId, '1');
    const requestId = await requestIdOf(id);
    const before = await events(id);
    // Signed with Binance's real key over the real timestamp: only the time is wrong.
    for (const at of [Date.now() - 6 * 60_000, Date.now() + 6 * 60_000]) {
      const res = await post(await signedWebhook(requestId, paymentId, 'REFUND_SUCCESS', String(at))).expect(401);
      expect(res.body).toMatchObject({ code: 'unauthorized', reason: 'webhook_timestamp_out_of_window' });
      expect(res.body.detail).toMatch(/BinancePay-Timestamp is \d+ s (old|in the future)/);
    }
    const unreadable = await post(await signedWebhook(requestId, paymentId, 'REFUND_SUCCESS', 'yesterday')).expect(401);
    expect(unreadable.body.reason).toBe('webhook_timestamp_invalid');
    expect((await refund(id)).status).toBe('processing');
    expect(await events(id)).toHaveLength(before.length);

    // Inside the window (4 minutes old) it is accepted; a replay of it within the window is harmless.
    const recent = await signedWebhook(requestId, paymentId, 'REFUND_SUCCESS', String(Date.now() - 4 * 60_000));
    await post(recent).expect(200);
    await post(recent).expect(200);
    expect((await refund(id)).status).toBe('succeeded');
    expect(await events(id)).toHaveLength(before.length + 1);
  });

  it('applies many webhooks arriving at once in shared statements, each to its own refund, duplicates and all', async () => {
    await setFaults(svc, 'binance-pay', { settleAfterMs: 600_000 });
    const payments = await Promise.all(Array.from({ length: 30 }, () => sandboxPayment(svc, 'binance_pay', '10.00')));
    const ids = await Promise.all(payments.map((paymentId) => createRefund(paymentId, '1')));
    const requestIds = await Promise.all(ids.map((id) => requestIdOf(id)));
    // Every third refund refused, the others paid; every fifth webhook sent twice at once.
    const verdict = (i: number) => (i % 3 === 0 ? 'REFUND_REJECTED' : 'REFUND_SUCCESS');
    const hooks = await Promise.all(requestIds.map((requestId, i) => signedWebhook(requestId, payments[i]!, verdict(i))));

    // What the webhooks' statements really moved (not what was sent to them).
    const state = svc.app.get(RefundStateService);
    const moved: number[] = [];
    const spy = vi.spyOn(state, 'transitionMany').mockImplementation(async function (this: RefundStateService, ...args) {
      const rows = await RefundStateService.prototype.transitionMany.apply(this, args);
      if (args[2].actor === 'webhook:binance_pay') moved.push(rows.filter((r) => r !== null).length);
      return rows;
    });
    let answers: Array<{ status: number }>;
    try {
      const rest = hooks.slice(2).flatMap((hook, i) => ((i + 2) % 5 === 0 ? [hook, hook] : [hook]));
      answers = [...(await queuedBehindTwo(ids.slice(0, 2), hooks.slice(0, 2), rest, 20)), await post(hooks[0]!)];
    } finally {
      spy.mockRestore();
    }
    for (const answer of answers) expect(answer.status).toBe(200);

    for (const [i, id] of ids.entries()) {
      const r = await refund(id);
      expect(r.status, id).toBe(i % 3 === 0 ? 'failed' : 'succeeded');
      expect(r.refundedAmount).toBe(i % 3 === 0 ? '0' : '1');
      const moves = (await events(id)).filter((e) => e.to === r.status);
      // One final move, by the webhook, even where it came twice.
      expect(moves).toEqual([expect.objectContaining({ actor: 'webhook:binance_pay' })]);
    }
    // Every refund was moved by a webhook statement, and some statements moved several.
    expect(moved.reduce((a, b) => a + b, 0)).toBe(30);
    expect(Math.max(...moved)).toBeGreaterThan(1);
  });

  it('removes the waiting poll job of a refund its webhook made final for good; a failed refund keeps its job', async () => {
    await setFaults(svc, 'binance-pay', { settleAfterMs: 600_000 });
    const payments = await Promise.all([0, 1].map(() => sandboxPayment(svc, 'binance_pay', '10.00')));
    const [paid, refused] = await Promise.all(payments.map((paymentId) => createRefund(paymentId, '1')));
    const requestIds = await Promise.all([paid!, refused!].map((id) => requestIdOf(id)));
    const queue = svc.app.get(RefundQueueService).queue('binance_pay');
    // After the create's pending answer each job waits a minute for its first poll.
    for (const id of [paid!, refused!]) {
      await waitFor(async () => ((await (await queue.getJob(id))?.isDelayed()) ? true : undefined), 10_000, 'job delayed');
    }

    await post(await signedWebhook(requestIds[0]!, payments[0]!, 'REFUND_SUCCESS')).expect(200);
    await post(await signedWebhook(requestIds[1]!, payments[1]!, 'REFUND_REJECTED')).expect(200);
    expect((await refund(paid!)).status).toBe('succeeded');
    expect((await refund(refused!)).status).toBe('failed');
    // The paid refund's job is gone long before its poll was due...
    await waitFor(async () => ((await queue.getJob(paid!)) === undefined ? true : undefined), 10_000, 'job removed');
    // ...and the failed one's stays: an ops retry re-adds a job under the same id, which a
    // late removal could take.
    expect(await (await queue.getJob(refused!))?.isDelayed()).toBe(true);
  });

  it('fails only the webhook whose refund Postgres refuses; the others in its statement are applied', async () => {
    await setFaults(svc, 'binance-pay', { settleAfterMs: 600_000 });
    const payments = await Promise.all(Array.from({ length: 12 }, () => sandboxPayment(svc, 'binance_pay', '10.00')));
    const ids = await Promise.all(payments.map((paymentId) => createRefund(paymentId, '1')));
    const requestIds = await Promise.all(ids.map((id) => requestIdOf(id)));
    const hooks = await Promise.all(requestIds.map((requestId, i) => signedWebhook(requestId, payments[i]!, 'REFUND_SUCCESS')));
    // A row Postgres refuses (a trigger stands in for any per-row error) fails the whole
    // statement, which wrote nothing; each answer is then tried alone.
    const poisoned = ids[6]!;
    await svc.db.query(`
      CREATE FUNCTION test_poison_final() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'poisoned refund'; END $$;
      CREATE TRIGGER test_poison_final BEFORE UPDATE ON refunds FOR EACH ROW
        WHEN (NEW.id = '${poisoned}'::uuid AND NEW.status::text = 'succeeded') EXECUTE FUNCTION test_poison_final();`);
    const splitsBefore = await webhookSplits();
    let answers: Array<{ status: number }>;
    try {
      answers = await queuedBehindTwo(ids.slice(0, 2), hooks.slice(0, 2), hooks.slice(2), 10);
    } finally {
      await svc.db.query(`DROP TRIGGER test_poison_final ON refunds; DROP FUNCTION test_poison_final();`);
    }
    for (const [i, answer] of answers.entries()) {
      // The refused one is not acknowledged, so Binance sends it again; the others are.
      if (ids[i] === poisoned) expect(answer.status).toBeGreaterThanOrEqual(500);
      else expect(answer.status, ids[i]).toBe(200);
    }
    for (const id of ids) expect((await refund(id)).status, id).toBe(id === poisoned ? 'processing' : 'succeeded');
    expect(await webhookSplits()).toBeGreaterThan(splitsBefore);
    // Its next delivery, with the row accepted again, finishes it.
    await post(hooks[6]!).expect(200);
    expect((await refund(poisoned)).status).toBe('succeeded');
  });

  it('answers a final word about a refund final already without a locked read, unless it would flag it', async () => {
    await setFaults(svc, 'binance-pay', { settleAfterMs: 600_000 });
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    const id = await createRefund(paymentId, '1');
    const requestId = await requestIdOf(id);
    await post(await signedWebhook(requestId, paymentId, 'REFUND_SUCCESS')).expect(200);
    expect((await refund(id)).status).toBe('succeeded');

    const outcomes = svc.app.get(RefundOutcomeService);
    const locked = vi.spyOn(outcomes as unknown as { applyLocked: (...args: unknown[]) => Promise<string> }, 'applyLocked');
    const success = { kind: 'final' as const, status: 'succeeded' as const, update: { providerStatus: 'REFUND_SUCCESS' } };
    try {
      // The worker's poll, losing the race: its batched move finds the refund succeeded under
      // the row lock, which is all the locked path would have learnt.
      expect(await outcomes.apply(id, success, 'worker', requestId)).toBe('already_final');
      // A webhook whose unlocked read still saw it processing: the same, from its own statement.
      expect(await outcomes.apply(id, success, 'webhook:binance_pay', requestId, { seen: { status: 'processing', provider_request_id: requestId } })).toBe(
        'already_final',
      );
      expect(locked).not.toHaveBeenCalled();
      const after = await svc.db.query(`SELECT review_flagged_at, lease_owner FROM refunds WHERE id = $1`, [id]);
      expect(after.rows[0]).toEqual({ review_flagged_at: null, lease_owner: null });
      expect((await events(id)).filter((e) => e.to === 'succeeded')).toHaveLength(1);

      // A word that contradicts it (refused, after we recorded it paid) is a human's to judge:
      // the locked path records it.
      const refused = { kind: 'final' as const, status: 'failed' as const, update: { providerStatus: 'REFUND_REJECTED', failureCode: 'REFUND_REJECTED' } };
      expect(await outcomes.apply(id, refused, 'worker', requestId)).toBe('flagged');
      expect(locked).toHaveBeenCalledTimes(1);
      // So is money moved on another submission (one an ops retry superseded), which the
      // refund's own may have paid too; that submission's refusal needs nothing recorded.
      expect(await outcomes.apply(id, success, 'worker', 'an-earlier-submission')).toBe('flagged');
      expect(locked).toHaveBeenCalledTimes(2);
      expect(await outcomes.apply(id, refused, 'worker', 'an-earlier-submission')).toBe('already_final');
      expect(locked).toHaveBeenCalledTimes(2);
    } finally {
      locked.mockRestore();
    }
    const { rows } = await svc.db.query(`SELECT status, review_flagged_at FROM refunds WHERE id = $1`, [id]);
    expect(rows[0].status).toBe('succeeded');
    expect(rows[0].review_flagged_at).not.toBeNull();
  });

  it('acknowledges a signed webhook for a refund it does not know without inventing one', async () => {
    const { rows: before } = await svc.db.query(`SELECT count(*)::int AS n FROM refunds`);
    await post(await signedWebhook('not-ours-' + randomUUID(), '123', 'REFUND_SUCCESS')).expect(200);
    const { rows: after } = await svc.db.query(`SELECT count(*)::int AS n FROM refunds`);
    expect(after[0].n).toBe(before[0].n);
  });
});

/** Webhook final answers waiting for a statement in the API process (the batcher's queue). */
function queued(): number {
  const outcomes = svc.app.get(RefundOutcomeService) as unknown as { webhookFinals: Map<string, { waiting: number }> };
  return outcomes.webhookFinals.get('webhook:binance_pay')?.waiting ?? 0;
}

/**
 * Posts `first` (the webhooks of `locked`, whose rows are held locked meanwhile) and waits
 * until their two statements wait at Postgres (two batches are in flight at most), then
 * posts `rest`, which must queue behind them, and lets all go once `queue` are waiting.
 * Answers in the order posted.
 */
async function queuedBehindTwo(
  locked: string[],
  first: Array<{ body: string; headers: Record<string, string> }>,
  rest: Array<{ body: string; headers: Record<string, string> }>,
  queue: number,
): Promise<Array<{ status: number }>> {
  const holder = await svc.db.connect();
  try {
    await holder.query('BEGIN');
    await holder.query(`SELECT 1 FROM refunds WHERE id = ANY($1::uuid[]) FOR UPDATE`, [locked]);
    // (then() sends a supertest request now rather than when awaited.)
    const sent = first.map((hook) => post(hook).then((r) => r));
    await waitFor(async () => {
      const { rows } = await svc.db.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE OF r%'`,
      );
      return rows[0].n >= 2 || undefined;
    }, 10_000, 'two webhook statements waiting');
    sent.push(...rest.map((hook) => post(hook).then((r) => r)));
    await waitFor(async () => queued() >= queue || undefined, 10_000, 'webhooks queued');
    await holder.query('COMMIT');
    return await Promise.all(sent);
  } finally {
    await holder.query('ROLLBACK').catch(() => undefined);
    holder.release();
  }
}

async function webhookSplits(): Promise<number> {
  return metricSum(await scrapeMetrics(svc.http), 'refund_worker_batch_splits_total', { statement: 'webhook_final' });
}
