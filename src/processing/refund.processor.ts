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

@Processor('refunds-binance_pay')
export class BinancePayRefundProcessor extends RefundJobHost {
  constructor(steps: RefundWorkerService, cfg: AppConfig) {
    super(steps, cfg);
  }
}

@Processor('refunds-cobo')
export class CoboRefundProcessor extends RefundJobHost {
  constructor(steps: RefundWorkerService, cfg: AppConfig) {
    super(steps, cfg);
  }
}

@Processor('refunds-lean')
export class LeanRefundProcessor extends RefundJobHost {
  constructor(steps: RefundWorkerService, cfg: AppConfig) {
    super(steps, cfg);
  }
}
