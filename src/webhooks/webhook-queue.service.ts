import { Injectable, Logger, OnModuleDestroy } from '@nestjs/common';
import { JobsOptions, Queue } from 'bullmq';
import { AppConfig } from '../config/config.js';
import { bullConnection, closeRedis, queuePrefix } from '../processing/queues.js';
import { WEBHOOK_QUEUE, type WebhookJobData } from './webhook-settings.js';

/**
 * Options of every delivery job: id = delivery id, so a delivery has at most one live job.
 * The job parks itself in the delayed set between attempts (the retry schedule lives in
 * the row); BullMQ's own retries only cover unexpected errors such as Postgres being down.
 */
export const WEBHOOK_JOB_OPTIONS: JobsOptions = {
  removeOnComplete: true,
  removeOnFail: true,
  attempts: 5,
  backoff: { type: 'exponential', delay: 1_000, jitter: 0.5 },
};

/** How long a caller waits for Redis; the row is durable and the sweeper re-adds lost jobs. */
const REDIS_TIMEOUT_MS = 2_000;

/** Producer side of the `merchant-webhooks` queue (every role: the API enqueues redeliveries). */
@Injectable()
export class WebhookQueueService implements OnModuleDestroy {
  private readonly logger = new Logger('WebhookQueue');
  readonly queue: Queue<WebhookJobData>;
  private readonly connection: ReturnType<typeof bullConnection>;

  constructor(cfg: AppConfig) {
    // Fail fast while Redis is away (no offline queue): Postgres holds the schedule.
    this.connection = bullConnection(cfg, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    this.queue = new Queue<WebhookJobData>(WEBHOOK_QUEUE, { prefix: queuePrefix(cfg, WEBHOOK_QUEUE), connection: this.connection });
    this.queue.on('error', (err) => this.logger.debug({ err: err.message }, 'producer connection error'));
  }

  async onModuleDestroy(): Promise<void> {
    await this.queue.close().catch(() => undefined);
    await closeRedis(this.connection);
  }

  /** Adds one job per delivery (a no-op for a delivery that already has one). */
  async enqueueMany(deliveryIds: string[]): Promise<void> {
    if (deliveryIds.length === 0) return;
    await withTimeout(
      this.queue.addBulk(
        deliveryIds.map((deliveryId) => ({ name: 'deliver', data: { deliveryId }, opts: { ...WEBHOOK_JOB_OPTIONS, jobId: deliveryId } })),
      ),
      REDIS_TIMEOUT_MS * 5,
    );
  }

  /**
   * Makes a delivery's job run now: promoted from the delayed set, or added when missing.
   * An active job is left alone (it reads the row when it finishes). Returns false when
   * Redis could not be reached (the sweeper will pick the delivery up).
   */
  async wake(deliveryId: string): Promise<boolean> {
    try {
      await withTimeout(
        (async () => {
          const job = await this.queue.getJob(deliveryId);
          if (!job) {
            await this.queue.add('deliver', { deliveryId }, { ...WEBHOOK_JOB_OPTIONS, jobId: deliveryId });
            return;
          }
          const state = await job.getState();
          if (state === 'delayed') await job.promote();
          else if (state === 'completed' || state === 'failed') {
            // Kept only if removal failed; replace it so the delivery runs again.
            await job.remove();
            await this.queue.add('deliver', { deliveryId }, { ...WEBHOOK_JOB_OPTIONS, jobId: deliveryId });
          }
        })(),
        REDIS_TIMEOUT_MS,
      );
      return true;
    } catch (err) {
      this.logger.warn({ deliveryId, err: (err as Error).message }, 'could not wake the delivery job; the sweeper will');
      return false;
    }
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Redis did not answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
