import { DynamicModule, Module } from '@nestjs/common';
import { MetricsCollector } from './metrics-collector.service.js';
import { MetricsController } from './metrics.controller.js';
import { MetricsService } from './metrics.service.js';
import { QueueInspector } from './queue-inspector.js';
import { WorkerMetricsServer } from './worker-metrics-server.js';

/**
 * Prometheus metrics. Every role counts and collects; API processes (ROLE=api|all) serve
 * GET /metrics on the HTTP port, worker processes (no HTTP API) on their own small server
 * (METRICS_PORT). MetricsService and QueueInspector are global: counters are updated across
 * the code base, and the ops dashboard reads the same queues.
 */
@Module({})
export class MetricsModule {
  static register(opts: { http: boolean }): DynamicModule {
    return {
      module: MetricsModule,
      global: true,
      controllers: opts.http ? [MetricsController] : [],
      providers: [MetricsService, QueueInspector, MetricsCollector, ...(opts.http ? [] : [WorkerMetricsServer])],
      exports: [MetricsService, QueueInspector],
    };
  }
}
