import { Injectable } from '@nestjs/common';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The service's Prometheus metrics, on a registry of its own (not prom-client's global one,
 * so several app instances in one process, as in the tests, do not collide). Counters and
 * histograms are updated where things happen; gauges that describe the database or the
 * queues are filled in on scrape by MetricsCollector (metrics-collector.service.ts), through
 * the scrape hook: every such gauge's collect() awaits the same hook, which the collector
 * caches for a second, so one scrape (or several at once) costs one round of queries.
 */
@Injectable()
export class MetricsService {
  readonly registry = new Registry();

  /** Filled in by MetricsCollector; awaited by the scrape-time gauges below. */
  private scrapeHook?: () => Promise<void>;

  setScrapeHook(hook: (() => Promise<void>) | undefined): void {
    this.scrapeHook = hook;
  }

  /** Never rejects: a collector failure must not fail the scrape. */
  private readonly beforeScrape = async (): Promise<void> => {
    try {
      await this.scrapeHook?.();
    } catch {
      // The collector logs and resets what it could not read.
    }
  };

  readonly refundsCreated = new Counter({
    name: 'refunds_created_total',
    help: 'Refunds accepted by the API',
    labelNames: ['provider', 'status'] as const,
    registers: [this.registry],
  });

  readonly refundCreateBatchSize = new Histogram({
    name: 'refund_create_batch_size',
    help: 'Creates per batched statement sent to Postgres (snapshot reads and guarded inserts); 1 when the service is not busy',
    labelNames: ['statement'] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128],
    registers: [this.registry],
  });

  readonly refundCreateStage = new Histogram({
    name: 'refund_create_stage_duration_seconds',
    help:
      'Time a refund create spends in each step in the API process, waiting included: admission (from the routed request to the handler: reading and validating the body, key check, rate limit; HTTP creates only), ' +
      'gate (behind this process’s earlier creates on the same payment), snapshot and insert (the optimistic path’s two batched statements, per attempt), ' +
      'locked (the locked path: the first create on a payment not cached yet, with its provider lookup, or one that lost the optimistic race), enqueue (from the commit to the job’s arrival in Redis: after the answer, unless 1,000 adds are already on their way; failed adds are not observed)',
    labelNames: ['stage'] as const,
    // Finer from 10 to 100 ms, where a busy API's steps spread (docs/performance.md, finding 63).
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  readonly workerBatchSize = new Histogram({
    name: 'refund_worker_batch_size',
    help: 'Refunds per batched statement sent to Postgres (worker: claim: lease claims; attempt: attempt rows; start: moves to processing; reschedule: next checks; final: final answers; API: webhook_final: final answers of provider webhooks); 1 when the service is not busy',
    labelNames: ['statement'] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128],
    registers: [this.registry],
  });

  readonly workerBatchSplits = new Counter({
    name: 'refund_worker_batch_splits_total',
    help: 'Batched worker and webhook statements (statement as in refund_worker_batch_size) Postgres refused (a bad row, a deadlock) whose refunds were then retried one by one',
    labelNames: ['statement'] as const,
    registers: [this.registry],
  });

  readonly refundCreateBatchSplits = new Counter({
    name: 'refund_create_batch_splits_total',
    help: 'Batched create statements Postgres refused (a bad row, a deadlock) whose creates were then retried one by one',
    labelNames: ['statement'] as const,
    registers: [this.registry],
  });

  readonly refundCreateRetries = new Counter({
    name: 'refund_create_optimistic_retries_total',
    help: 'Creates whose optimistic insert found the payment changed by a concurrent create or retry, and looked again',
    labelNames: ['provider'] as const,
    registers: [this.registry],
  });

  readonly transitions = new Counter({
    name: 'refund_status_transitions_total',
    help: 'Refund status changes',
    labelNames: ['provider', 'from', 'to'] as const,
    registers: [this.registry],
  });

  readonly providerCalls = new Histogram({
    name: 'provider_call_duration_seconds',
    help: 'Duration of calls to payment providers',
    labelNames: ['provider', 'operation', 'outcome'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  readonly webhookDeliveries = new Counter({
    name: 'merchant_webhook_deliveries_total',
    help: 'Merchant webhook delivery attempts by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly stuckRefunds = new Gauge({
    name: 'refunds_stuck',
    help: 'Refunds in queued, processing or requires_action unchanged for longer than the stuck horizon (STUCK_AFTER_MS[_<PROVIDER>])',
    labelNames: ['provider', 'status'] as const,
    registers: [this.registry],
    collect: this.beforeScrape,
  });

  readonly reviewRefunds = new Gauge({
    name: 'refunds_flagged_for_review',
    help: 'Refunds whose provider outcome contradicts ours, waiting for a human',
    registers: [this.registry],
    collect: this.beforeScrape,
  });

  readonly queueJobs = new Gauge({
    name: 'refund_queue_jobs',
    help: 'Jobs in the refund queues by state',
    labelNames: ['queue', 'state'] as const,
    registers: [this.registry],
    collect: this.beforeScrape,
  });

  readonly queueOldestJobAge = new Gauge({
    name: 'refund_queue_oldest_waiting_job_age_seconds',
    help: 'Age of the oldest job waiting to be processed, per queue',
    labelNames: ['queue'] as const,
    registers: [this.registry],
    collect: this.beforeScrape,
  });

  readonly collectorUp = new Gauge({
    name: 'metrics_collector_up',
    help: 'Whether the last scrape-time read of a source (database, queues) succeeded (1) or not (0)',
    labelNames: ['collector'] as const,
    registers: [this.registry],
    collect: this.beforeScrape,
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }
}
