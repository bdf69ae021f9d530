import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signCoboResponse } from '../src/providers/cobo/cobo.signing.js';
import { SandboxCredentials } from '../src/sandbox/sandbox-credentials.js';
import { merchantKey, roleKey, setFaults, startService, TestService, waitFor } from './support/service.js';

let svc: TestService;
let m1: string;
let m2: string;
let ops: string;

beforeAll(async () => {
  svc = await startService('cobo');
  m1 = await merchantKey(svc, 'M1001');
  m2 = await merchantKey(svc, 'M2002');
  ops = await roleKey(svc, 'ops');
  await setFaults(svc, 'cobo', { processAfterMs: 100, settleAfterMs: 200 });
});

afterAll(async () => {
  await svc?.stop();
});

async function coboPayment(amount: string, opts: { currency?: string; merchantId?: string; tokenId?: string } = {}) {
  const res = await svc
    .http()
    .post('/sandbox/payments')
    .send({ provider: 'cobo', amount, currency: opts.currency ?? 'USDT', ...(opts.merchantId ? { merchantId: opts.merchantId } : {}), ...(opts.tokenId ? { tokenId: opts.tokenId } : {}) })
    .expect(201);
  return res.body.paymentId as string;
}

function create(key: string, body: Record<string, unknown>) {
  return svc.http().post('/v1/refunds').set('Authorization', `Bearer ${key}`).set('Idempotency-Key', randomUUID()).send(body);
}

function coboBody(paymentId: string, amount: string, cobo: Record<string, unknown>) {
  return { provider: 'cobo', paymentId, amount, currency: 'USDT', cobo: { tokenId: 'TRON_USDT', ...cobo } };
}

async function get(key: string, id: string) {
  return (await svc.http().get(`/v1/refunds/${id}`).set('Authorization', `Bearer ${key}`).expect(200)).body;
}

async function until(key: string, id: string, statuses: string[]) {
  return waitFor(async () => {
    const r = await get(key, id);
    return statuses.includes(r.status) ? r : undefined;
  }, 30_000, `refund ${id} in ${statuses.join('/')}`);
}

async function providerRefunds(orderId: string): Promise<Array<Record<string, unknown>>> {
  return (await svc.http().get('/sandbox/cobo/refunds').query({ order_id: orderId }).expect(200)).body.data;
}

describe('Cobo refunds end to end', () => {
  it('takes a refund with an address to succeeded, with its transactions and fee visible', async () => {
    const paymentId = await coboPayment('100.00');
    const res = await create(m1, coboBody(paymentId, '12.50', { toAddress: 'TXaddr1', merchantFee: { amount: '0.10', tokenId: 'TRON_USDT' } })).expect(202);
    const done = await until(m1, res.body.id, ['succeeded', 'failed']);
    expect(done).toMatchObject({ status: 'succeeded', refundedAmount: '12.5', providerStatus: 'Completed' });
    expect(done.providerDetails).toMatchObject({
      tokenId: 'TRON_USDT',
      chainId: 'TRON',
      toAddress: 'TXaddr1',
      refundType: 'merchant',
      merchantFee: { amount: '0.1', tokenId: 'TRON_USDT' },
    });
    expect(done.providerDetails.transactions.length).toBeGreaterThan(0);
    expect(done.providerDetails.transactions[0]).toMatchObject({ status: 'Completed', amount: '12.5' });
    expect(done.providerRefundId).toBeTruthy();
    const atProvider = await providerRefunds(paymentId);
    expect(atProvider).toHaveLength(1);
    expect(atProvider[0]).toMatchObject({ charge_merchant_fee: true, refund_type: 'Merchant', payable_amount: expect.anything() });
  });

  it('waits in requires_action without an address and completes after PATCH', async () => {
    const paymentId = await coboPayment('50.00');
    const res = await create(m1, coboBody(paymentId, '20', {})).expect(202);
    const waiting = await until(m1, res.body.id, ['requires_action']);
    expect(waiting.providerStatus).toBe('PendingConfirmation');

    // Only the owner, only with a valid body.
    await svc.http().patch(`/v1/refunds/${res.body.id}`).set('Authorization', `Bearer ${m2}`).send({ cobo: { toAddress: 'TXother' } }).expect(404);
    await svc.http().patch(`/v1/refunds/${res.body.id}`).set('Authorization', `Bearer ${m1}`).send({ cobo: {} }).expect(400);
    const patched = await svc.http().patch(`/v1/refunds/${res.body.id}`).set('Authorization', `Bearer ${m1}`).send({ cobo: { toAddress: 'TXlater' } }).expect(200);
    expect(patched.body.status).toBe('processing');
    const done = await until(m1, res.body.id, ['succeeded', 'failed']);
    expect(done.status).toBe('succeeded');
    expect(done.providerDetails.toAddress).toBe('TXlater');
    // Too late to change now.
    const late = await svc.http().patch(`/v1/refunds/${res.body.id}`).set('Authorization', `Bearer ${m1}`).send({ cobo: { toAddress: 'TXx' } }).expect(409);
    expect(late.body.code).toBe('invalid_state');
  });

  it('cancels a waiting refund at Cobo too, and refuses to cancel a finished one', async () => {
    const paymentId = await coboPayment('30.00');
    const res = await create(m1, coboBody(paymentId, '30', {})).expect(202);
    await until(m1, res.body.id, ['requires_action']);
    const canceled = await svc.http().post(`/v1/refunds/${res.body.id}/cancel`).set('Authorization', `Bearer ${ops}`).expect(200);
    expect(canceled.body.status).toBe('canceled');
    const atProvider = await providerRefunds(paymentId);
    expect(atProvider).toHaveLength(1);
    expect(atProvider[0].status).not.toBe('Pending');
    // The whole amount is refundable again.
    const again = await create(m1, coboBody(paymentId, '30', { toAddress: 'TXok' })).expect(202);
    await until(m1, again.body.id, ['succeeded']);
    const refused = await svc.http().post(`/v1/refunds/${again.body.id}/cancel`).set('Authorization', `Bearer ${m1}`).expect(409);
    expect(refused.body.code).toBe('invalid_state');
  });

  it('ends partially_succeeded with the completed part refunded and the rest refundable again', async () => {
    const paymentId = await coboPayment('40.00');
    const res = await create(m1, coboBody(paymentId, '40', { toAddress: 'PARTIAL-addr' })).expect(202);
    const done = await until(m1, res.body.id, ['partially_succeeded', 'succeeded', 'failed']);
    expect(done.status).toBe('partially_succeeded');
    const refunded = Number(done.refundedAmount);
    expect(refunded).toBeGreaterThan(0);
    expect(refunded).toBeLessThan(40);
    const payment = await svc.http().get(`/v1/payments/cobo/${paymentId}`).set('Authorization', `Bearer ${m1}`).expect(200);
    expect(payment.body.refundedAmount).toBe(done.refundedAmount);
    expect(Number(payment.body.refundableAmount) + refunded).toBe(40);
    // The unpaid part can be refunded again.
    await create(m1, coboBody(paymentId, payment.body.refundableAmount, { toAddress: 'TXrest' })).expect(202);
  });

  it('does not trust unsigned or badly signed answers, and recovers by request_id', async () => {
    const paymentId = await coboPayment('10.00');
    const first = await create(m1, coboBody(paymentId, '1', { toAddress: 'TXa' })).expect(202);
    await until(m1, first.body.id, ['succeeded']);
    for (const fault of ['unsignedResponseRate', 'badSignatureRate']) {
      // Cobo's webhooks are held back too: a webhook arriving before the second poll would make
      // the refund final with one attempt (a race CI lost once), and the recovery under test is
      // the lookup by request_id.
      await setFaults(svc, 'cobo', { [fault]: 1, dropWebhookRate: 1 });
      let id: string;
      try {
        id = (await create(m1, coboBody(paymentId, '1', { toAddress: 'TXb' })).expect(202)).body.id;
        await waitFor(async () => {
          const { rows } = await svc.db.query(`SELECT outcome FROM refund_attempts WHERE refund_id = $1 ORDER BY number`, [id]);
          return rows.length >= 2 && rows.every((r) => r.outcome === 'unknown');
        }, 15_000, `${fault}: unknown outcomes`);
        expect((await get(m1, id)).status).toBe('processing');
      } finally {
        await setFaults(svc, 'cobo', { [fault]: 0, dropWebhookRate: 0 });
      }
      expect((await until(m1, id!, ['succeeded', 'failed'])).status).toBe('succeeded');
    }
    // One refund at Cobo per refund of ours, despite the untrusted answers.
    expect(await providerRefunds(paymentId)).toHaveLength(3);
  });

  it('recovers a lost create response through the request_id lookup, with one refund at Cobo', async () => {
    const paymentId = await coboPayment('10.00');
    await create(m1, coboBody(paymentId, '1', { toAddress: 'TXa' })).expect(202);
    await setFaults(svc, 'cobo', { timeoutAfterCommitRate: 1 });
    let id: string;
    try {
      id = (await create(m1, coboBody(paymentId, '9', { toAddress: 'TXb' })).expect(202)).body.id;
      await waitFor(async () => (await providerRefunds(paymentId)).length === 2, 15_000, 'refund at Cobo');
    } finally {
      await setFaults(svc, 'cobo', { timeoutAfterCommitRate: 0 });
    }
    const done = await until(m1, id!, ['succeeded', 'failed']);
    expect(done.status).toBe('succeeded');
    expect(await providerRefunds(paymentId)).toHaveLength(2);
    const attempts = await svc.http().get(`/v1/refunds/${id!}/attempts`).set('Authorization', `Bearer ${m1}`).expect(200);
    expect(attempts.body.data[0]).toMatchObject({ operation: 'create', outcome: 'unknown' });
    expect(new Set(attempts.body.data.map((a: { providerRequestId: string }) => a.providerRequestId)).size).toBe(1);
  });
});

describe('Cobo answers that arrive late or not at all', () => {
  it('ignores a late "waiting for an address" webhook after PATCH', async () => {
    const paymentId = await coboPayment('20.00');
    const res = await create(m1, coboBody(paymentId, '20', {})).expect(202);
    const waiting = await until(m1, res.body.id, ['requires_action']);
    // Cobo's genuine PendingConfirmation notification, as it would be retried later.
    const emu = await svc.app.get(SandboxCredentials).coboEmulator();
    const body = JSON.stringify({
      event_id: randomUUID(),
      type: 'payment.refund.status.updated',
      created_timestamp: Date.now(),
      data: { data_type: 'PaymentRefund', refund_id: waiting.providerRefundId, status: 'PendingConfirmation', amount: '20', token_id: 'TRON_USDT', to_address: '', transactions: [] },
    });
    const ts = String(Date.now());
    const headers = { 'Content-Type': 'application/json', 'Biz-Timestamp': ts, 'Biz-Resp-Signature': signCoboResponse(emu.emulatorSeed, body, ts) };
    await svc.http().patch(`/v1/refunds/${res.body.id}`).set('Authorization', `Bearer ${m1}`).send({ cobo: { toAddress: 'TXlate' } }).expect(200);
    await svc.http().post('/webhooks/cobo').set(headers).send(body).expect(200);
    expect((await get(m1, res.body.id)).status).not.toBe('requires_action');
    expect((await until(m1, res.body.id, ['succeeded', 'failed', 'requires_action'])).status).toBe('succeeded');
  });

  it('finishes a refund whose PATCH answer was lost (the address reached Cobo)', async () => {
    const paymentId = await coboPayment('20.00');
    await create(m1, coboBody(paymentId, '1', { toAddress: 'TXa' })).expect(202);
    const res = await create(m1, coboBody(paymentId, '19', {})).expect(202);
    await until(m1, res.body.id, ['requires_action']);
    await setFaults(svc, 'cobo', { timeoutAfterCommitRate: 1 });
    try {
      const patched = await svc.http().patch(`/v1/refunds/${res.body.id}`).set('Authorization', `Bearer ${m1}`).send({ cobo: { toAddress: 'TXlost' } });
      expect(patched.status).toBe(503);
    } finally {
      await setFaults(svc, 'cobo', { timeoutAfterCommitRate: 0 });
    }
    // The slow poll of requires_action sees Cobo moved on and follows it to the end.
    const done = await until(m1, res.body.id, ['succeeded', 'failed']);
    expect(done.status).toBe('succeeded');
    expect(done.providerDetails.toAddress).toBe('TXlost');
  });

  it('ends canceled when the cancel reached Cobo but its answer was lost', async () => {
    const paymentId = await coboPayment('20.00');
    await create(m1, coboBody(paymentId, '1', { toAddress: 'TXa' })).expect(202);
    const res = await create(m1, coboBody(paymentId, '19', {})).expect(202);
    await until(m1, res.body.id, ['requires_action']);
    await setFaults(svc, 'cobo', { timeoutAfterCommitRate: 1 });
    try {
      expect((await svc.http().post(`/v1/refunds/${res.body.id}/cancel`).set('Authorization', `Bearer ${m1}`)).status).toBe(503);
    } finally {
      await setFaults(svc, 'cobo', { timeoutAfterCommitRate: 0 });
    }
    expect((await until(m1, res.body.id, ['canceled', 'failed', 'succeeded'])).status).toBe('canceled');
    const payment = await svc.http().get(`/v1/payments/cobo/${paymentId}`).set('Authorization', `Bearer ${m1}`).expect(200);
    expect(payment.body.refundableAmount).toBe('19');
  });
});

describe('Cobo input rules', () => {
  it('rejects bad token and fee input with field-level messages and persists nothing', async () => {
    const paymentId = await coboPayment('10.00');
    const { rows: before } = await svc.db.query(`SELECT (SELECT count(*) FROM refunds)::int AS r, (SELECT count(*) FROM payments)::int AS p`);
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ provider: 'cobo', paymentId, amount: '1', currency: 'USDT' }, 'cobo.tokenId'],
      [coboBody(paymentId, '1', { tokenId: 'DOGE_COIN' }), 'cobo.tokenId'],
      [{ ...coboBody(paymentId, '1', {}), currency: 'USDC' }, 'currency'],
      [coboBody(paymentId, '1.005', {}), 'amount'],
      [coboBody(paymentId, '1', { refundType: 'psp', merchantFee: { amount: '0.1', tokenId: 'TRON_USDT' } }), 'cobo.merchantFee'],
      [coboBody(paymentId, '1', { merchantFee: { amount: '0.1', tokenId: 'ETH_USDT' } }), 'cobo.merchantFee.tokenId'],
      [coboBody(paymentId, '1', { merchantFee: { amount: '1', tokenId: 'TRON_USDT' } }), 'cobo.merchantFee.amount'],
      [coboBody(paymentId, '2', { merchantFee: { amount: '0.001', tokenId: 'TRON_USDT' } }), 'cobo.merchantFee.amount'],
      [coboBody(paymentId, '1', { refundType: 'both' }), 'cobo.refundType'],
      [coboBody(paymentId, '1', { surprise: 1 }), 'cobo.surprise'],
      [{ ...coboBody(paymentId, '1', {}), lean: { reasonCode: 'CUSTOMER_REQUEST' } }, 'lean'],
    ];
    for (const [body, field] of cases) {
      const res = await create(m1, body);
      expect({ field, status: res.status, code: res.body.code }).toEqual({ field, status: 400, code: 'validation_failed' });
      expect(res.body.errors.map((e: { field: string }) => e.field)).toContain(field);
    }
    const { rows: after } = await svc.db.query(`SELECT (SELECT count(*) FROM refunds)::int AS r, (SELECT count(*) FROM payments)::int AS p`);
    expect(after).toEqual(before);
  });

  it('refuses a token other than the payment’s, and a payment Cobo attributes to another merchant', async () => {
    const paymentId = await coboPayment('10.00');
    const wrongToken = await create(m1, { ...coboBody(paymentId, '1', { tokenId: 'ETH_USDT', toAddress: 'x' }) }).expect(422);
    expect(wrongToken.body.code).toBe('currency_mismatch');
    const foreign = await coboPayment('10.00', { merchantId: 'M2002' });
    const res = await create(m1, coboBody(foreign, '1', { toAddress: 'x' })).expect(404);
    expect(res.body.code).toBe('payment_not_found');
    await create(m2, coboBody(foreign, '1', { toAddress: 'x' })).expect(202);
  });
});

describe('Cobo webhooks', () => {
  it('waits out Cobo’s Retry-After on 429 before asking again, then finishes with one refund at Cobo', async () => {
    const paymentId = await coboPayment('10.00');
    // The first refund caches the payment (the create itself asks Cobo nothing afterwards).
    await until(m1, (await create(m1, coboBody(paymentId, '1', { toAddress: 'TXra1' })).expect(202)).body.id, ['succeeded']);
    await setFaults(svc, 'cobo', { rateLimitRate: 1, rateLimitRetryAfterSeconds: 2 });
    let id: string;
    try {
      id = (await create(m1, coboBody(paymentId, '2', { toAddress: 'TXra2' })).expect(202)).body.id;
      await waitFor(async () => {
        const { rows } = await svc.db.query(`SELECT count(*)::int AS n FROM refund_attempts WHERE refund_id = $1 AND outcome = 'retry'`, [id]);
        return rows[0].n >= 2;
      }, 15_000, 'two rate-limited calls');
    } finally {
      await setFaults(svc, 'cobo', { rateLimitRate: 0, rateLimitRetryAfterSeconds: 1 });
    }
    expect((await until(m1, id!, ['succeeded', 'failed'])).status).toBe('succeeded');
    const { rows: calls } = await svc.db.query(
      `SELECT outcome, created_at, completed_at FROM refund_attempts WHERE refund_id = $1 ORDER BY number`,
      [id!],
    );
    // Polls start 100 ms apart in these tests; after a 429 the next call waits the 2 s Cobo asked
    // for. A step may be claimed up to 50 ms early, and a query's row is written by its claim.
    for (let i = 1; i < calls.length; i++) {
      if (calls[i - 1].outcome !== 'retry') continue;
      expect(calls[i].created_at.getTime() - calls[i - 1].completed_at.getTime()).toBeGreaterThanOrEqual(1_900);
    }
    expect((await providerRefunds(paymentId)).filter((r) => r.to_address === 'TXra2')).toHaveLength(1);
  });

  it('ignores a late "Pending" webhook once Cobo said "Processing" (reordered webhooks never go backwards)', async () => {
    const paymentId = await coboPayment('10.00');
    await setFaults(svc, 'cobo', { processAfterMs: 0, settleAfterMs: 600_000 });
    try {
      const res = await create(m1, coboBody(paymentId, '3', { toAddress: 'TXlate2' })).expect(202);
      const processing = await waitFor(async () => {
        const r = await get(m1, res.body.id);
        return r.providerStatus === 'Processing' ? r : undefined;
      }, 15_000, 'Cobo Processing');
      const { rows } = await svc.db.query(`SELECT provider_request_id FROM refunds WHERE id = $1`, [res.body.id]);
      const emu = await svc.app.get(SandboxCredentials).coboEmulator();
      const body = JSON.stringify({
        event_id: randomUUID(),
        type: 'payment.refund.status.updated',
        created_timestamp: Date.now() - 2_000,
        data: { data_type: 'PaymentRefund', refund_id: processing.providerRefundId, request_id: rows[0].provider_request_id, status: 'Pending', amount: '3', token_id: 'TRON_USDT', to_address: 'TXlate2', transactions: [] },
      });
      const ts = String(Date.now());
      const headers = { 'Content-Type': 'application/json', 'Biz-Timestamp': ts, 'Biz-Resp-Signature': signCoboResponse(emu.emulatorSeed, body, ts) };
      // Read at once (polls would restore a regression within half a second), a few times over.
      for (let i = 0; i < 3; i++) {
        await svc.http().post('/webhooks/cobo').set(headers).send(body).expect(200);
        const { rows: now } = await svc.db.query(`SELECT status, provider_status FROM refunds WHERE id = $1`, [res.body.id]);
        expect(now[0]).toEqual({ status: 'processing', provider_status: 'Processing' });
      }
      expect((await get(m1, res.body.id)).providerDetails.transactions).toEqual(processing.providerDetails.transactions);
    } finally {
      await setFaults(svc, 'cobo', { processAfterMs: 100, settleAfterMs: 200 });
    }
  });

  it('refuses forged webhooks with 401 and changes nothing', async () => {
    const paymentId = await coboPayment('10.00');
    await setFaults(svc, 'cobo', { settleAfterMs: 600_000 });
    try {
      const res = await create(m1, coboBody(paymentId, '5', { toAddress: 'TXw' })).expect(202);
      await until(m1, res.body.id, ['processing']);
      const { rows } = await svc.db.query(`SELECT provider_request_id, provider_refund_id FROM refunds WHERE id = $1`, [res.body.id]);
      const body = JSON.stringify({
        event_id: randomUUID(),
        type: 'payment.refund.status.updated',
        created_timestamp: Date.now(),
        data: { data_type: 'PaymentRefund', refund_id: rows[0].provider_refund_id, request_id: rows[0].provider_request_id, status: 'Completed', amount: '5', token_id: 'TRON_USDT', transactions: [] },
      });
      const ts = String(Date.now());
      // Signed with a key that is not Cobo's.
      const forgedSig = signCoboResponse('11'.repeat(32), body, ts);
      await svc.http().post('/webhooks/cobo').set({ 'Content-Type': 'application/json', 'Biz-Timestamp': ts, 'Biz-Resp-Signature': forgedSig }).send(body).expect(401);
      await svc.http().post('/webhooks/cobo').set({ 'Content-Type': 'application/json' }).send(body).expect(401);
      // Cobo's real key over a different body.
      const emu = await svc.app.get(SandboxCredentials).coboEmulator();
      const realSig = signCoboResponse(emu.emulatorSeed, body, ts);
      await svc.http().post('/webhooks/cobo').set({ 'Content-Type': 'application/json', 'Biz-Timestamp': ts, 'Biz-Resp-Signature': realSig }).send(body.replace('"5"', '"4"')).expect(401);
      expect((await get(m1, res.body.id)).status).toBe('processing');
      // Genuine, but replayed long after (or dated ahead): refused for its signed Biz-Timestamp.
      for (const at of [Date.now() - 6 * 60_000, Date.now() + 6 * 60_000]) {
        const old = String(at);
        const replay = await svc
          .http()
          .post('/webhooks/cobo')
          .set({ 'Content-Type': 'application/json', 'Biz-Timestamp': old, 'Biz-Resp-Signature': signCoboResponse(emu.emulatorSeed, body, old) })
          .send(body)
          .expect(401);
        expect(replay.body).toMatchObject({ code: 'unauthorized', reason: 'webhook_timestamp_out_of_window' });
      }
      expect((await get(m1, res.body.id)).status).toBe('processing');
      // The genuine one is applied; the same again within the window changes nothing.
      await svc.http().post('/webhooks/cobo').set({ 'Content-Type': 'application/json', 'Biz-Timestamp': ts, 'Biz-Resp-Signature': realSig }).send(body).expect(200);
      const { rows: n } = await svc.db.query(`SELECT count(*)::int AS n FROM refund_events WHERE refund_id = $1`, [res.body.id]);
      await svc.http().post('/webhooks/cobo').set({ 'Content-Type': 'application/json', 'Biz-Timestamp': ts, 'Biz-Resp-Signature': realSig }).send(body).expect(200);
      const { rows: again } = await svc.db.query(`SELECT count(*)::int AS n FROM refund_events WHERE refund_id = $1`, [res.body.id]);
      expect(again[0].n).toBe(n[0].n);
      expect((await get(m1, res.body.id)).status).toBe('succeeded');
    } finally {
      await setFaults(svc, 'cobo', { settleAfterMs: 200 });
    }
  });
});
