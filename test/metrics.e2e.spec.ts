import type { INestApplicationContext } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config/config.js';
import {
  FAST_ENV,
  freePort,
  merchantKey,
  REDIS_URL,
  sandboxPayment,
  setFaults,
  startService,
  TestService,
  waitFor,
} from './support/service.js';
import { hasMetric, metricSum, parseMetrics, type Sample } from './support/metrics.js';

// GET /metrics on an API process (public by default), the scrape-time gauges, METRICS_TOKEN,
// and the small metrics server of a ROLE=worker process.
const METRICS_TOKEN = 'metrics_token_for_tests_only';
let svc: TestService;
let key: string;
let worker: INestApplicationContext | undefined;

beforeAll(async () => {
  // A short stuck horizon (the minimum) so a refund the emulator keeps pending turns stuck.
  svc = await startService('metrics', { STUCK_AFTER_MS: '1000' });
  key = await merchantKey(svc, 'M1001');
  await setFaults(svc, 'binance-pay', { settleAfterMs: 100 });
});

afterAll(async () => {
  await worker?.close();
  await svc?.stop();
});

async function scrape(): Promise<Sample[]> {
  const res = await svc.http().get('/metrics').expect(200);
  expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseMetrics(res.text);
}

function createRefund(paymentId: string, amount: string) {
  return svc
    .http()
    .post('/v1/refunds')
    .set('Authorization', `Bearer ${key}`)
    .set('Idempotency-Key', randomUUID())
    .send({ provider: 'binance_pay', paymentId, amount, currency: 'USDT' })
    .expect(202);
}

async function statusOf(id: string): Promise<string> {
  const res = await svc.http().get(`/v1/refunds/${id}`).set('Authorization', `Bearer ${key}`).expect(200);
  return res.body.status;
}

describe('GET /metrics', () => {
  it('is public by default and exposes the series with values that move', async () => {
    const before = await scrape();
    for (const provider of ['binance_pay', 'cobo', 'lean']) {
      for (const status of ['queued', 'processing', 'requires_action']) expect(hasMetric(before, 'refunds_stuck', { provider, status })).toBe(true);
      expect(metricSum(before, 'refunds_stuck', { provider })).toBe(0);
    }
    for (const queue of ['refunds-binance_pay', 'refunds-cobo', 'refunds-lean', 'merchant-webhooks']) {
      for (const state of ['waiting', 'active', 'delayed', 'failed', 'completed']) {
        expect(hasMetric(before, 'refund_queue_jobs', { queue, state })).toBe(true);
      }
      expect(hasMetric(before, 'refund_queue_oldest_waiting_job_age_seconds', { queue })).toBe(true);
    }
    expect(hasMetric(before, 'refunds_flagged_for_review')).toBe(true);
    expect(metricSum(before, 'metrics_collector_up', { collector: 'database' })).toBe(1);
    expect(metricSum(before, 'metrics_collector_up', { collector: 'queues' })).toBe(1);
    expect(hasMetric(before, 'process_cpu_user_seconds_total')).toBe(true);

    const paymentId = await sandboxPayment(svc, 'binance_pay', '100.00');
    const ids = [(await createRefund(paymentId, '10')).body.id, (await createRefund(paymentId, '12.5')).body.id];
    await waitFor(async () => (await Promise.all(ids.map(statusOf))).every((s) => s === 'succeeded'), 20_000, 'refunds succeeded');

    const after = await scrape();
    const created = (s: Sample[]) => metricSum(s, 'refunds_created_total', { provider: 'binance_pay' });
    expect(created(after) - created(before)).toBe(2);
    expect(metricSum(after, 'refunds_created_total', { provider: 'binance_pay', status: 'queued' })).toBeGreaterThanOrEqual(2);
    const succeeded = (s: Sample[]) => metricSum(s, 'refund_status_transitions_total', { provider: 'binance_pay', to: 'succeeded' });
    expect(succeeded(after) - succeeded(before)).toBe(2);
    expect(metricSum(after, 'refund_status_transitions_total', { provider: 'binance_pay', from: 'queued', to: 'processing' })).toBeGreaterThanOrEqual(2);
    // Latency histogram of the provider calls (create, then queries until final).
    expect(hasMetric(after, 'provider_call_duration_seconds_bucket', { provider: 'binance_pay', operation: 'create', le: '+Inf' })).toBe(true);
    const calls = (s: Sample[]) => metricSum(s, 'provider_call_duration_seconds_count', { provider: 'binance_pay', operation: 'create' });
    expect(calls(after) - calls(before)).toBeGreaterThanOrEqual(2);
    // Where the two creates spent their time: the first on a payment not cached yet takes the
    // locked path (after a snapshot that finds no payment), the second the optimistic one.
    const stage = (s: Sample[], name: string) => metricSum(s, 'refund_create_stage_duration_seconds_count', { stage: name });
    const stages = Object.fromEntries(
      ['admission', 'gate', 'snapshot', 'insert', 'locked', 'enqueue'].map((name) => [name, stage(after, name) - stage(before, name)]),
    );
    expect(stages).toEqual({ admission: 2, gate: 2, snapshot: 2, insert: 1, locked: 1, enqueue: 2 });
    const spent = (name: string) =>
      metricSum(after, 'refund_create_stage_duration_seconds_sum', { stage: name }) - metricSum(before, 'refund_create_stage_duration_seconds_sum', { stage: name });
    // The locked path includes the payment's lookup at the provider, over HTTP.
    expect(spent('locked')).toBeGreaterThan(0);
    expect(spent('admission')).toBeGreaterThan(0);
  });

  it('counts a refund the provider keeps pending as stuck, and its parked job as delayed', async () => {
    await setFaults(svc, 'binance-pay', { settleAfterMs: 600_000 });
    try {
      const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
      const { body } = await createRefund(paymentId, '1');
      await waitFor(async () => (await statusOf(body.id)) === 'processing', 10_000, 'processing');
      const stuck = await waitFor(
        async () => {
          const s = await scrape();
          return metricSum(s, 'refunds_stuck', { provider: 'binance_pay' }) >= 1 && s;
        },
        10_000,
        'refunds_stuck{provider="binance_pay"} >= 1',
      );
      expect(metricSum(stuck, 'refunds_stuck', { provider: 'binance_pay', status: 'processing' })).toBeGreaterThanOrEqual(1);
      expect(metricSum(stuck, 'refunds_stuck', { provider: 'cobo' })).toBe(0);
      // Between polls the refund's job is parked in the delayed set.
      await waitFor(
        async () => metricSum(await scrape(), 'refund_queue_jobs', { queue: 'refunds-binance_pay', state: 'delayed' }) >= 1,
        10_000,
        'a delayed job',
      );
    } finally {
      await setFaults(svc, 'binance-pay', { settleAfterMs: 100 });
    }
  });

  it('counts refunds flagged for review', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '5.00');
    const { body } = await createRefund(paymentId, '1');
    await waitFor(async () => (await statusOf(body.id)) === 'succeeded', 20_000, 'succeeded');
    const before = metricSum(await scrape(), 'refunds_flagged_for_review');
    await svc.db.query(`UPDATE refunds SET review_flagged_at = now(), review_reason = 'test' WHERE id = $1`, [body.id]);
    await waitFor(async () => metricSum(await scrape(), 'refunds_flagged_for_review') === before + 1, 5_000, 'flagged count');
  });

  it('answers concurrent scrapes from one collection', async () => {
    const results = await Promise.all(Array.from({ length: 5 }, () => scrape()));
    for (const s of results) expect(hasMetric(s, 'refund_queue_jobs')).toBe(true);
  });
});

describe('ROLE=worker metrics server, METRICS_TOKEN', () => {
  it('serves /metrics on METRICS_PORT and requires the token when one is set', async () => {
    const port = await freePort();
    const cfg = loadConfig({
      NODE_ENV: 'test',
      ROLE: 'worker',
      DATABASE_URL: svc.databaseUrl,
      REDIS_URL,
      QUEUE_PREFIX: svc.queuePrefix,
      SANDBOX: 'true',
      SANDBOX_URL: `${svc.url}/sandbox`,
      PUBLIC_URL: svc.url,
      LOG_LEVEL: 'silent',
      METRICS_PORT: String(port),
      METRICS_TOKEN,
      ...FAST_ENV,
    });
    worker = await createApp(cfg);
    await worker.init();
    const url = `http://127.0.0.1:${port}/metrics`;

    const refused = await fetch(url);
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect((await fetch(url, { headers: { Authorization: 'Bearer wrong_token_wrong_token' } })).status).toBe(401);

    const ok = await fetch(url, { headers: { Authorization: `Bearer ${METRICS_TOKEN}` } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const samples = parseMetrics(await ok.text());
    // The worker reads the same database and queues as the API process.
    expect(metricSum(samples, 'metrics_collector_up', { collector: 'database' })).toBe(1);
    expect(hasMetric(samples, 'refunds_stuck', { provider: 'binance_pay' })).toBe(true);
    expect(hasMetric(samples, 'refund_queue_jobs', { queue: 'refunds-binance_pay', state: 'waiting' })).toBe(true);
    expect(hasMetric(samples, 'process_resident_memory_bytes')).toBe(true);

    expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    expect((await fetch(url, { method: 'POST', headers: { Authorization: `Bearer ${METRICS_TOKEN}` } })).status).toBe(405);

    // The worker's token does not protect the API process, which was started without one.
    await svc.http().get('/metrics').expect(200);

    await worker.close();
    worker = undefined;
    // Closed with the worker.
    await expect(fetch(url)).rejects.toThrow();
  });

  it('an API process with METRICS_TOKEN refuses a scrape without it', async () => {
    const guarded = await startService('metricstoken', { ROLE: 'api', METRICS_TOKEN });
    try {
      const res = await guarded.http().get('/metrics').expect(401);
      expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="metrics"/);
      expect(JSON.parse(res.text)).toMatchObject({ code: 'unauthorized' });
      // An admin API key is not the metrics token.
      await guarded.http().get('/metrics').set('Authorization', `Bearer ${guarded.adminKey}`).expect(401);
      const ok = await guarded.http().get('/metrics').set('Authorization', `Bearer ${METRICS_TOKEN}`).expect(200);
      expect(ok.text).toMatch(/^# HELP /m);
    } finally {
      await guarded.stop();
    }
  });
});
