import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { binanceCertSerial, signBinanceWebhook } from '../src/providers/binance-pay/binance-pay.signing.js';
import { SandboxCredentials } from '../src/sandbox/sandbox-credentials.js';
import { merchantKey, roleKey, sandboxPayment, setFaults, startService, TestService, waitFor } from './support/service.js';

let svc: TestService;
let m1: string;
let ops: string;
let admin: string;

beforeAll(async () => {
  svc = await startService('ops', { STUCK_AFTER_MS_BINANCE_PAY: '1500' });
  m1 = await merchantKey(svc, 'M1001');
  ops = await roleKey(svc, 'ops');
  admin = `Bearer ${svc.adminKey}`;
  await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
});

afterAll(async () => {
  await svc?.stop();
});

const as = (key: string) => `Bearer ${key}`;

function create(body: Record<string, unknown>, key = m1) {
  return svc.http().post('/v1/refunds').set('Authorization', as(key)).set('Idempotency-Key', randomUUID()).send(body);
}

async function get(id: string) {
  return (await svc.http().get(`/v1/refunds/${id}`).set('Authorization', as(ops)).expect(200)).body;
}

async function until(id: string, statuses: string[]) {
  return waitFor(async () => {
    const r = await get(id);
    return statuses.includes(r.status) ? r : undefined;
  }, 30_000, `refund ${id} in ${statuses.join('/')}`);
}

async function failedRefund(amount = '5') {
  const paymentId = await sandboxPayment(svc, 'binance_pay', '100.00');
  await setFaults(svc, 'binance-pay', { insufficientBalance: true });
  try {
    const id = (await create({ provider: 'binance_pay', paymentId, amount, currency: 'USDT' }).expect(202)).body.id;
    const done = await until(id, ['failed', 'succeeded']);
    expect(done).toMatchObject({ status: 'failed', failureCode: '400304', failureCategory: 'retryable' });
    return { id, paymentId };
  } finally {
    await setFaults(svc, 'binance-pay', { insufficientBalance: false });
  }
}

describe('ops retry', () => {
  it('retries a provider-confirmed failure with a new request id, and it can succeed', async () => {
    const { id } = await failedRefund();
    await svc.http().post(`/v1/refunds/${id}/retry`).set('Authorization', as(m1)).expect(403);
    const res = await svc.http().post(`/v1/refunds/${id}/retry`).set('Authorization', as(ops)).send({ comment: 'balance topped up' }).expect(202);
    expect(res.body).toMatchObject({ status: 'queued', failureCode: null, failureCategory: null });
    const done = await until(id, ['succeeded', 'failed']);
    expect(done.status).toBe('succeeded');

    const attempts = (await svc.http().get(`/v1/refunds/${id}/attempts`).set('Authorization', as(ops)).expect(200)).body.data;
    const creates = attempts.filter((a: { operation: string }) => a.operation === 'create');
    expect(creates).toHaveLength(2);
    expect(creates[0].providerRequestId).not.toBe(creates[1].providerRequestId);
    const events = (await svc.http().get(`/v1/refunds/${id}/events`).set('Authorization', as(ops)).expect(200)).body.data;
    const retry = events.find((e: { from: string; to: string }) => e.from === 'failed' && e.to === 'queued');
    expect(retry.actor).toMatch(/^api_key:/);
    expect(retry.detail).toMatchObject({ action: 'retry', comment: 'balance topped up', previousFailureCode: '400304' });

    const again = await svc.http().post(`/v1/refunds/${id}/retry`).set('Authorization', as(ops)).expect(409);
    expect(again.body.code).toBe('invalid_state');
  });

  it('refuses to retry a refund still processing', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    await setFaults(svc, 'binance-pay', { settleAfterMs: 600_000 });
    try {
      const id = (await create({ provider: 'binance_pay', paymentId, amount: '1', currency: 'USDT' }).expect(202)).body.id;
      await until(id, ['processing']);
      expect((await svc.http().post(`/v1/refunds/${id}/retry`).set('Authorization', as(ops)).expect(409)).body.code).toBe('invalid_state');
    } finally {
      await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
    }
  });

  it('re-checks the over-refund guard on retry', async () => {
    const { id, paymentId } = await failedRefund('60');
    // Meanwhile the payment's room was used by another refund.
    const other = (await create({ provider: 'binance_pay', paymentId, amount: '50', currency: 'USDT' }).expect(202)).body.id;
    await until(other, ['succeeded']);
    const res = await svc.http().post(`/v1/refunds/${id}/retry`).set('Authorization', as(ops)).expect(422);
    expect(res.body).toMatchObject({ code: 'amount_exceeds_refundable', refundableAmount: '50' });
    expect((await get(id)).status).toBe('failed');
  });

  it('retries in bulk by provider and failure code, and lists by failure code', async () => {
    const a = await failedRefund('1');
    const b = await failedRefund('2');
    const listed = await svc.http().get('/v1/refunds').query({ status: 'failed', failureCode: '400304' }).set('Authorization', as(ops)).expect(200);
    expect(listed.body.data.map((r: { id: string }) => r.id)).toEqual(expect.arrayContaining([a.id, b.id]));
    await svc.http().post('/v1/refunds/retry').set('Authorization', as(m1)).send({}).expect(403);
    const res = await svc.http().post('/v1/refunds/retry').set('Authorization', as(ops)).send({ provider: 'binance_pay', failureCode: '400304', limit: 50 }).expect(202);
    expect(res.body.ids).toEqual(expect.arrayContaining([a.id, b.id]));
    expect(res.body.retried).toBe(res.body.ids.length);
    for (const id of [a.id, b.id]) expect((await until(id, ['succeeded', 'failed'])).status).toBe('succeeded');
  });
});

describe('answers about superseded submissions', () => {
  async function webhook(requestId: string, prepayId: string, bizStatus: string) {
    const merchant = await svc.app.get(SandboxCredentials).binancePayMerchant();
    const inner = JSON.stringify({ refundInfo: { refundRequestId: requestId, prepayId, refundAmount: '5.00000000', remainingAttempts: 8 } });
    const body = `{"bizType":"PAY_REFUND","bizId":1,"bizIdStr":"1","bizStatus":"${bizStatus}","data":${JSON.stringify(inner)}}`;
    const ts = String(Date.now());
    const nonce = randomBytes(16).toString('hex');
    return svc
      .http()
      .post('/webhooks/binance-pay')
      .set({
        'Content-Type': 'application/json',
        'BinancePay-Certificate-SN': binanceCertSerial(merchant.webhookPublicKeyPem),
        'BinancePay-Nonce': nonce,
        'BinancePay-Timestamp': ts,
        'BinancePay-Signature': signBinanceWebhook(merchant.webhookPrivateKeyPem, ts, nonce, body),
      })
      .send(body);
  }

  it('flags, never applies, a late success for an attempt an ops retry replaced; flagged refunds cannot be retried', async () => {
    const { id, paymentId } = await failedRefund('5');
    const { rows } = await svc.db.query(`SELECT provider_request_id FROM refunds WHERE id = $1`, [id]);
    const oldRequest = rows[0].provider_request_id;
    await setFaults(svc, 'binance-pay', { settleAfterMs: 600_000 });
    try {
      await svc.http().post(`/v1/refunds/${id}/retry`).set('Authorization', as(ops)).expect(202);
      await until(id, ['processing']);
      // The provider says the OLD submission paid after all.
      expect((await webhook(oldRequest, paymentId, 'REFUND_SUCCESS')).status).toBe(200);
      const r = await get(id);
      expect(r.status).toBe('processing');
      expect(r.review.reason).toMatch(/earlier submission/);
    } finally {
      await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
    }

    // A failed refund flagged for review is not retried, one by one or in bulk, until resolved.
    const fPayment = await sandboxPayment(svc, 'binance_pay', '100.00');
    await setFaults(svc, 'binance-pay', { refundFailRate: 1 });
    let f: { id: string };
    try {
      f = { id: (await create({ provider: 'binance_pay', paymentId: fPayment, amount: '6', currency: 'USDT' }).expect(202)).body.id };
      expect((await until(f.id, ['failed', 'succeeded'])).failureCode).toBe('REFUND_FAIL');
    } finally {
      await setFaults(svc, 'binance-pay', { refundFailRate: 0 });
    }
    const { rows: fr } = await svc.db.query(`SELECT provider_request_id FROM refunds WHERE id = $1`, [f.id]);
    await svc.db.query(`UPDATE sandbox.binance_refunds SET status = 'REFUND_SUCCESS' WHERE refund_request_id = $1`, [fr[0].provider_request_id]);
    await svc.http().post(`/v1/refunds/${f.id}/sync`).set('Authorization', as(ops)).expect(202);
    expect((await svc.http().post(`/v1/refunds/${f.id}/retry`).set('Authorization', as(ops)).expect(409)).body.code).toBe('invalid_state');
    const bulk = await svc.http().post('/v1/refunds/retry').set('Authorization', as(ops)).send({ failureCode: 'REFUND_FAIL' }).expect(202);
    expect(bulk.body.ids).not.toContain(f.id);
    await svc.http().post(`/v1/refunds/${f.id}/review/resolve`).set('Authorization', as(ops)).send({}).expect(400);
    const resolved = await svc.http().post(`/v1/refunds/${f.id}/review/resolve`).set('Authorization', as(ops)).send({ comment: 'checked with Binance' }).expect(200);
    expect(resolved.body.review).toBeNull();
  });

  it('asks the provider about the previous submission before a retry, and refuses to pay twice when it paid after all', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '100.00');
    await setFaults(svc, 'binance-pay', { refundFailRate: 1 });
    let id: string;
    try {
      id = (await create({ provider: 'binance_pay', paymentId, amount: '4', currency: 'USDT' }).expect(202)).body.id;
      expect((await until(id, ['failed', 'succeeded'])).failureCode).toBe('REFUND_FAIL');
    } finally {
      await setFaults(svc, 'binance-pay', { refundFailRate: 0 });
    }
    const { rows } = await svc.db.query(`SELECT provider_request_id FROM refunds WHERE id = $1`, [id]);
    // Binance changed its mind and nobody has told us yet (its webhook is still on the way).
    await svc.db.query(`UPDATE sandbox.binance_refunds SET status = 'REFUND_SUCCESS' WHERE refund_request_id = $1`, [rows[0].provider_request_id]);
    const res = await svc.http().post(`/v1/refunds/${id}/retry`).set('Authorization', as(ops)).expect(409);
    expect(res.body.code).toBe('invalid_state');
    const r = await get(id);
    expect(r.status).toBe('failed');
    expect(r.review.reason).toMatch(/previous submission .* succeeded/);
    const { rows: after } = await svc.db.query(`SELECT provider_request_id FROM refunds WHERE id = $1`, [id]);
    expect(after[0].provider_request_id).toBe(rows[0].provider_request_id);
  });

  it('holds a retried refund that takes Binance’s last slot until the others are final', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '100.00');
    await setFaults(svc, 'binance-pay', { refundFailRate: 1 });
    const r1 = (await create({ provider: 'binance_pay', paymentId, amount: '92', currency: 'USDT' }).expect(202)).body.id;
    expect((await until(r1, ['failed', 'succeeded'])).status).toBe('failed');
    await setFaults(svc, 'binance-pay', { refundFailRate: 0 });
    const ones = await Promise.all(
      Array.from({ length: 7 }, async () => (await create({ provider: 'binance_pay', paymentId, amount: '1', currency: 'USDT' }).expect(202)).body.id),
    );
    for (const id of ones) await until(id, ['succeeded']);
    // R9 is in flight and will fail, which will enlarge the remainder Binance's last refund takes.
    await setFaults(svc, 'binance-pay', { refundFailRate: 1, settleAfterMs: 2_000 });
    const r9 = (await create({ provider: 'binance_pay', paymentId, amount: '1', currency: 'USDT' }).expect(202)).body.id;
    await until(r9, ['processing']);
    await setFaults(svc, 'binance-pay', { refundFailRate: 0, settleAfterMs: 200 });
    await svc.http().post(`/v1/refunds/${r1}/retry`).set('Authorization', as(ops)).expect(202);
    const done = await until(r1, ['failed', 'succeeded']);
    expect(done).toMatchObject({ status: 'failed', failureCode: 'last_refund_amount_mismatch' });
    expect((await get(r9)).status).toBe('failed');
    const atProvider = (await svc.http().get('/sandbox/binance-pay/refunds').query({ prepayId: paymentId }).expect(200)).body.data;
    const paid = atProvider.filter((r: { status: string }) => r.status === 'REFUND_SUCCESS');
    expect(paid).toHaveLength(7);
  });

  it('answers 400 for a PATCH without a cobo block, and hides ops details from merchants', async () => {
    const { id } = await failedRefund('1');
    await svc.http().patch(`/v1/refunds/${id}`).set('Authorization', as(m1)).send({}).expect(400);
    await svc.http().post(`/v1/refunds/${id}/retry`).set('Authorization', as(ops)).send({ comment: 'internal note' }).expect(202);
    const events = (await svc.http().get(`/v1/refunds/${id}/events`).set('Authorization', as(m1)).expect(200)).body.data;
    const retry = events.find((e: { from: string; to: string }) => e.from === 'failed');
    expect(retry.detail).toEqual({ action: 'retry' });
    expect(retry.actor).toBe('ops');
  });
});

describe('approval policy', () => {
  it('holds refunds at or above the threshold for an ops approval by another key', async () => {
    await svc.http().put('/v1/merchants/M1001').set('Authorization', admin).send({ name: 'Shop', approvalThresholds: { USDT: '50' } }).expect(200);
    await svc.http().put('/v1/merchants/M1001').set('Authorization', as(ops)).send({ name: 'x' }).expect(403);
    await svc.http().put('/v1/merchants/M1001').set('Authorization', admin).send({ approvalThresholds: { USDT: '-1' } }).expect(400);
    const merchant = await svc.http().get('/v1/merchants/M1001').set('Authorization', admin).expect(200);
    expect(merchant.body).toMatchObject({ id: 'M1001', name: 'Shop', approvalThresholds: { USDT: '50' } });

    const paymentId = await sandboxPayment(svc, 'binance_pay', '200.00');
    const small = (await create({ provider: 'binance_pay', paymentId, amount: '49.99', currency: 'USDT' }).expect(202)).body;
    expect(small.status).toBe('queued');
    const held = (await create({ provider: 'binance_pay', paymentId, amount: '50', currency: 'USDT' }).expect(202)).body;
    expect(held.status).toBe('pending_approval');
    // Held refunds reserve their amount and are never sent.
    const payment = await svc.http().get(`/v1/payments/binance_pay/${paymentId}`).set('Authorization', as(m1)).expect(200);
    expect(payment.body.refundableAmount).toBe('100.01');

    // The creating (merchant) key cannot approve its own refund.
    expect((await svc.http().post(`/v1/refunds/${held.id}/approve`).set('Authorization', as(m1)).expect(403)).body.code).toBe('forbidden');
    const approved = await svc.http().post(`/v1/refunds/${held.id}/approve`).set('Authorization', as(ops)).send({ comment: 'checked' }).expect(200);
    expect(approved.body.status).toBe('queued');
    expect((await until(held.id, ['succeeded', 'failed'])).status).toBe('succeeded');
    const events = (await svc.http().get(`/v1/refunds/${held.id}/events`).set('Authorization', as(ops)).expect(200)).body.data;
    expect(events.map((e: { to: string }) => e.to)).toEqual(['pending_approval', 'queued', 'processing', 'succeeded']);
    expect(events[1].detail).toMatchObject({ action: 'approve', comment: 'checked' });

    const rejected = (await create({ provider: 'binance_pay', paymentId, amount: '60', currency: 'USDT' }).expect(202)).body;
    const res = await svc.http().post(`/v1/refunds/${rejected.id}/reject`).set('Authorization', as(ops)).send({ comment: 'suspicious' }).expect(200);
    expect(res.body.status).toBe('canceled');
    const after = await svc.http().get(`/v1/payments/binance_pay/${paymentId}`).set('Authorization', as(m1)).expect(200);
    expect(after.body).toMatchObject({ reservedAmount: '0', refundableAmount: '100.01' });
    await svc.http().post(`/v1/refunds/${rejected.id}/approve`).set('Authorization', as(ops)).expect(409);
    await svc.http().put('/v1/merchants/M1001').set('Authorization', admin).send({ name: 'Shop' }).expect(200);
  });
});

describe('stuck refunds and sync', () => {
  it('lists a refund kept pending past the horizon as stuck until the provider settles it', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    await setFaults(svc, 'binance-pay', { settleAfterMs: 4_000 });
    let id: string;
    try {
      id = (await create({ provider: 'binance_pay', paymentId, amount: '1', currency: 'USDT' }).expect(202)).body.id;
      await waitFor(async () => {
        const res = await svc.http().get('/v1/refunds').query({ status: 'processing', stuck: 'true' }).set('Authorization', as(ops)).expect(200);
        return res.body.data.some((r: { id: string }) => r.id === id);
      }, 10_000, 'refund listed as stuck');
    } finally {
      await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
    }
    await svc.http().post(`/v1/refunds/${id!}/sync`).set('Authorization', as(ops)).expect(202);
    expect((await until(id!, ['succeeded', 'failed'])).status).toBe('succeeded');
    const res = await svc.http().get('/v1/refunds').query({ status: 'processing', stuck: 'true' }).set('Authorization', as(ops)).expect(200);
    expect(res.body.data.some((r: { id: string }) => r.id === id!)).toBe(false);
  });

  it('flags a final refund the provider contradicts, and never overwrites it', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    const id = (await create({ provider: 'binance_pay', paymentId, amount: '3', currency: 'USDT' }).expect(202)).body.id;
    const done = await until(id, ['succeeded']);
    const { rows } = await svc.db.query(`SELECT provider_request_id FROM refunds WHERE id = $1`, [id]);
    // The provider's own record changes behind our back.
    await svc.db.query(`UPDATE sandbox.binance_refunds SET status = 'REFUND_FAIL' WHERE refund_request_id = $1`, [rows[0].provider_request_id]);
    await svc.http().post(`/v1/refunds/${id}/sync`).set('Authorization', as(m1)).expect(403);
    const synced = await svc.http().post(`/v1/refunds/${id}/sync`).set('Authorization', as(ops)).expect(202);
    expect(synced.body).toMatchObject({ status: 'succeeded', refundedAmount: '3' });
    expect(synced.body.review.reason).toMatch(/failed/);
    const flagged = await svc.http().get('/v1/refunds').query({ review: 'true' }).set('Authorization', as(ops)).expect(200);
    expect(flagged.body.data.map((r: { id: string }) => r.id)).toContain(id);
    expect(done.review).toBeNull();
    const { rows: audit } = await svc.db.query(`SELECT actor, action FROM audit_events WHERE subject = $1`, [id]);
    expect(audit.map((a) => a.action)).toContain('sync');
  });
});

describe('audit', () => {
  it('records key creation and keeps event rows immutable', async () => {
    const res = await svc.http().post('/v1/api-keys').set('Authorization', admin).send({ role: 'finance', name: 'audit check' }).expect(201);
    const { rows } = await svc.db.query(`SELECT actor, action FROM audit_events WHERE subject = $1`, [res.body.id]);
    expect(rows).toEqual([{ actor: 'api_key:bootstrap-admin', action: 'api_key.create' }]);
    await expect(svc.db.query(`UPDATE refund_events SET actor = 'someone else'`)).rejects.toThrow(/immutable/);
    await expect(svc.db.query(`DELETE FROM audit_events`)).rejects.toThrow(/immutable/);
  });
});
