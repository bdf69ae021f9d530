import { Injectable, Logger, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import { withTimeout } from '../common/with-timeout.js';
import { AppConfig } from '../config/config.js';
import { Database } from '../database/database.js';
import { PROVIDERS, type ProviderName } from '../providers/provider.js';
import { MetricsService } from './metrics.service.js';
import { QueueInspector } from './queue-inspector.js';

/** Scrapes within this window share one round of queries (several Prometheus replicas, retries). */
export const SCRAPE_CACHE_MS = 1_000;
/** Upper bound of one collector's work; a slow source is skipped, never waited for. */
export const COLLECT_TIMEOUT_MS = 2_000;

/** Job states reported per queue (BullMQ's names; `waiting` includes a paused queue's jobs). */
export const QUEUE_JOB_STATES = ['waiting', 'active', 'delayed', 'failed', 'completed'] as const;

/**
 * Statuses in which a refund is still being worked on (the stuck candidates). requires_action
 * waits on the merchant (a Cobo address), so it has its own `status` label: alert on it
 * separately, or leave it out with status!="requires_action".
 */
const NON_FINAL = ['queued', 'processing', 'requires_action'];

/**
 * The stuck horizon of a provider: STUCK_AFTER_MS_<PROVIDER>, which defaults to STUCK_AFTER_MS
 * (the same horizon GET /v1/refunds?stuck=true uses).
 */
export function stuckHorizonMs(cfg: AppConfig, provider: ProviderName): number {
  return cfg.processing.stuckAfterMsByProvider?.[provider] ?? cfg.processing.stuckAfterMs;
}

/**
 * Fills the gauges that describe the database and the queues, at scrape time.
 *
 * Bounded in cost: two indexed counts in Postgres (the non-final statuses are covered by the
 * partial index refunds_due_idx, review flags by refunds_review_idx) under a statement
 * timeout, and per queue one getJobCounts plus one LRANGE of a single job in Redis. Results
 * are cached for SCRAPE_CACHE_MS and concurrent scrapes share the one in flight. A source
 * that fails or is slow is skipped (logged at debug): its gauges are cleared rather than left
 * stale, metrics_collector_up{collector} says 0, and the scrape itself still answers.
 */
@Injectable()
export class MetricsCollector implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('MetricsCollector');
  private last?: { at: number; done: Promise<void>; running: boolean };

  constructor(
    private readonly metrics: MetricsService,
    private readonly db: Database,
    private readonly cfg: AppConfig,
    private readonly inspector: QueueInspector,
  ) {}

  onModuleInit(): void {
    this.metrics.setScrapeHook(() => this.refresh());
  }

  onModuleDestroy(): void {
    this.metrics.setScrapeHook(undefined);
  }

  /** Re-reads the sources unless a read is running or started less than SCRAPE_CACHE_MS ago. */
  refresh(): Promise<void> {
    const now = Date.now();
    if (this.last && (this.last.running || now - this.last.at < SCRAPE_CACHE_MS)) return this.last.done;
    const last = { at: now, running: true, done: Promise.resolve() };
    // The collectors never reject (they log and reset instead).
    last.done = Promise.all([this.collectDatabase(), this.collectQueues()]).then(() => {
      last.running = false;
    });
    this.last = last;
    return last.done;
  }

  private async collectDatabase(): Promise<void> {
    const { stuckRefunds, reviewRefunds, collectorUp } = this.metrics;
    try {
      const horizons = PROVIDERS.map((p) => stuckHorizonMs(this.cfg, p));
      const { stuck, flagged } = await withTimeout(
        this.db.transaction(async (tx) => {
          await tx.query(`SET LOCAL statement_timeout = ${COLLECT_TIMEOUT_MS}`);
          const stuck = await tx.query<{ provider: ProviderName; status: string; n: number }>(
            `SELECT r.provider, r.status, count(*)::int AS n
               FROM refunds r
               JOIN unnest($1::text[], $2::double precision[]) AS h(provider, horizon_ms) ON h.provider = r.provider
              WHERE r.status = ANY($3::text[])
                AND r.status_changed_at < now() - make_interval(secs => h.horizon_ms / 1000)
              GROUP BY r.provider, r.status`,
            [PROVIDERS, horizons, NON_FINAL],
          );
          const [flagged] = await tx.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM refunds WHERE review_flagged_at IS NOT NULL`,
          );
          return { stuck, flagged: flagged?.n ?? 0 };
        }),
        COLLECT_TIMEOUT_MS + 500,
        'database',
      );
      const counts = new Map(stuck.map((row) => [`${row.provider}/${row.status}`, row.n]));
      // Every provider and status gets a series, 0 included, so alerts can compare against it.
      for (const provider of PROVIDERS) {
        for (const status of NON_FINAL) stuckRefunds.set({ provider, status }, counts.get(`${provider}/${status}`) ?? 0);
      }
      reviewRefunds.set(flagged);
      collectorUp.set({ collector: 'database' }, 1);
    } catch (err) {
      this.logger.debug({ err: (err as Error).message }, 'database metrics skipped');
      stuckRefunds.reset();
      reviewRefunds.reset();
      collectorUp.set({ collector: 'database' }, 0);
    }
  }

  private async collectQueues(): Promise<void> {
    const { queueJobs, queueOldestJobAge, collectorUp } = this.metrics;
    try {
      const now = Date.now();
      const results = await withTimeout(
        Promise.all(
          this.inspector.queues().map(async (queue) => {
            const [counts, oldest] = await Promise.all([
              queue.getJobCounts(...QUEUE_JOB_STATES),
              // The wait list is FIFO: its tail is the job that has waited longest.
              queue.getJobs(['wait'], 0, 0, true),
            ]);
            return { name: queue.name, counts, oldest: oldest[0] };
          }),
        ),
        COLLECT_TIMEOUT_MS,
        'queues',
      );
      queueJobs.reset();
      queueOldestJobAge.reset();
      for (const { name, counts, oldest } of results) {
        for (const state of QUEUE_JOB_STATES) queueJobs.set({ queue: name, state }, counts[state] ?? 0);
        queueOldestJobAge.set({ queue: name }, oldest ? waitingAgeSeconds(oldest, now) : 0);
      }
      collectorUp.set({ collector: 'queues' }, 1);
    } catch (err) {
      this.logger.debug({ err: (err as Error).message }, 'queue metrics skipped');
      queueJobs.reset();
      queueOldestJobAge.reset();
      collectorUp.set({ collector: 'queues' }, 0);
    }
  }
}

/**
 * How long a waiting job has been ready to run, in seconds. A refund job parks itself in the
 * delayed set between checks, so its creation timestamp says nothing about how long it has
 * waited: the job became due at (last start, else creation) + its last delay. A job promoted
 * early (a webhook nudge) counts from its last start, which can only over-state the age.
 */
export function waitingAgeSeconds(job: { timestamp: number; processedOn?: number; delay?: number }, now: number): number {
  const base = Math.max(job.timestamp || 0, job.processedOn || 0);
  const dueAt = base + (Number.isFinite(job.delay) ? Math.max(job.delay!, 0) : 0);
  return Math.max(0, (now - dueAt) / 1000);
}
