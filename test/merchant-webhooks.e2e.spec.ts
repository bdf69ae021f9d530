import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Database } from '../src/database/database.js';
import { MetricsService } from '../src/metrics/metrics.service.js';
import { RefundStateService } from '../src/refunds/refund-state.service.js';
import { merchantKey, roleKey, sandboxPayment, setFaults, startService, TestService, waitFor } from './support/service.js';

/** Fast delivery timings (read by the webhooks module at start). */
const WEBHOOK_ENV: Record<string, string> = {
  WEBHOOK_RETRY_BASE_MS: '200',
  WEBHOOK_MAX_ATTEMPTS: '4',
  WEBHOOK_TIMEOUT_MS: '2000',
  WEBHOOK_DISPATCH_INTERVAL_MS: '100',
  WEBHOOK_SWEEP_INTERVAL_MS: '300',
  WEBHOOK_SWEEP_GRACE_MS: '1000',
};
const savedEnv: Record<string, string | undefined> = {};

let svc: TestService;
let ops: string;
const receivers: Receiver[] = [];

beforeAll(async () => {
  for (const [k, v] of Object.entries(WEBHOOK_ENV)) {
    savedEnv[k] = process.env[k];
    process.env[k] = v;
  }
  svc = await startService('webhooks');
  ops = await roleKey(svc, 'ops');
  await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
  await setFaults(svc, 'cobo', { processAfterMs: 100, settleAfterMs: 200 });
});

afterAll(async () => {
  await Promise.all(receivers.map((r) => r.close()));
  await svc?.stop();
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

interface Received {
  raw: string;
  headers: http.IncomingHttpHeaders;
  body: { id: string; type: string; createdAt: string; data: Record<string, unknown> & { id: string; status: string } };
  answered: number;
  at: number;
}

interface Receiver {
  url: string;
  got: Received[];
  close(): Promise<void>;
}

/** A merchant's server on 127.0.0.1; `answer` picks the status from the event and how often that event came before. */
async function receiver(answer: (event: Received['body'], seenBefore: number) => number = () => 200): Promise<Receiver> {
  const got: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const body = JSON.parse(raw) as Received['body'];
      const answered = answer(body, got.filter((g) => g.body.id === body.id).length);
      got.push({ raw, headers: req.headers, body, answered, at: Date.now() });
      res.writeHead(answered, { 'content-type': 'text/plain' }).end(answered < 300 ? 'ok' : 'receiver says no');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const r: Receiver = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/refunds`,
    got,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  receivers.push(r);
  return r;
}

/** The merchant's check, written independently of the service's code. */
function signatureValid(secret: string, raw: string, header: string | string[] | undefined): boolean {
  const m = typeof header === 'string' ? /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header) : null;
  if (!m) return false;
  if (Math.abs(Date.now() / 1000 - Number(m[1])) > 60) return false;
  const expected = createHmac('sha256', secret).update(`${m[1]}.${raw}`, 'utf8').digest();
  return timingSafeEqual(expected, Buffer.from(m[2], 'hex'));
}

function as(key: string) {
  return {
    get: (path: string) => svc.http().get(path).set('Authorization', `Bearer ${key}`),
    post: (path: string, body?: object) => {
      const req = svc.http().post(path).set('Authorization', `Bearer ${key}`);
      return body === undefined ? req : req.send(body);
    },
    delete: (path: string) => svc.http().delete(path).set('Authorization', `Bearer ${key}`),
  };
}

async function createEndpoint(key: string, url: string): Promise<{ id: string; url: string; secret: string; createdAt: string }> {
  const res = await as(key).post('/v1/webhook-endpoints', { url }).expect(201);
  return res.body;
}

async function binanceRefund(key: string, amount = '5.00'): Promise<string> {
  const paymentId = await sandboxPayment(svc, 'binance_pay', '100.00');
  const res = await as(key)
    .post('/v1/refunds')
    .set('Idempotency-Key', randomUUID())
    .send({ provider: 'binance_pay', paymentId, amount, currency: 'USDT' })
    .expect(202);
  return res.body.id as string;
}

async function refundStatus(key: string, id: string): Promise<string> {
  return (await as(key).get(`/v1/refunds/${id}`).expect(200)).body.status;
}

function eventsFor(r: Receiver, refundId: string, status = 0): Received[] {
  return r.got.filter((g) => g.body.data.id === refundId && (status === 0 || g.answered === status));
}

/** Waits until the receiver has accepted (2xx) one event of each type for the refund. */
async function untilAccepted(r: Receiver, refundId: string, types: string[], timeoutMs = 20_000): Promise<Map<string, Received>> {
  return waitFor(async () => {
    const accepted = new Map(r.got.filter((g) => g.body.data.id === refundId && g.answered < 300).map((g) => [g.body.type, g]));
    return types.every((t) => accepted.has(t)) ? accepted : undefined;
  }, timeoutMs, `${types.join(', ')} for ${refundId}`);
}

async function deliveries(key: string, endpointId: string) {
  return (await as(key).get(`/v1/webhook-endpoints/${endpointId}/deliveries?limit=100`).expect(200)).body.data as Array<Record<string, unknown>>;
}

/**
 * The deliveries once `count` of them are settled (no longer pending). The receiver sees an
 * attempt before the sender records its answer, so right after the receiver accepted the
 * last event the row may still say pending (a race CI lost once).
 */
async function settledDeliveries(key: string, endpointId: string, count: number) {
  return waitFor(async () => {
    const list = await deliveries(key, endpointId);
    return list.length === count && list.every((d) => d.status !== 'pending') ? list : undefined;
  }, 10_000, `${count} settled deliveries`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('merchant webhooks', () => {
  it('delivers refund.queued, refund.processing and refund.succeeded, signed as in contract §10', async () => {
    const key = await merchantKey(svc, 'WH1');
    const rx = await receiver();
    const endpoint = await createEndpoint(key, rx.url);
    expect(Object.keys(endpoint).sort()).toEqual(['createdAt', 'id', 'secret', 'url']);
    expect(endpoint.secret).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    expect(endpoint.url).toBe(rx.url);

    // The secret is shown only at creation.
    const one = await as(key).get(`/v1/webhook-endpoints/${endpoint.id}`).expect(200);
    expect(one.body).toMatchObject({ id: endpoint.id, url: rx.url, merchantId: 'WH1', disabledAt: null });
    const list = await as(key).get('/v1/webhook-endpoints').expect(200);
    expect(list.body.data.map((e: { id: string }) => e.id)).toEqual([endpoint.id]);
    expect(JSON.stringify([one.body, list.body])).not.toContain('whsec_');

    const refundId = await binanceRefund(key, '25.17');
    const got = await untilAccepted(rx, refundId, ['refund.queued', 'refund.processing', 'refund.succeeded']);
    expect(await refundStatus(key, refundId)).toBe('succeeded');

    for (const [type, r] of got) {
      expect(signatureValid(endpoint.secret, r.raw, r.headers['refund-signature'])).toBe(true);
      expect(signatureValid(endpoint.secret, r.raw.replace('25.17', '25.18'), r.headers['refund-signature'])).toBe(false);
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.headers['refund-event-id']).toBe(r.body.id);
      expect(r.headers['refund-event-type']).toBe(type);
      expect(Object.keys(r.body)).toEqual(['id', 'type', 'createdAt', 'data']);
      expect(r.body.id).toMatch(/^evt_\d+$/);
      expect(new Date(r.body.createdAt).toISOString()).toBe(r.body.createdAt);
      expect(r.body.data).toMatchObject({ id: refundId, merchantId: 'WH1', amount: '25.17', currency: 'USDT', status: type.slice('refund.'.length) });
    }
    expect(got.get('refund.queued')!.body.data.refundedAmount).toBe('0');
    expect(got.get('refund.succeeded')!.body.data.refundedAmount).toBe('25.17');
    expect(new Set([...got.values()].map((r) => r.body.id)).size).toBe(3);
    // Event times follow the refund's own event log.
    const events = (await as(key).get(`/v1/refunds/${refundId}/events`).expect(200)).body.data as Array<{ to: string; createdAt: string }>;
    for (const e of events) expect(got.get(`refund.${e.to}`)!.body.createdAt).toBe(e.createdAt);

    const list2 = await settledDeliveries(key, endpoint.id, 3);
    expect(list2).toHaveLength(3);
    for (const d of list2) {
      expect(d).toMatchObject({ status: 'delivered', attempts: 1, lastHttpStatus: 200, lastError: null, nextAttemptAt: null });
      expect(d.deliveredAt).not.toBeNull();
      expect(Object.keys(d).sort()).toEqual(
        ['attempts', 'createdAt', 'deliveredAt', 'eventId', 'id', 'lastError', 'lastHttpStatus', 'nextAttemptAt', 'status', 'type'].sort(),
      );
    }
    // Newest first.
    const ids = list2.map((d) => Number(String(d.eventId).slice(4)));
    expect(ids).toEqual([...ids].sort((a, b) => b - a));
    expect(list2.map((d) => d.type)).toEqual(['refund.succeeded', 'refund.processing', 'refund.queued']);
    expect((await as(key).get(`/v1/webhook-endpoints/${endpoint.id}/deliveries?limit=1`).expect(200)).body.data).toHaveLength(1);
    await as(key).get(`/v1/webhook-endpoints/${endpoint.id}/deliveries?limit=0`).expect(400);
  });

  it('retries with backoff: a receiver answering 500 twice then 200 gets the event, after 3 attempts; one that never accepts ends failed', async () => {
    const key = await merchantKey(svc, 'WH2');
    const flaky = await receiver((_event, seenBefore) => (seenBefore < 2 ? 500 : 200));
    const endpoint = await createEndpoint(key, flaky.url);
    const refundId = await binanceRefund(key);
    const got = await untilAccepted(flaky, refundId, ['refund.queued', 'refund.processing', 'refund.succeeded']);

    const succeeded = got.get('refund.succeeded')!;
    const tries = eventsFor(flaky, refundId).filter((g) => g.body.id === succeeded.body.id);
    expect(tries.map((t) => t.answered)).toEqual([500, 500, 200]);
    // Backoff: about 200 ms then 400 ms (±20%), never immediately; the same bytes every time.
    expect(tries[1].at - tries[0].at).toBeGreaterThanOrEqual(140);
    expect(tries[2].at - tries[1].at).toBeGreaterThanOrEqual(300);
    expect(new Set(tries.map((t) => t.raw)).size).toBe(1);

    const list = await settledDeliveries(key, endpoint.id, 3);
    expect(list).toHaveLength(3);
    for (const d of list) expect(d).toMatchObject({ status: 'delivered', attempts: 3, lastHttpStatus: 200, lastError: null });
    const delivery = list.find((d) => d.type === 'refund.succeeded')!;
    const { rows: attempts } = await svc.db.query(
      `SELECT number, http_status, outcome, error FROM webhook_delivery_attempts WHERE delivery_id = $1 ORDER BY number`,
      [delivery.id],
    );
    expect(attempts.map((a) => [a.number, a.http_status, a.outcome])).toEqual([
      [1, 500, 'retrying'],
      [2, 500, 'retrying'],
      [3, 200, 'delivered'],
    ]);
    expect(attempts[0].error).toBe('HTTP 500: receiver says no');

    // A receiver that never accepts: WEBHOOK_MAX_ATTEMPTS (4 here) attempts, then failed.
    const key3 = await merchantKey(svc, 'WH2b');
    const down = await receiver(() => 503);
    const downEndpoint = await createEndpoint(key3, down.url);
    const refund2 = await binanceRefund(key3);
    const failed = await waitFor(async () => {
      const l = await deliveries(key3, downEndpoint.id);
      return l.length === 3 && l.every((d) => d.status === 'failed') ? l : undefined;
    }, 20_000, 'deliveries failed');
    for (const d of failed) {
      expect(d).toMatchObject({ attempts: 4, lastHttpStatus: 503, nextAttemptAt: null, deliveredAt: null });
      expect(d.lastError).toMatch(/^HTTP 503/);
    }
    expect(eventsFor(down, refund2)).toHaveLength(12);

    const counter = await svc.app.get(MetricsService).webhookDeliveries.get();
    const byOutcome = Object.fromEntries(counter.values.map((v) => [v.labels.outcome, v.value]));
    expect(byOutcome.delivered).toBeGreaterThanOrEqual(3);
    expect(byOutcome.retrying).toBeGreaterThanOrEqual(6 + 9);
    expect(byOutcome.failed).toBeGreaterThanOrEqual(3);
  });

  it('emits nothing for a status change whose transaction rolls back', async () => {
    const key = await merchantKey(svc, 'WH3');
    const rx = await receiver();
    await createEndpoint(key, rx.url);
    // A Cobo refund without an address waits in requires_action: a stable status to move from.
    const paymentId = (
      await svc.http().post('/sandbox/payments').send({ provider: 'cobo', amount: '50.00', currency: 'USDT', merchantId: 'WH3' }).expect(201)
    ).body.paymentId as string;
    const created = await as(key)
      .post('/v1/refunds')
      .set('Idempotency-Key', randomUUID())
      .send({ provider: 'cobo', paymentId, amount: '10', currency: 'USDT', cobo: { tokenId: 'TRON_USDT' } })
      .expect(202);
    const refundId = created.body.id as string;
    await untilAccepted(rx, refundId, ['refund.queued', 'refund.processing', 'refund.requires_action']);

    const db = svc.app.get(Database);
    const state = svc.app.get(RefundStateService);
    let seenInside = -1;
    await expect(
      db.transaction(async (tx) => {
        const moved = await state.transition(tx, refundId, 'canceled', { from: ['requires_action'], actor: 'test:rollback' });
        expect(moved?.status).toBe('canceled');
        const [{ n }] = await tx.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM refund_event_outbox o JOIN refund_events e ON e.id = o.event_id
            WHERE e.refund_id = $1 AND e.to_status = 'canceled'`,
          [refundId],
        );
        seenInside = n;
        // Held open across several dispatcher ticks: uncommitted rows are never picked.
        await sleep(600);
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    expect(seenInside).toBe(1);

    await sleep(1_000);
    expect(await refundStatus(key, refundId)).toBe('requires_action');
    const { rows: events } = await svc.db.query(`SELECT to_status FROM refund_events WHERE refund_id = $1 ORDER BY id`, [refundId]);
    expect(events.map((e) => e.to_status)).toEqual(['queued', 'processing', 'requires_action']);
    const { rows: leftovers } = await svc.db.query(
      `SELECT
         (SELECT count(*)::int FROM refund_event_outbox o JOIN refund_events e ON e.id = o.event_id WHERE e.refund_id = $1) AS outbox,
         (SELECT count(*)::int FROM webhook_deliveries d JOIN refund_events e ON e.id = d.event_id WHERE e.refund_id = $1) AS deliveries,
         (SELECT count(*)::int FROM webhook_deliveries d JOIN refund_events e ON e.id = d.event_id
           WHERE e.refund_id = $1 AND d.event_type = 'refund.canceled') AS canceled`,
      [refundId],
    );
    expect(leftovers[0]).toEqual({ outbox: 0, deliveries: 3, canceled: 0 });
    expect(eventsFor(rx, refundId).map((g) => g.body.type).sort()).toEqual(['refund.processing', 'refund.queued', 'refund.requires_action']);

    // The same change committed does emit (the negative above is meaningful).
    await as(key).post(`/v1/refunds/${refundId}/cancel`).expect(200);
    const canceled = await untilAccepted(rx, refundId, ['refund.canceled']);
    expect(canceled.get('refund.canceled')!.body.data.status).toBe('canceled');
  });

  it('keeps endpoints private to their merchant, validates them, redelivers, and stops delivering after DELETE', async () => {
    const owner = await merchantKey(svc, 'WH4');
    const other = await merchantKey(svc, 'WH5');
    const rx = await receiver();
    const endpoint = await createEndpoint(owner, rx.url);
    const path = `/v1/webhook-endpoints/${endpoint.id}`;

    // Another merchant: as if it did not exist.
    for (const res of [
      await as(other).get(path),
      await as(other).delete(path),
      await as(other).get(`${path}/deliveries`),
      await as(other).post(`${path}/deliveries/${randomUUID()}/redeliver`),
    ]) {
      expect(res.status).toBe(404);
      expect(res.body.code).toBe('not_found');
    }
    expect((await as(other).get('/v1/webhook-endpoints').expect(200)).body.data).toEqual([]);
    expect((await as(other).get('/v1/webhook-endpoints?merchantId=WH4').expect(200)).body.data).toEqual([]);
    // Ops read any; only the merchant's own key creates or deletes.
    await as(ops).get(path).expect(200);
    const opsList = await as(ops).get('/v1/webhook-endpoints?merchantId=WH4').expect(200);
    expect(opsList.body.data.map((e: { id: string }) => e.id)).toEqual([endpoint.id]);
    expect((await as(ops).post('/v1/webhook-endpoints', { url: rx.url })).body.code).toBe('forbidden');
    expect((await as(ops).delete(path)).body.code).toBe('forbidden');
    expect((await as(svc.adminKey).post('/v1/webhook-endpoints', { url: rx.url })).status).toBe(403);
    expect((await as(owner).get('/v1/webhook-endpoints/not-a-uuid')).status).toBe(404);

    // Validation: 400 validation_failed naming the field.
    for (const body of [
      { url: 'ftp://shop.example/hooks' },
      { url: 'not a url' },
      { url: `https://shop.example/${'a'.repeat(2048)}` },
      { url: 'https://user:secret@shop.example/hooks' },
      { url: 42 },
      {},
      { url: rx.url, events: ['refund.succeeded'] },
    ]) {
      const res = await as(owner).post('/v1/webhook-endpoints', body);
      expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect(res.body.code).toBe('validation_failed');
      expect(res.body.errors.length).toBeGreaterThan(0);
    }

    // Redelivery: a new attempt of the same event, same bytes, freshly signed.
    const refundId = await binanceRefund(owner);
    const got = await untilAccepted(rx, refundId, ['refund.queued', 'refund.processing', 'refund.succeeded']);
    const first = got.get('refund.succeeded')!;
    const delivery = (await settledDeliveries(owner, endpoint.id, 3)).find((d) => d.type === 'refund.succeeded')!;
    const redelivered = await as(owner).post(`${path}/deliveries/${delivery.id}/redeliver`).expect(202);
    expect(redelivered.body).toMatchObject({ id: delivery.id, eventId: first.body.id, status: 'pending' });
    const again = await waitFor(async () => {
      const all = rx.got.filter((g) => g.body.id === first.body.id);
      return all.length >= 2 ? all[1] : undefined;
    }, 10_000, 'redelivery');
    expect(again.raw).toBe(first.raw);
    expect(signatureValid(endpoint.secret, again.raw, again.headers['refund-signature'])).toBe(true);
    const after = await waitFor(async () => {
      const d = (await deliveries(owner, endpoint.id)).find((x) => x.id === delivery.id)!;
      return d.status === 'delivered' && d.attempts === 2 ? d : undefined;
    }, 10_000, 'redelivered delivery recorded');
    expect(after.lastHttpStatus).toBe(200);
    // Ops may redeliver too (support), with their key recorded in the audit trail.
    await as(ops).post(`${path}/deliveries/${delivery.id}/redeliver`).expect(202);
    await waitFor(async () => rx.got.filter((g) => g.body.id === first.body.id).length >= 3, 10_000, 'ops redelivery');
    const { rows: audit } = await svc.db.query(`SELECT actor, action FROM audit_events WHERE subject = $1 ORDER BY id`, [delivery.id]);
    expect(audit.map((a) => a.action)).toEqual(['webhook_delivery.redeliver', 'webhook_delivery.redeliver']);
    await as(owner).post(`${path}/deliveries/${randomUUID()}/redeliver`).expect(404);

    // DELETE disables: 204, hidden from the list, kept readable with its history; nothing more is sent.
    await as(owner).delete(path).expect(204);
    await as(owner).delete(path).expect(204);
    expect((await as(owner).get('/v1/webhook-endpoints').expect(200)).body.data).toEqual([]);
    expect((await as(owner).get(path).expect(200)).body.disabledAt).not.toBeNull();
    expect((await as(owner).post(`${path}/deliveries/${delivery.id}/redeliver`)).body.code).toBe('invalid_state');
    const before = rx.got.length;
    const refund2 = await binanceRefund(owner);
    await waitFor(async () => (await refundStatus(owner, refund2)) === 'succeeded', 20_000, 'second refund final');
    await waitFor(async () => {
      const { rows } = await svc.db.query(
        `SELECT count(*)::int AS n FROM refund_event_outbox o JOIN refund_events e ON e.id = o.event_id WHERE e.refund_id = $1`,
        [refund2],
      );
      return rows[0].n === 0;
    }, 10_000, 'outbox drained');
    await sleep(500);
    expect(rx.got.length).toBe(before);
    expect(eventsFor(rx, refund2)).toEqual([]);
    expect(await deliveries(owner, endpoint.id)).toHaveLength(3);
  });

  it('DELETE stops the retries of pending deliveries', async () => {
    const key = await merchantKey(svc, 'WH6');
    const down = await receiver(() => 500);
    const endpoint = await createEndpoint(key, down.url);
    const refundId = await binanceRefund(key);
    await waitFor(async () => eventsFor(down, refundId).length >= 2, 10_000, 'first failed attempts');
    await as(key).delete(`/v1/webhook-endpoints/${endpoint.id}`).expect(204);
    await sleep(300);
    const seen = down.got.length;
    await sleep(1_500);
    expect(down.got.length).toBe(seen);
    const list = await deliveries(key, endpoint.id);
    expect(list.length).toBeGreaterThan(0);
    for (const d of list) expect(d).toMatchObject({ status: 'failed', lastError: 'endpoint disabled', nextAttemptAt: null });
  });

  it('re-enqueues a pending delivery whose job Redis lost (sweeper)', async () => {
    const key = await merchantKey(svc, 'WH7');
    const rx = await receiver();
    const first = await createEndpoint(key, rx.url);
    const refundId = await binanceRefund(key);
    const got = await untilAccepted(rx, refundId, ['refund.succeeded']);
    // A second endpoint, and a delivery row for it with no job anywhere: what a Redis flush leaves.
    const rx2 = await receiver();
    const second = await createEndpoint(key, rx2.url);
    const eventId = got.get('refund.succeeded')!.body.id.slice(4);
    const orphan = randomUUID();
    await svc.db.query(
      `INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, payload, body, status, next_attempt_at)
       SELECT $1, $2, event_id, event_type, payload, body, 'pending', now() - interval '5 seconds'
         FROM webhook_deliveries WHERE endpoint_id = $3 AND event_id = $4`,
      [orphan, second.id, first.id, eventId],
    );
    const received = await untilAccepted(rx2, refundId, ['refund.succeeded'], 10_000);
    expect(received.get('refund.succeeded')!.raw).toBe(got.get('refund.succeeded')!.raw);
    expect(signatureValid(second.secret, received.get('refund.succeeded')!.raw, received.get('refund.succeeded')!.headers['refund-signature'])).toBe(true);
    await waitFor(async () => (await deliveries(key, second.id)).find((d) => d.id === orphan && d.status === 'delivered'), 5_000, 'orphan delivered');
  });
});
