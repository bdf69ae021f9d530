import { Logger } from '@nestjs/common';
import { describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../config/config.js';
import type { Database } from '../database/database.js';
import { metricsAccessAllowed } from './metrics-auth.js';
import { MetricsCollector, stuckHorizonMs, waitingAgeSeconds } from './metrics-collector.service.js';
import { MetricsService } from './metrics.service.js';
import type { QueueInspector } from './queue-inspector.js';

// The collector logs skipped sources at debug; keep the test output clean.
Logger.overrideLogger(false);

describe('metrics configuration', () => {
  it('defaults to a loopback worker server on 9464, no token', () => {
    expect(loadConfig({}).metrics).toEqual({ port: 9464, host: '127.0.0.1', token: undefined });
    expect(loadConfig({ METRICS_PORT: '0' }).metrics.port).toBe(0);
  });

  it.each([
    [{ METRICS_PORT: 'abc' }, /METRICS_PORT/],
    [{ METRICS_PORT: '70000' }, /METRICS_PORT/],
    [{ METRICS_HOST: 'not a host' }, /METRICS_HOST/],
    [{ METRICS_TOKEN: 'short' }, /METRICS_TOKEN/],
  ])('rejects %o', (env, message) => {
    expect(() => loadConfig(env)).toThrow(message);
  });
});

describe('metricsAccessAllowed', () => {
  it('is open without a token', () => {
    expect(metricsAccessAllowed(undefined, undefined)).toBe(true);
  });

  it('requires the exact bearer token when one is set', () => {
    const token = 'a-metrics-token-1234';
    expect(metricsAccessAllowed(token, undefined)).toBe(false);
    expect(metricsAccessAllowed(token, `Bearer ${token}x`)).toBe(false);
    expect(metricsAccessAllowed(token, `Basic ${Buffer.from(`x:${token}`).toString('base64')}`)).toBe(false);
    expect(metricsAccessAllowed(token, ['Bearer a', 'Bearer b'])).toBe(false);
    expect(metricsAccessAllowed(token, `Bearer ${token}`)).toBe(true);
  });
});

describe('waitingAgeSeconds', () => {
  it('counts from when the job became due, not from its creation', () => {
    const now = 1_000_000;
    expect(waitingAgeSeconds({ timestamp: now - 5_000, delay: 0 }, now)).toBe(5);
    // Added with a delay of 3 s: waiting for 2 s.
    expect(waitingAgeSeconds({ timestamp: now - 5_000, delay: 3_000 }, now)).toBe(2);
    // Created an hour ago, last run 10 s ago, parked for 4 s: waiting for 6 s.
    expect(waitingAgeSeconds({ timestamp: now - 3_600_000, processedOn: now - 10_000, delay: 4_000 }, now)).toBe(6);
    // Clock skew never gives a negative age.
    expect(waitingAgeSeconds({ timestamp: now + 1_000 }, now)).toBe(0);
  });
});

describe('MetricsCollector', () => {
  const cfg = loadConfig({ STUCK_AFTER_MS: '60000' });

  function build(db: Partial<Database>, queues: unknown[] = []) {
    const metrics = new MetricsService();
    const inspector = { queues: () => queues } as unknown as QueueInspector;
    const collector = new MetricsCollector(metrics, db as Database, cfg, inspector);
    collector.onModuleInit();
    return { metrics, collector };
  }

  function fakeDb(query: (sql: string) => unknown[]) {
    const calls = { n: 0 };
    const db = {
      transaction: async <T>(fn: (tx: { query: (sql: string) => Promise<unknown[]> }) => Promise<T>) => {
        calls.n++;
        return fn({ query: async (sql: string) => query(sql) });
      },
    };
    return { db: db as unknown as Partial<Database>, calls };
  }

  it('uses the global stuck horizon unless a per-provider one is configured', () => {
    expect(stuckHorizonMs(cfg, 'cobo')).toBe(60_000);
  });

  it('fills the gauges, one collection per second however many scrapes', async () => {
    const { db, calls } = fakeDb((sql) => {
      if (sql.startsWith('SET')) return [];
      if (sql.includes('GROUP BY')) return [{ provider: 'cobo', status: 'processing', n: 3 }];
      return [{ n: 2 }];
    });
    const queue = {
      name: 'refunds-cobo',
      getJobCounts: vi.fn(async () => ({ waiting: 4, active: 1, delayed: 2, failed: 0, completed: 0, paused: 0 })),
      getJobs: vi.fn(async () => [{ timestamp: Date.now() - 30_000, delay: 0 }]),
    };
    const { metrics } = build(db, [queue]);
    const texts = await Promise.all([metrics.registry.metrics(), metrics.registry.metrics()]);
    await metrics.registry.metrics();
    expect(calls.n).toBe(1);
    expect(queue.getJobCounts).toHaveBeenCalledTimes(1);
    const text = texts[0];
    expect(text).toContain('refunds_stuck{provider="cobo",status="processing"} 3');
    expect(text).toContain('refunds_stuck{provider="cobo",status="requires_action"} 0');
    expect(text).toContain('refunds_stuck{provider="lean",status="queued"} 0');
    expect(text).toContain('refunds_flagged_for_review 2');
    expect(text).toContain('refund_queue_jobs{queue="refunds-cobo",state="waiting"} 4');
    expect(text).toContain('refund_queue_jobs{queue="refunds-cobo",state="delayed"} 2');
    expect(text).toMatch(/refund_queue_oldest_waiting_job_age_seconds\{queue="refunds-cobo"\} (29|3\d)/);
    expect(text).toContain('metrics_collector_up{collector="database"} 1');
  });

  it('never fails the scrape: a failing source is skipped, its gauges cleared, its up gauge 0', async () => {
    const { db } = fakeDb(() => {
      throw new Error('connection refused');
    });
    const queue = {
      name: 'refunds-cobo',
      getJobCounts: async () => {
        throw new Error('Redis is down');
      },
      getJobs: async () => [],
    };
    const { metrics } = build(db, [queue]);
    const text = await metrics.registry.metrics();
    expect(text).toContain('metrics_collector_up{collector="database"} 0');
    expect(text).toContain('metrics_collector_up{collector="queues"} 0');
    expect(text).not.toMatch(/^refunds_stuck\{/m);
    expect(text).not.toMatch(/^refund_queue_jobs\{/m);
    expect(text).toContain('refunds_created_total');
  });
});
