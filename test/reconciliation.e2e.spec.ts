import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReconciliationSettings } from '../src/reconciliation/reconciliation-settings.js';
import { ReconciliationSweeper } from '../src/reconciliation/reconciliation-sweeper.js';
import { ReconciliationQueueService } from '../src/reconciliation/reconciliation-queue.service.js';
import { Database } from '../src/database/database.js';
import { ProvidersService } from '../src/providers/providers.service.js';
import { merchantKey, roleKey, sandboxPayment, setFaults, startService, TestService, waitFor } from './support/service.js';

/** Fast retries and sweeps, set before the service reads them at start. */
const ENV: Record<string, string> = {
  RECONCILIATION_RETRY_BASE_MS: '20',
  RECONCILIATION_PROVIDER_RETRIES: '2',
  RECONCILIATION_SWEEP_INTERVAL_MS: '200',
  RECONCILIATION_SWEEP_GRACE_MS: '300',
  RECONCILIATION_LEASE_MS: '3000',
};
const saved: Record<string, string | undefined> = {};

let svc: TestService;
let merchant: string;
let finance: string;
let ops: string;
const startedAt = new Date(Date.now() - 60_000);

beforeAll(async () => {
  for (const [k, v] of Object.entries(ENV)) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  svc = await startService('reconciliation');
  merchant = await merchantKey(svc, 'M1001');
  finance = await roleKey(svc, 'finance');
  ops = await roleKey(svc, 'ops');
  await setFaults(svc, 'binance-pay', { settleAfterMs: 100 });
  await setFaults(svc, 'cobo', { processAfterMs: 50, settleAfterMs: 100 });
  await setFaults(svc, 'lean', { settleAfterMs: 100 });
});

afterAll(async () => {
  await svc?.stop();
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

const bearer = (key: string) => `Bearer ${key}`;

async function refund(body: Record<string, unknown>): Promise<string> {
  const res = await svc
    .http()
    .post('/v1/refunds')
    .set('Authorization', bearer(merchant))
    .set('Idempotency-Key', randomUUID())
    .send(body)
    .expect(202);
  return res.body.id as string;
}

async function allSettled(ids: string[]): Promise<void> {
  await waitFor(
    async () => {
      const { rows } = await svc.db.query(`SELECT count(*)::int AS n FROM refunds WHERE id = ANY($1::uuid[]) AND status = 'succeeded'`, [ids]);
      return rows[0].n === ids.length;
    },
    20_000,
    'refunds succeeded',
  );
}

async function requestIdOf(id: string): Promise<string> {
  const { rows } = await svc.db.query(`SELECT provider_request_id FROM refunds WHERE id = $1`, [id]);
  return rows[0].provider_request_id as string;
}

/** Our row is lost: removes the refund with everything that references it (audit trigger off for this only). */
async function loseOurRow(id: string): Promise<void> {
  const client = await svc.db.connect();
  try {
    await client.query('BEGIN');
    await client.query(`DELETE FROM refund_event_outbox WHERE event_id IN (SELECT id FROM refund_events WHERE refund_id = $1)`, [id]);
    await client.query(`DELETE FROM webhook_deliveries WHERE event_id IN (SELECT id FROM refund_events WHERE refund_id = $1)`, [id]);
    await client.query(`ALTER TABLE refund_events DISABLE TRIGGER refund_events_immutable`);
    await client.query(`DELETE FROM refund_events WHERE refund_id = $1`, [id]);
    await client.query(`ALTER TABLE refund_events ENABLE TRIGGER refund_events_immutable`);
    await client.query(`DELETE FROM refund_attempts WHERE refund_id = $1`, [id]);
    await client.query(`DELETE FROM refunds WHERE id = $1`, [id]);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  } finally {
    client.release();
  }
}

function window() {
  return { from: startedAt.toISOString(), to: new Date(Date.now() + 10 * 60_000).toISOString() };
}

async function reconcile(provider: string, key = finance) {
  const res = await svc.http().post('/v1/reconciliations').set('Authorization', bearer(key)).send({ provider, ...window() }).expect(202);
  expect(res.body).toMatchObject({ id: expect.any(String) });
  return finished(res.body.id as string);
}

async function finished(id: string) {
  return waitFor(
    async () => {
      const r = await svc.http().get(`/v1/reconciliations/${id}`).set('Authorization', bearer(finance)).expect(200);
      return ['completed', 'failed'].includes(r.body.status) ? r.body : undefined;
    },
    20_000,
    `reconciliation ${id}`,
  );
}

type Mismatch = { kind: string; refundId: string | null; providerRequestId: string | null; ours: any; theirs: any };
const byKind = (ms: Mismatch[]) => [...ms].sort((a, b) => a.kind.localeCompare(b.kind));

describe('reconciliation runs against the emulators', () => {
  it('Cobo: reports a status changed at Cobo and a refund whose row we lost, nothing else', async () => {
    const paymentId = await sandboxPayment(svc, 'cobo', '100.00');
    const body = (amount: string) => ({
      provider: 'cobo',
      paymentId,
      amount,
      currency: 'USDT',
      cobo: { tokenId: 'TRON_USDT', toAddress: 'TXrecon1' },
    });
    const [a, b, c] = [await refund(body('10.50')), await refund(body('11.25')), await refund(body('12'))];
    await allSettled([a, b, c]);
    const bRequest = await requestIdOf(b);
    const cRequest = await requestIdOf(c);
    await svc.db.query(`UPDATE sandbox.cobo_refunds SET status = 'Failed', failed_reason = 'changed by test' WHERE request_id = $1`, [bRequest]);
    await loseOurRow(c);

    const run = await reconcile('cobo');
    expect(run).toMatchObject({ provider: 'cobo', status: 'completed', checked: 3, matched: 1, error: null });
    expect(run.startedAt).toEqual(expect.any(String));
    expect(run.completedAt).toEqual(expect.any(String));
    expect(byKind(run.mismatches)).toEqual([
      expect.objectContaining({
        kind: 'missing_locally',
        refundId: null,
        providerRequestId: cRequest,
        ours: null,
        theirs: expect.objectContaining({ status: 'succeeded', amount: '12', providerStatus: 'Completed' }),
      }),
      expect.objectContaining({
        kind: 'status_mismatch',
        refundId: b,
        providerRequestId: bRequest,
        ours: expect.objectContaining({ status: 'succeeded', amount: '11.25' }),
        theirs: expect.objectContaining({ status: 'failed', amount: '11.25', providerStatus: 'Failed' }),
      }),
    ]);
    expect(run.mismatches.find((m: Mismatch) => m.kind === 'missing_locally').detail).toMatch(/our row may have been lost/);
  });

  it('Lean: reports a status and an amount changed at Lean and a lost row, nothing else', async () => {
    const paymentId = await sandboxPayment(svc, 'lean', '100.00', 'AED');
    const body = (amount: string) => ({ provider: 'lean', paymentId, amount, currency: 'AED', reason: 'duplicate' });
    const ids = [await refund(body('10')), await refund(body('11')), await refund(body('12')), await refund(body('13.10'))];
    await allSettled(ids);
    const [a, b, c, d] = ids;
    const [bRequest, cRequest, dRequest] = [await requestIdOf(b), await requestIdOf(c), await requestIdOf(d)];
    await svc.db.query(`UPDATE sandbox.lean_refunds SET status = 'FAILED' WHERE external_reference = $1`, [bRequest]);
    await svc.db.query(`UPDATE sandbox.lean_refunds SET amount = 13.01 WHERE external_reference = $1`, [dRequest]);
    await loseOurRow(c);

    const run = await reconcile('lean', ops);
    expect(run).toMatchObject({ provider: 'lean', status: 'completed', checked: 4, matched: 1 });
    expect(byKind(run.mismatches)).toEqual([
      expect.objectContaining({
        kind: 'amount_mismatch',
        refundId: d,
        providerRequestId: dRequest,
        ours: expect.objectContaining({ status: 'succeeded', amount: '13.1' }),
        theirs: expect.objectContaining({ status: 'succeeded', amount: '13.01' }),
      }),
      expect.objectContaining({ kind: 'missing_locally', refundId: null, providerRequestId: cRequest, ours: null }),
      expect.objectContaining({
        kind: 'status_mismatch',
        refundId: b,
        ours: expect.objectContaining({ status: 'succeeded' }),
        theirs: expect.objectContaining({ status: 'failed', providerStatus: 'FAILED' }),
      }),
    ]);
    expect(ids).toContain(a);
  });

  it('Binance Pay: queries each refund; reports a changed status and a refund Binance no longer has', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '100.00', 'USDT');
    const body = (amount: string) => ({ provider: 'binance_pay', paymentId, amount, currency: 'USDT' });
    const ids = [await refund(body('5.5')), await refund(body('6.25')), await refund(body('7'))];
    await allSettled(ids);
    // One more that Binance fails, then ops retry it: a new submission with a new request id.
    await setFaults(svc, 'binance-pay', { refundFailRate: 1 });
    const e = await refund(body('8'));
    await waitFor(async () => (await svc.db.query(`SELECT 1 FROM refunds WHERE id = $1 AND status = 'failed'`, [e])).rowCount, 20_000, 'failed');
    await setFaults(svc, 'binance-pay', { refundFailRate: 0 });
    const eFirst = await requestIdOf(e);
    await svc.http().post(`/v1/refunds/${e}/retry`).set('Authorization', bearer(ops)).send({}).expect(202);
    await allSettled([...ids, e]);
    expect(await requestIdOf(e)).not.toBe(eFirst);

    const [, b, c] = ids;
    const [bRequest, cRequest] = [await requestIdOf(b), await requestIdOf(c)];
    await svc.db.query(`UPDATE sandbox.binance_refunds SET status = 'REFUND_FAIL' WHERE refund_request_id = $1`, [bRequest]);
    await svc.db.query(`DELETE FROM sandbox.binance_refunds WHERE refund_request_id = $1`, [cRequest]);

    // Four refunds and the earlier, failed submission of the retried one: three agree.
    const run = await reconcile('binance_pay');
    expect(run).toMatchObject({ provider: 'binance_pay', status: 'completed', checked: 5, matched: 3 });
    expect(byKind(run.mismatches)).toEqual([
      expect.objectContaining({
        kind: 'missing_at_provider',
        refundId: c,
        providerRequestId: cRequest,
        ours: expect.objectContaining({ status: 'succeeded', amount: '7' }),
        theirs: null,
      }),
      expect.objectContaining({
        kind: 'status_mismatch',
        refundId: b,
        ours: expect.objectContaining({ status: 'succeeded', amount: '6.25' }),
        theirs: expect.objectContaining({ status: 'failed', amount: '6.25', providerStatus: 'REFUND_FAIL' }),
      }),
    ]);

    // Binance now says the earlier submission paid out after all: money may have moved twice.
    await svc.db.query(`UPDATE sandbox.binance_refunds SET status = 'REFUND_SUCCESS' WHERE refund_request_id = $1`, [eFirst]);
    const again = await reconcile('binance_pay');
    expect(again).toMatchObject({ status: 'completed', checked: 5, matched: 2 });
    expect(again.mismatches.filter((m: Mismatch) => m.refundId === e)).toEqual([
      expect.objectContaining({
        kind: 'status_mismatch',
        providerRequestId: eFirst,
        ours: expect.objectContaining({ status: 'failed', amount: '8' }),
        theirs: expect.objectContaining({ status: 'succeeded', providerStatus: 'REFUND_SUCCESS' }),
        detail: expect.stringMatching(/earlier submission/),
      }),
    ]);
  });

  it('lists runs, newest first, filtered by provider', async () => {
    const res = await svc.http().get('/v1/reconciliations').query({ provider: 'lean', limit: 5 }).set('Authorization', bearer(finance)).expect(200);
    expect(res.body.data.length).toBeGreaterThanOrEqual(1);
    for (const r of res.body.data) expect(r).toMatchObject({ provider: 'lean', status: 'completed' });
    expect(res.body.data[0]).not.toHaveProperty('mismatches');
  });

  it('a provider that keeps failing fails the run with the error, after retries', async () => {
    await setFaults(svc, 'cobo', { errorRate: 1 });
    try {
      const run = await reconcile('cobo');
      expect(run.status).toBe('failed');
      expect(run.error).toMatch(/cobo refund list page 1 failed after 3 attempts/);
    } finally {
      await setFaults(svc, 'cobo', { errorRate: 0 });
    }
  });

  it('a run whose worker died (lease expired) is taken over and completed', async () => {
    const id = randomUUID();
    await svc.db.query(
      `INSERT INTO reconciliation_runs (id, provider, from_at, to_at, status, requested_by, attempts, lease_owner, lease_until, started_at)
       VALUES ($1, 'lean', now() - interval '1 hour', now(), 'running', 'test', 1, 'dead-worker', now() - interval '1 second', now())`,
      [id],
    );
    const run = await finished(id);
    expect(run).toMatchObject({ status: 'completed', attempts: 2 });
  });

  it('schedules one daily run per enabled provider for the previous UTC day, however many workers race', async () => {
    const settings = svc.app.get(ReconciliationSettings);
    settings.dailyAt = { hour: 0, minute: 0 };
    try {
      const make = () =>
        new ReconciliationSweeper(svc.app.get(Database), svc.app.get(ReconciliationQueueService), svc.app.get(ProvidersService), settings);
      const created = (await Promise.all([make().scheduleDaily(), make().scheduleDaily(), svc.app.get(ReconciliationSweeper).scheduleDaily()])).flat();
      const { rows } = await svc.db.query(`SELECT id, provider, from_at, to_at FROM reconciliation_runs WHERE scheduled ORDER BY provider`);
      expect(rows.map((r) => r.provider)).toEqual(['binance_pay', 'cobo', 'lean']);
      // The service's own sweeper may win some inserts; nobody creates a second run of a day.
      for (const id of created) expect(rows.map((r) => r.id)).toContain(id);
      const today = new Date();
      today.setUTCHours(0, 0, 0, 0);
      for (const r of rows) {
        expect(r.to_at.getTime()).toBe(today.getTime());
        expect(today.getTime() - r.from_at.getTime()).toBe(86_400_000);
      }
      for (const r of rows) expect((await finished(r.id)).status).toBe('completed');
    } finally {
      settings.dailyAt = undefined;
    }
  });
});

describe('reconciliation API: roles and validation', () => {
  const post = (key: string, body: unknown) => svc.http().post('/v1/reconciliations').set('Authorization', bearer(key)).send(body as object);

  it('refuses merchant keys (403) and missing keys (401)', async () => {
    await post(merchant, { provider: 'cobo', ...window() }).expect(403);
    await svc.http().get('/v1/reconciliations').set('Authorization', bearer(merchant)).expect(403);
    await svc.http().get(`/v1/reconciliations/${randomUUID()}`).set('Authorization', bearer(merchant)).expect(403);
    await svc.http().get('/v1/reconciliations').expect(401);
  });

  it('validates provider and window (400 validation_failed naming the field)', async () => {
    const day = (d: number) => new Date(Date.UTC(2026, 0, d)).toISOString();
    const cases: Array<[unknown, string]> = [
      [{ provider: 'paypal', from: day(1), to: day(2) }, 'provider'],
      [{ provider: 'cobo', to: day(2) }, 'from'],
      [{ provider: 'cobo', from: 'yesterday', to: day(2) }, 'from'],
      [{ provider: 'cobo', from: '2026-01-01T00:00:00', to: day(2) }, 'from'],
      [{ provider: 'cobo', from: day(2), to: day(1) }, 'to'],
      [{ provider: 'cobo', from: day(1), to: new Date(Date.UTC(2026, 1, 1, 0, 0, 1)).toISOString() }, 'to'],
      [{ provider: 'cobo', from: new Date(Date.now() + 86_400_000).toISOString(), to: new Date(Date.now() + 2 * 86_400_000).toISOString() }, 'from'],
      [{ provider: 'cobo', from: day(1), to: day(2), extra: 1 }, 'extra'],
    ];
    for (const [body, field] of cases) {
      const res = await post(finance, body).expect(400);
      expect(res.body.code).toBe('validation_failed');
      expect(res.body.errors.map((e: { field: string }) => e.field)).toContain(field);
    }
    // A 31-day window and a bare date are fine.
    await post(finance, { provider: 'cobo', from: '2026-01-01', to: day(32) }).expect(202);
  });

  it('answers 404 for an unknown or malformed run id', async () => {
    await svc.http().get(`/v1/reconciliations/${randomUUID()}`).set('Authorization', bearer(finance)).expect(404);
    await svc.http().get('/v1/reconciliations/not-a-uuid').set('Authorization', bearer(finance)).expect(404);
  });
});
