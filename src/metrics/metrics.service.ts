import { Injectable } from '@nestjs/common';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The service's Prometheus metrics, on a registry of its own (not prom-client's global one,
 * so several app instances in one process, as in the tests, do not collide). Counters and
 * histograms are updated where things happen; gauges that describe the database or the
 * queues are filled in on scrape by the collectors registered in MetricsModule.
 */
@Injectable()
export class MetricsService {
  readonly registry = new Registry();

  readonly refundsCreated = new Counter({
    name: 'refunds_created_total',
    help: 'Refunds accepted by the API',
    labelNames: ['provider', 'status'] as const,
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
    help: 'Non-final refunds unchanged for longer than the stuck horizon',
    labelNames: ['provider'] as const,
    registers: [this.registry],
  });

  readonly reviewRefunds = new Gauge({
    name: 'refunds_flagged_for_review',
    help: 'Refunds whose provider outcome contradicts ours, waiting for a human',
    registers: [this.registry],
  });

  readonly queueJobs = new Gauge({
    name: 'refund_queue_jobs',
    help: 'Jobs in the refund queues by state',
    labelNames: ['queue', 'state'] as const,
    registers: [this.registry],
  });

  readonly queueOldestJobAge = new Gauge({
    name: 'refund_queue_oldest_waiting_job_age_seconds',
    help: 'Age of the oldest job waiting to be processed, per queue',
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }
}
