import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { merchantKey, roleKey, sandboxPayment, setFaults, startPeer, startService, TestService, waitFor } from './support/service.js';
import { batchCounts, metricSum, scrapeAll } from './support/metrics.js';

// The over-refund guard across processes. Creates take an optimistic path (a snapshot read,
// then an insert conditional on the payment's guard version) and fall back to the payment
// row lock; ops retries take the lock and move the guard version. Within one process the
// per-payment gate serialises creates, so these races need two api processes: here the
// service (ROLE=all) and a peer (ROLE=api) on the same database, each with its own gate.

let svc: TestService;
let peer: Awaited<ReturnType<typeof startPeer>>;
let merchant: string;
let ops: string;

// These tests send ~800 creates with one merchant key within a minute, more than the default
// rate limit (600 a minute) lets through; the limiter stays in the path with room to spare.
const ENV = { RATE_LIMIT_PER_MINUTE: '100000' };

beforeAll(async () => {
  svc = await startService('guard', ENV);
  peer = await startPeer(svc, ENV);
  merchant = await merchantKey(svc, 'M1001');
  ops = await roleKey(svc, 'ops');
  await setFaults(svc, 'binance-pay', { settleAfterMs: 100 });
});

afterAll(async () => {
  await peer?.stop();
  await svc?.stop();
});

const processes = () => [svc.http, peer.http];

function create(via: number, body: Record<string, unknown>) {
  return processes()
    [via % 2]()
    .post('/v1/refunds')
    .set('Authorization', `Bearer ${merchant}`)
    .set('Idempotency-Key', randomUUID())
    .send(body);
}

async function optimisticRetries(): Promise<number> {
  return metricSum(await scrapeAll(processes()), 'refund_create_optimistic_retries_total');
}

async function refund(id: string) {
  return (await svc.http().get(`/v1/refunds/${id}`).set('Authorization', `Bearer ${ops}`).expect(200)).body;
}

describe('over-refund guard across two api processes', () => {
  it('accepts exactly what fits when creates on the same payments race through both processes', async () => {
    // 40 creates of 7.00 on each 100.00 payment, alternating between the processes, all at
    // once: exactly 14 fit (98.00), whatever the interleaving; a 15th would over-refund.
    const cases = [
      ...(await Promise.all([1, 2, 3].map(() => sandboxPayment(svc, 'lean', '100.00', 'AED')))).map((p) => ({ provider: 'lean', paymentId: p, currency: 'AED' })),
      ...(await Promise.all([1, 2, 3].map(() => sandboxPayment(svc, 'cobo', '100.00', 'USDT')))).map((p) => ({
        provider: 'cobo',
        paymentId: p,
        currency: 'USDT',
        cobo: { tokenId: 'TRON_USDT', toAddress: 'TXaddr1' },
      })),
    ];
    // The first create of a payment looks it up at the provider (the locked path); after
    // that, creates are optimistic.
    for (const c of cases) await create(0, { ...c, amount: '2.00' }).expect(202);
    const before = await optimisticRetries();

    const results = await Promise.all(
      cases.flatMap((c) => Array.from({ length: 40 }, (_, i) => create(i, { ...c, amount: '7.00' }).then((r) => ({ c, r })))),
    );
    for (const c of cases) {
      const mine = results.filter((x) => x.c === c).map((x) => x.r);
      const accepted = mine.filter((r) => r.status === 202);
      const refused = mine.filter((r) => r.status === 422);
      expect(refused.map((r) => r.body.code)).toEqual(refused.map(() => 'amount_exceeds_refundable'));
      // 98.00 left after the 2.00: exactly 14 of 7.00, none refused that would have fitted.
      expect(accepted).toHaveLength(14);
      expect(refused).toHaveLength(26);
      const { rows } = await svc.db.query(
        `SELECT sum(amount)::text AS total, count(*)::int AS n FROM refunds WHERE provider = $1 AND payment_id = $2`,
        [c.provider, c.paymentId],
      );
      expect(rows[0]).toEqual({ total: '100.000000000000000000', n: 15 });
    }
    // The race was real: some creates found the payment changed by the other process after
    // their snapshot, and looked again (or took the lock).
    expect((await optimisticRetries()) - before).toBeGreaterThan(0);
  });

  it('lets only one of an ops retry and a create racing on another process take what is left', async () => {
    // Per payment of 100.00: a failed refund of 60.00; then, at once, ops retry it through one
    // process and create another 60.00 through the other. Only one of the two fits.
    const payments = await Promise.all(Array.from({ length: 6 }, () => sandboxPayment(svc, 'binance_pay', '100.00')));
    await setFaults(svc, 'binance-pay', { insufficientBalance: true });
    let failed: string[];
    try {
      failed = await Promise.all(
        payments.map(async (paymentId) => {
          const id = (await create(0, { provider: 'binance_pay', paymentId, amount: '60.00', currency: 'USDT' }).expect(202)).body.id;
          const done = await waitFor(async () => {
            const r = await refund(id);
            return ['failed', 'succeeded'].includes(r.status) ? r : undefined;
          }, 30_000, `refund ${id} final`);
          expect(done.status).toBe('failed');
          return id as string;
        }),
      );
    } finally {
      await setFaults(svc, 'binance-pay', { insufficientBalance: false });
    }

    const races = await Promise.all(
      payments.map(async (paymentId, i) => {
        const [retry, created] = await Promise.all([
          processes()[i % 2]().post(`/v1/refunds/${failed[i]}/retry`).set('Authorization', `Bearer ${ops}`).send({}),
          create(i + 1, { provider: 'binance_pay', paymentId, amount: '60.00', currency: 'USDT' }),
        ]);
        return { paymentId, retry, created };
      }),
    );
    for (const { paymentId, retry, created } of races) {
      const wins = [retry.status === 200 || retry.status === 202, created.status === 202].filter(Boolean).length;
      expect(wins, `retry ${retry.status} ${JSON.stringify(retry.body)}, create ${created.status} ${JSON.stringify(created.body)}`).toBe(1);
      if (created.status !== 202) expect(created.body.code).toBe('amount_exceeds_refundable');
      else expect(retry.body.code).toBe('amount_exceeds_refundable');
      const { rows } = await svc.db.query(
        `SELECT COALESCE(sum(amount), 0)::text AS spoken_for FROM refunds
          WHERE provider = 'binance_pay' AND payment_id = $1 AND status NOT IN ('failed', 'canceled')`,
        [paymentId],
      );
      expect(rows[0].spoken_for).toBe('60.000000000000000000');
    }
  });

  it('moves the guard version for refunds written by code that knows nothing of it (a previous release, mid-deploy)', async () => {
    // The database moves the version (triggers on refunds), so a create or retry by a process
    // still running the previous release, which only locks the payment, is noticed too.
    const paymentId = await sandboxPayment(svc, 'lean', '100.00', 'AED');
    await create(0, { provider: 'lean', paymentId, currency: 'AED', amount: '1.00' }).expect(202);
    const version = async () =>
      Number((await svc.db.query(`SELECT guard_version FROM payments WHERE provider = 'lean' AND payment_id = $1`, [paymentId])).rows[0].guard_version);
    const v0 = await version();
    // The previous release's create: lock, then a plain INSERT of the refund.
    const { rows } = await svc.db.query(
      `INSERT INTO refunds (id, merchant_id, provider, payment_id, amount, currency, status, reason, idempotency_key, request_hash,
                            next_check_at, completed_at)
       VALUES (gen_random_uuid(), 'M1001', 'lean', $1, 5, 'AED', 'failed', 'requested_by_customer', gen_random_uuid()::text, 'h', NULL, now())
       RETURNING id`,
      [paymentId],
    );
    expect(await version()).toBe(v0 + 1);
    // Its ops retry: failed back to queued.
    await svc.db.query(`UPDATE refunds SET status = 'queued', next_check_at = 'infinity', completed_at = NULL WHERE id = $1`, [rows[0].id]);
    expect(await version()).toBe(v0 + 2);
    // Changes that only move money from reserved to refunded, or free it, leave it alone.
    await svc.db.query(`UPDATE refunds SET status = 'canceled', next_check_at = NULL, completed_at = now() WHERE id = $1`, [rows[0].id]);
    expect(await version()).toBe(v0 + 2);
  });
});


/** Batches of guarded inserts sent by both processes so far: all of them, and those of more than one create. */
async function insertBatches(): Promise<{ all: number; multi: number }> {
  return batchCounts(await scrapeAll(processes()), 'refund_create_batch_size', { statement: 'insert' });
}

/** Batched insert statements that Postgres refused and whose creates were retried one by one, both processes. */
async function insertSplits(): Promise<number> {
  return metricSum(await scrapeAll(processes()), 'refund_create_batch_splits_total', { statement: 'insert' });
}

describe('creates batched at the database', () => {
  it('sends concurrent creates as batches, and every batch keeps the over-refund guard', async () => {
    // 24 payments of 100.00, 12 creates of 10.00 on each, all at once through both processes:
    // creates on different payments share batches, and exactly 9 fit on each (after 2.00).
    const payments = await Promise.all(Array.from({ length: 24 }, () => sandboxPayment(svc, 'lean', '100.00', 'AED')));
    for (const paymentId of payments) await create(0, { provider: 'lean', paymentId, currency: 'AED', amount: '2.00' }).expect(202);
    const before = await insertBatches();
    const results = await Promise.all(
      payments.flatMap((paymentId) =>
        Array.from({ length: 12 }, (_, i) =>
          create(i, { provider: 'lean', paymentId, currency: 'AED', amount: '10.00' }).then((r) => ({ paymentId, r })),
        ),
      ),
    );
    for (const paymentId of payments) {
      const mine = results.filter((x) => x.paymentId === paymentId).map((x) => x.r);
      expect(mine.filter((r) => r.status === 202)).toHaveLength(9);
      expect(mine.filter((r) => r.status === 422).map((r) => r.body.code)).toEqual(Array(3).fill('amount_exceeds_refundable'));
      const { rows } = await svc.db.query(`SELECT sum(amount)::text AS total FROM refunds WHERE provider = 'lean' AND payment_id = $1`, [paymentId]);
      expect(rows[0].total).toBe('92.000000000000000000');
    }
    const after = await insertBatches();
    // Batches of several creates really went to Postgres.
    expect(after.multi - before.multi).toBeGreaterThan(0);
  });

  it('fails only the create that breaks its batch; the others in it are accepted', async () => {
    // A row Postgres refuses (a trigger stands in for any per-row error) fails the whole
    // batch statement, which wrote nothing; each create is then tried alone.
    await svc.db.query(`
      CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'poisoned refund'; END $$;
      CREATE TRIGGER test_poison BEFORE INSERT ON refunds FOR EACH ROW WHEN (NEW.description = 'poison') EXECUTE FUNCTION test_poison();`);
    try {
      const splitsBefore = await insertSplits();
      const batchesBefore = await insertBatches();
      // Whether a poisoned create shares a batch depends on timing (a busy CI machine may send
      // creates alone): up to five rounds, each checked in full, until one was split.
      for (let round = 0; round < 5 && (await insertSplits()) === splitsBefore; round++) {
        const payments = await Promise.all(Array.from({ length: 30 }, () => sandboxPayment(svc, 'lean', '100.00', 'AED')));
        for (const paymentId of payments) await create(0, { provider: 'lean', paymentId, currency: 'AED', amount: '1.00' }).expect(202);
        const poisoned = new Set([3, 17]);
        const results = await Promise.all(
          payments.map((paymentId, i) =>
            create(0, { provider: 'lean', paymentId, currency: 'AED', amount: '5.00', ...(poisoned.has(i) ? { description: 'poison' } : {}) }),
          ),
        );
        results.forEach((r, i) => {
          if (poisoned.has(i)) expect(r.status, JSON.stringify(r.body)).toBeGreaterThanOrEqual(500);
          else expect(r.status, JSON.stringify(r.body)).toBe(202);
        });
        const { rows } = await svc.db.query(
          `SELECT payment_id, count(*)::int AS n FROM refunds WHERE provider = 'lean' AND payment_id = ANY($1) AND amount = 5 GROUP BY payment_id`,
          [payments],
        );
        expect(rows.map((r) => r.payment_id).sort()).toEqual(payments.filter((_, i) => !poisoned.has(i)).sort());
        expect(rows.every((r) => r.n === 1)).toBe(true);
      }
      expect((await insertBatches()).multi - batchesBefore.multi).toBeGreaterThan(0);
      // A poisoned create really was in a batch of several, which was then retried create by create.
      expect((await insertSplits()) - splitsBefore).toBeGreaterThan(0);
    } finally {
      await svc.db.query(`DROP TRIGGER test_poison ON refunds; DROP FUNCTION test_poison();`);
    }
  });
});
