import { OnWorkerEvent, Processor, WorkerHost } from '@nestjs/bullmq';
import { Logger, OnApplicationBootstrap } from '@nestjs/common';
import { DelayedError, Job } from 'bullmq';
import { AppConfig } from '../config/config.js';
import type { RefundJobData } from './queues.js';
import { RefundWorkerService } from './refund-worker.service.js';

/**
 * The job handler shared by the per-provider queues. A refund's single job runs a step
 * and, while the refund is not final, parks itself in the delayed set until the next
 * check is due (same job id, so there is still exactly one job per refund).
 */
abstract class RefundJobHost extends WorkerHost implements OnApplicationBootstrap {
  protected readonly logger = new Logger(this.constructor.name);

  constructor(
    private readonly steps: RefundWorkerService,
    private readonly cfg: AppConfig,
  ) {
    super();
  }

  onApplicationBootstrap(): void {
    // Provider calls are I/O bound: many refunds per process wait on providers at once.
    this.worker.concurrency = this.cfg.processing.concurrency;
  }

  async process(job: Job<RefundJobData>, token?: string): Promise<void> {
    const result = await this.steps.step(job.data.refundId);
    if (!result.done) {
      await job.moveToDelayed(result.at.getTime(), token);
      throw new DelayedError();
    }
  }

  @OnWorkerEvent('error')
  onError(err: Error): void {
    // Connection drops and vanished job keys (Redis flushed): the sweeper recovers the refunds.
    this.logger.warn({ err: err.message }, 'queue worker error');
  }

  @OnWorkerEvent('failed')
  onFailed(job: Job<RefundJobData> | undefined, err: Error): void {
    this.logger.warn({ refundId: job?.data.refundId, err: err.message }, 'refund job failed; it will be retried');
  }
}

/**
 * BullMQ's own job lock: a worker that dies (kill -9) leaves its active jobs locked until
 * lockDuration ends, and the stalled check that hands them to another worker runs every
 * stalledInterval. The defaults (30 s each) left refunds idle for up to a minute after a
 * crash (measured 57.7 s in the chaos suite; 4.9 s with these). A job that a live but busy
 * worker loses to the stalled check cannot pay twice: the refund row's lease (LEASE_MS)
 * and the stored provider request id decide who may call the provider.
 */
const WORKER_OPTIONS = { lockDuration: 6_000, stalledInterval: 3_000 } as const;

@Processor('refunds-binance_pay', WORKER_OPTIONS)
export class BinancePayRefundProcessor extends RefundJobHost {
  constructor(steps: RefundWorkerService, cfg: AppConfig) {
    super(steps, cfg);
  }
}

@Processor('refunds-cobo', WORKER_OPTIONS)
export class CoboRefundProcessor extends RefundJobHost {
  constructor(steps: RefundWorkerService, cfg: AppConfig) {
    super(steps, cfg);
  }
}

@Processor('refunds-lean', WORKER_OPTIONS)
export class LeanRefundProcessor extends RefundJobHost {
  constructor(steps: RefundWorkerService, cfg: AppConfig) {
    super(steps, cfg);
  }
}
