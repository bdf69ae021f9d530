import { createHmac, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LeanClient } from '../src/providers/lean/lean.client.js';
import { LeanSandboxCredentials } from '../src/sandbox/lean/lean.credentials.js';
import { merchantKey, setFaults, startService, TestService, waitFor } from './support/service.js';

let svc: TestService;
let m1: string;

beforeAll(async () => {
  svc = await startService('lean');
  m1 = await merchantKey(svc, 'M1001');
  await setFaults(svc, 'lean', { settleAfterMs: 200 });
});

afterAll(async () => {
  await svc?.stop();
});

async function leanPayment(amount: string, currency = 'AED', status?: string) {
  const res = await svc
    .http()
    .post('/sandbox/payments')
    .send({ provider: 'lean', amount, currency, ...(status ? { status } : {}) })
    .expect(201);
  return res.body.paymentId as string;
}

function create(body: Record<string, unknown>) {
  return svc.http().post('/v1/refunds').set('Authorization', `Bearer ${m1}`).set('Idempotency-Key', randomUUID()).send(body);
}

async function get(id: string) {
  return (await svc.http().get(`/v1/refunds/${id}`).set('Authorization', `Bearer ${m1}`).expect(200)).body;
}

async function until(id: string, statuses: string[]) {
  return waitFor(async () => {
    const r = await get(id);
    return statuses.includes(r.status) ? r : undefined;
  }, 30_000, `refund ${id} in ${statuses.join('/')}`);
}

async function atLean(paymentId: string): Promise<Array<Record<string, unknown>>> {
  return (await svc.http().get('/sandbox/lean/refunds').query({ payment_id: paymentId }).expect(200)).body.data;
}

describe('Lean refunds end to end', () => {
  it('creates, approves and settles refunds, fetching the token once for many', async () => {
    const client = svc.app.get(LeanClient);
    const before = client.tokensFetched;
    const paymentId = await leanPayment('100.00');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await create({ provider: 'lean', paymentId, amount: '10.10', currency: 'AED', reason: 'duplicate' }).expect(202)).body.id);
    }
    for (const id of ids) {
      const done = await until(id, ['succeeded', 'failed']);
      expect(done).toMatchObject({ status: 'succeeded', refundedAmount: '10.1' });
      expect(done.providerDetails).toMatchObject({ reasonCode: 'DUPLICATED_PAYMENT' });
      expect(done.providerDetails.externalReference).toMatch(/^[0-9a-f]{32}$/);
    }
    expect(client.tokensFetched - before).toBeLessThanOrEqual(1);
    const attempts = await svc.http().get(`/v1/refunds/${ids[0]}/attempts`).set('Authorization', `Bearer ${m1}`).expect(200);
    expect(attempts.body.data.map((a: { operation: string }) => a.operation).slice(0, 2)).toEqual(['create', 'approve']);
    const records = await atLean(paymentId);
    expect(records).toHaveLength(5);
    for (const r of records) expect(r.amount).toBe('10.10');
  });

  it('refreshes an expired token once, not once per request', async () => {
    const client = svc.app.get(LeanClient);
    const paymentId = await leanPayment('20.00');
    // Get a token Lean will consider expired in a second, while we believe it valid for an hour.
    await setFaults(svc, 'lean', { tokenTtlSeconds: 1 });
    (client as unknown as { cached?: unknown }).cached = undefined;
    await client.token();
    (client as unknown as { cached: { expiresAt: number } }).cached.expiresAt = Date.now() + 3_600_000;
    await setFaults(svc, 'lean', { tokenTtlSeconds: 3599 });
    await new Promise((r) => setTimeout(r, 1_500));

    const before = client.tokensFetched;
    const ids = await Promise.all(
      Array.from({ length: 4 }, async () => (await create({ provider: 'lean', paymentId, amount: '5', currency: 'AED' }).expect(202)).body.id),
    );
    for (const id of ids) expect((await until(id, ['succeeded', 'failed'])).status).toBe('succeeded');
    // Every request saw a 401 on the stale token; together they fetched exactly one new token.
    expect(client.tokensFetched - before).toBe(1);
  });

  it('never sends a second create after a dropped response: one refund at Lean', async () => {
    const paymentId = await leanPayment('50.00');
    await create({ provider: 'lean', paymentId, amount: '1', currency: 'AED' }).expect(202);
    await waitFor(async () => (await atLean(paymentId)).length === 1, 15_000, 'first refund');
    await setFaults(svc, 'lean', { timeoutAfterCommitRate: 1 });
    let id: string;
    try {
      id = (await create({ provider: 'lean', paymentId, amount: '49', currency: 'AED' }).expect(202)).body.id;
      await waitFor(async () => (await atLean(paymentId)).length === 2, 15_000, 'refund created at Lean');
      await waitFor(async () => {
        const { rows } = await svc.db.query(`SELECT outcome FROM refund_attempts WHERE refund_id = $1 ORDER BY number`, [id]);
        return rows[0]?.outcome === 'unknown';
      }, 15_000, 'unknown create');
    } finally {
      await setFaults(svc, 'lean', { timeoutAfterCommitRate: 0 });
    }
    const done = await until(id!, ['succeeded', 'failed']);
    expect(done.status).toBe('succeeded');
    const records = await atLean(paymentId);
    expect(records).toHaveLength(2);
    expect(records.filter((r) => r.external_reference === done.providerDetails.externalReference)).toHaveLength(1);
  });

  it('trusts "not listed" only ABSENCE_GRACE_MS after a lost create ENDED: a late commit is found, not doubled', async () => {
    const paymentId = await leanPayment('30.00');
    // The first refund caches the payment and is left to finish.
    const first = (await create({ provider: 'lean', paymentId, amount: '1', currency: 'AED' }).expect(202)).body.id;
    await until(first, ['succeeded', 'failed']);
    // Lean stalls on the payment: our create reaches it and waits there past PROVIDER_TIMEOUT_MS
    // (2 s), so its outcome is unknown, and it commits only once the stall ends.
    const stall = await svc.db.connect();
    let id: string;
    try {
      await stall.query('BEGIN');
      await stall.query('SELECT 1 FROM sandbox.lean_payments WHERE id = $1 FOR UPDATE', [paymentId]);
      id = (await create({ provider: 'lean', paymentId, amount: '2', currency: 'AED' }).expect(202)).body.id;
      await waitFor(async () => {
        const { rows } = await svc.db.query(`SELECT outcome FROM refund_attempts WHERE refund_id = $1 AND operation = 'create'`, [id]);
        return rows[0]?.outcome === 'unknown';
      }, 15_000, 'create timed out');
      // Shorter than ABSENCE_GRACE_MS (1 s): a list read now must not count as proof of absence.
      await new Promise((r) => setTimeout(r, 400));
    } finally {
      await stall.query('ROLLBACK').catch(() => undefined);
      stall.release();
    }
    const done = await until(id!, ['succeeded', 'failed']);
    expect(done.status).toBe('succeeded');
    const mine = (await atLean(paymentId)).filter((r) => r.external_reference === done.providerDetails.externalReference);
    expect(mine).toHaveLength(1);
    const { rows: creates } = await svc.db.query(`SELECT count(*)::int AS n FROM refund_attempts WHERE refund_id = $1 AND operation = 'create'`, [id!]);
    expect(creates[0].n).toBe(1);
  });

  it('takes a spoiled answer to a create (cut short, cut off, not JSON) as unknown: found by the search, never sent twice', async () => {
    const paymentId = await leanPayment('40.00');
    const first = (await create({ provider: 'lean', paymentId, amount: '1', currency: 'AED' }).expect(202)).body.id;
    await until(first, ['succeeded', 'failed']);
    await setFaults(svc, 'lean', { malformedResponseRate: 1 });
    let id: string;
    try {
      id = (await create({ provider: 'lean', paymentId, amount: '3', currency: 'AED' }).expect(202)).body.id;
      await waitFor(async () => {
        const { rows } = await svc.db.query(`SELECT outcome FROM refund_attempts WHERE refund_id = $1 AND operation = 'create'`, [id]);
        return rows[0]?.outcome === 'unknown';
      }, 15_000, 'spoiled create answer');
    } finally {
      await setFaults(svc, 'lean', { malformedResponseRate: 0 });
    }
    const done = await until(id!, ['succeeded', 'failed']);
    expect(done.status).toBe('succeeded');
    expect((await atLean(paymentId)).filter((r) => r.external_reference === done.providerDetails.externalReference)).toHaveLength(1);
    const { rows } = await svc.db.query(`SELECT count(*)::int AS n FROM refund_attempts WHERE refund_id = $1 AND operation = 'create'`, [id!]);
    expect(rows[0].n).toBe(1);
  });

  it('re-sends a create that never reached Lean only after a complete search found nothing', async () => {
    const paymentId = await leanPayment('20.00');
    await create({ provider: 'lean', paymentId, amount: '1', currency: 'AED' }).expect(202);
    await waitFor(async () => (await atLean(paymentId)).length === 1, 15_000, 'first refund');
    // Lean answers 500 before doing anything: the create's outcome is unknown to us.
    await setFaults(svc, 'lean', { errorRate: 1 });
    let id: string;
    try {
      id = (await create({ provider: 'lean', paymentId, amount: '2', currency: 'AED' }).expect(202)).body.id;
      await waitFor(async () => {
        const { rows } = await svc.db.query(`SELECT outcome FROM refund_attempts WHERE refund_id = $1 AND operation = 'create'`, [id]);
        return rows[0]?.outcome === 'unknown';
      }, 15_000, 'unknown create');
      expect(await atLean(paymentId)).toHaveLength(1);
    } finally {
      await setFaults(svc, 'lean', { errorRate: 0 });
    }
    const done = await until(id!, ['succeeded', 'failed']);
    expect(done.status).toBe('succeeded');
    const records = await atLean(paymentId);
    expect(records).toHaveLength(2);
    const attempts = await svc.http().get(`/v1/refunds/${id!}/attempts`).set('Authorization', `Bearer ${m1}`).expect(200);
    const ops = attempts.body.data.map((a: { operation: string }) => a.operation);
    // The second create came only after a query that searched and found nothing.
    const secondCreate = ops.indexOf('create', 1);
    expect(secondCreate).toBeGreaterThan(0);
    expect(ops.slice(0, secondCreate)).toContain('query');
  });

  it('ends failed with code rejected when a checker at Lean rejects it', async () => {
    const paymentId = await leanPayment('30.00');
    await setFaults(svc, 'lean', { checkerRejectRate: 1 });
    let id: string;
    try {
      id = (await create({ provider: 'lean', paymentId, amount: '10', currency: 'AED' }).expect(202)).body.id;
      await waitFor(async () => (await atLean(paymentId)).length === 1, 15_000, 'refund at Lean');
    } finally {
      await setFaults(svc, 'lean', { checkerRejectRate: 0 });
    }
    const done = await until(id!, ['failed', 'succeeded']);
    expect(done).toMatchObject({ status: 'failed', failureCode: 'rejected', providerStatus: 'REJECTED' });
    // The rejected amount is refundable again.
    await create({ provider: 'lean', paymentId, amount: '30', currency: 'AED' }).expect(202);
  });

  it('ends failed when the payout fails, and refuses an amount above the remainder itself', async () => {
    const paymentId = await leanPayment('30.00');
    await setFaults(svc, 'lean', { settleAfterMs: 600_000 });
    try {
      const id = (await create({ provider: 'lean', paymentId, amount: '10', currency: 'AED' }).expect(202)).body.id;
      const approved = await waitFor(async () => {
        const [r] = await atLean(paymentId);
        return r?.status === 'APPROVED' ? r : undefined;
      }, 15_000, 'approved at Lean');
      // The bank payout fails at Lean: the emulator forces the final outcome.
      await svc.http().post(`/sandbox/lean/refunds/${approved.refund_id}/settle`).send({ status: 'FAILED' }).expect((r) => {
        if (r.status >= 300) throw new Error(`settle: ${r.status}`);
      });
      const done = await until(id, ['failed', 'succeeded']);
      expect(done).toMatchObject({ status: 'failed', failureCode: 'FAILED' });
    } finally {
      await setFaults(svc, 'lean', { settleAfterMs: 200 });
    }
    const before = (await atLean(paymentId)).length;
    const over = await create({ provider: 'lean', paymentId, amount: '30.01', currency: 'AED' }).expect(422);
    expect(over.body.code).toBe('amount_exceeds_refundable');
    expect((await atLean(paymentId)).length).toBe(before);
  });

  it('refuses unreconciled payments and wrong currencies before Lean sees them', async () => {
    const unreconciled = await leanPayment('10.00', 'AED', 'UNRECONCILED');
    const res = await create({ provider: 'lean', paymentId: unreconciled, amount: '1', currency: 'AED' }).expect(422);
    expect(res.body.code).toBe('payment_not_refundable');
    const sar = await leanPayment('10.00', 'SAR');
    expect((await create({ provider: 'lean', paymentId: sar, amount: '1', currency: 'AED' }).expect(422)).body.code).toBe('currency_mismatch');
    const usd = await create({ provider: 'lean', paymentId: sar, amount: '1', currency: 'USD' }).expect(400);
    expect(usd.body.errors[0].field).toBe('currency');
    const badReason = await create({ provider: 'lean', paymentId: sar, amount: '1', currency: 'SAR', lean: { reasonCode: 'BECAUSE' } }).expect(400);
    expect(badReason.body.errors[0].field).toBe('lean.reasonCode');
  });

  it('treats a payment id in any letter case as the same payment', async () => {
    const paymentId = await leanPayment('10.00');
    const upper = await create({ provider: 'lean', paymentId: paymentId.toUpperCase(), amount: '10', currency: 'AED' }).expect(202);
    expect(upper.body.paymentId).toBe(paymentId);
    const again = await create({ provider: 'lean', paymentId, amount: '1', currency: 'AED' }).expect(422);
    expect(again.body.code).toBe('amount_exceeds_refundable');
    expect((await until(upper.body.id, ['succeeded', 'failed'])).status).toBe('succeeded');
    await svc.http().get(`/v1/payments/lean/${paymentId.toUpperCase()}`).set('Authorization', `Bearer ${m1}`).expect(200);
    await create({ provider: 'lean', paymentId: 'not-a-uuid', amount: '1', currency: 'AED' }).expect(400);
  });

  it('lists Lean reasons next to the unified ones', async () => {
    const res = await svc.http().get('/v1/refund-reasons').query({ provider: 'lean' }).set('Authorization', `Bearer ${m1}`).expect(200);
    expect(res.body.providerReasons.map((r: { code: string }) => r.code)).toEqual(
      expect.arrayContaining(['CUSTOMER_REQUEST', 'DUPLICATED_PAYMENT', 'FRAUDULENT_PAYMENT', 'ORDER_CANCELLED']),
    );
    expect(res.body.data.find((r: { reason: string }) => r.reason === 'order_canceled').lean).toBe('ORDER_CANCELLED');
  });
});

describe('Lean webhooks', () => {
  it('refuses forged webhooks with 401; a genuine one only triggers a re-check', async () => {
    const paymentId = await leanPayment('10.00');
    const id = (await create({ provider: 'lean', paymentId, amount: '1', currency: 'AED' }).expect(202)).body.id;
    const done = await until(id, ['succeeded', 'failed']);
    const body = JSON.stringify({
      type: 'refund.completed',
      payload: { refund_id: done.providerRefundId, status: 'REJECTED' },
      timestamp: new Date().toISOString(),
      event_id: randomUUID(),
    });
    const forged = `sha512=${createHmac('sha512', 'not-the-secret').update(body).digest('hex')}`;
    await svc.http().post('/webhooks/lean').set({ 'Content-Type': 'application/json', 'lean-signature': forged }).send(body).expect(401);
    await svc.http().post('/webhooks/lean').set({ 'Content-Type': 'application/json' }).send(body).expect(401);
    const { webhookSecret } = await svc.app.get(LeanSandboxCredentials).lean();
    const genuine = `sha512=${createHmac('sha512', webhookSecret).update(body).digest('hex')}`;
    await svc.http().post('/webhooks/lean').set({ 'Content-Type': 'application/json', 'lean-signature': genuine }).send(body).expect(200);
    // The webhook's payload is a hint, not the truth: the refund stays as Lean really has it.
    expect((await get(id)).status).toBe('succeeded');
  });

  it('refuses genuine events that are too old, dated ahead or undated (replays) with 401', async () => {
    const { webhookSecret } = await svc.app.get(LeanSandboxCredentials).lean();
    const send = (timestamp: unknown) => {
      const body = JSON.stringify({ type: 'refund.approved', payload: { refund_id: randomUUID() }, timestamp, event_id: randomUUID() });
      const signature = `sha512=${createHmac('sha512', webhookSecret).update(body).digest('hex')}`;
      return svc.http().post('/webhooks/lean').set({ 'Content-Type': 'application/json', 'lean-signature': signature }).send(body);
    };
    // Lean keeps the event time on retries (up to 258 minutes): 5 hours old is still a retry.
    await send(new Date(Date.now() - 5 * 3_600_000).toISOString()).expect(200);
    const stale = await send(new Date(Date.now() - 7 * 3_600_000).toISOString()).expect(401);
    expect(stale.body).toMatchObject({ code: 'unauthorized', reason: 'webhook_timestamp_out_of_window' });
    expect((await send(new Date(Date.now() + 10 * 60_000).toISOString()).expect(401)).body.reason).toBe('webhook_timestamp_out_of_window');
    expect((await send(undefined).expect(401)).body.reason).toBe('webhook_timestamp_invalid');
    expect((await send('2026-01-01').expect(401)).body.reason).toBe('webhook_timestamp_invalid');
  });
});
