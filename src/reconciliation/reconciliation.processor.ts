import { OnWorkerEvent, Processor, WorkerHost } from '@nestjs/bullmq';
import { Logger, OnApplicationBootstrap } from '@nestjs/common';
import { Job } from 'bullmq';
import { ReconciliationRunner } from './reconciliation-runner.service.js';
import { RECONCILIATION_QUEUE, type ReconciliationJobData } from './reconciliation-settings.js';

/** Runs in flight at once per worker process (each one is mostly waiting on a provider). */
const RUNS_PER_WORKER = 2;

/** The `reconciliations` worker: one job per run (job id = run id); the run row is the truth. */
@Processor(RECONCILIATION_QUEUE)
export class ReconciliationProcessor extends WorkerHost implements OnApplicationBootstrap {
  private readonly logger = new Logger('ReconciliationProcessor');

  constructor(private readonly runner: ReconciliationRunner) {
    super();
  }

  onApplicationBootstrap(): void {
    this.worker.concurrency = RUNS_PER_WORKER;
  }

  async process(job: Job<ReconciliationJobData>): Promise<void> {
    await this.runner.execute(job.data.runId);
  }

  @OnWorkerEvent('error')
  onError(err: Error): void {
    this.logger.warn({ err: err.message }, 'reconciliation worker error');
  }

  @OnWorkerEvent('failed')
  onFailed(job: Job<ReconciliationJobData> | undefined, err: Error): void {
    this.logger.warn({ runId: job?.data.runId, err: err.message }, 'reconciliation job failed; it will be retried');
  }
}
