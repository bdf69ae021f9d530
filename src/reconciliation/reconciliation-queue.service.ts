import { Injectable, Logger, OnModuleDestroy } from '@nestjs/common';
import { JobsOptions, Queue } from 'bullmq';
import { withTimeout } from '../common/with-timeout.js';
import { AppConfig } from '../config/config.js';
import { bullConnection, closeRedis, queuePrefix } from '../processing/queues.js';
import { RECONCILIATION_QUEUE, type ReconciliationJobData } from './reconciliation-settings.js';

/**
 * Options of every run's job: id = run id, so a run has at most one live job. BullMQ's own
 * retries only cover unexpected errors (Postgres down mid-run); provider errors are retried
 * inside the run, and the run row's attempt count bounds everything.
 */
export const RECONCILIATION_JOB_OPTIONS: JobsOptions = {
  removeOnComplete: true,
  removeOnFail: true,
  attempts: 3,
  backoff: { type: 'exponential', delay: 2_000, jitter: 0.5 },
};

/** How long a caller waits for Redis; the row is durable and the sweeper re-adds lost jobs. */
const REDIS_TIMEOUT_MS = 2_000;

/** Producer side of the `reconciliations` queue (every role: the API enqueues new runs). */
@Injectable()
export class ReconciliationQueueService implements OnModuleDestroy {
  private readonly logger = new Logger('ReconciliationQueue');
  readonly queue: Queue<ReconciliationJobData>;
  private readonly connection: ReturnType<typeof bullConnection>;

  constructor(cfg: AppConfig) {
    // Fail fast while Redis is away (no offline queue): Postgres holds the run.
    this.connection = bullConnection(cfg, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    this.queue = new Queue<ReconciliationJobData>(RECONCILIATION_QUEUE, {
      prefix: queuePrefix(cfg, RECONCILIATION_QUEUE),
      connection: this.connection,
    });
    this.queue.on('error', (err) => this.logger.debug({ err: err.message }, 'producer connection error'));
  }

  async onModuleDestroy(): Promise<void> {
    await this.queue.close().catch(() => undefined);
    await closeRedis(this.connection);
  }

  /**
   * Makes the run's job exist and run: added when missing, promoted when delayed, replaced
   * when a finished one was kept. An active job is left alone. Returns false when Redis could
   * not be reached (the sweeper picks the run up later).
   */
  async wake(runId: string): Promise<boolean> {
    try {
      await withTimeout(
        (async () => {
          const job = await this.queue.getJob(runId);
          if (!job) {
            await this.queue.add('reconcile', { runId }, { ...RECONCILIATION_JOB_OPTIONS, jobId: runId });
            return;
          }
          const state = await job.getState();
          if (state === 'delayed') await job.promote();
          else if (state === 'completed' || state === 'failed') {
            await job.remove();
            await this.queue.add('reconcile', { runId }, { ...RECONCILIATION_JOB_OPTIONS, jobId: runId });
          }
        })(),
        REDIS_TIMEOUT_MS,
      );
      return true;
    } catch (err) {
      this.logger.warn({ runId, err: (err as Error).message }, 'could not enqueue the reconciliation run; the sweeper will');
      return false;
    }
  }
}
