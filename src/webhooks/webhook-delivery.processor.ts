import { OnWorkerEvent, Processor, WorkerHost } from '@nestjs/bullmq';
import { Logger, OnApplicationBootstrap } from '@nestjs/common';
import { DelayedError, Job } from 'bullmq';
import { WebhookDeliveryService } from './webhook-delivery.service.js';
import { WEBHOOK_QUEUE, type WebhookJobData, WebhookSettings } from './webhook-settings.js';

/**
 * The `merchant-webhooks` worker: one job per delivery (job id = delivery id). Each run
 * makes at most one attempt; while the delivery is still pending the job parks itself in
 * the delayed set until its next attempt (the schedule itself is in the row).
 */
@Processor(WEBHOOK_QUEUE)
export class WebhookDeliveryProcessor extends WorkerHost implements OnApplicationBootstrap {
  private readonly logger = new Logger('WebhookDeliveryProcessor');

  constructor(
    private readonly deliveries: WebhookDeliveryService,
    private readonly settings: WebhookSettings,
  ) {
    super();
  }

  onApplicationBootstrap(): void {
    // Deliveries are I/O bound (waiting on merchants' servers).
    this.worker.concurrency = this.settings.concurrency;
  }

  async process(job: Job<WebhookJobData>, token?: string): Promise<void> {
    const result = await this.deliveries.attempt(job.data.deliveryId);
    if (!result.done) {
      await job.moveToDelayed(result.at.getTime(), token);
      throw new DelayedError();
    }
  }

  @OnWorkerEvent('error')
  onError(err: Error): void {
    this.logger.warn({ err: err.message }, 'webhook worker error');
  }

  @OnWorkerEvent('failed')
  onFailed(job: Job<WebhookJobData> | undefined, err: Error): void {
    this.logger.warn({ deliveryId: job?.data.deliveryId, err: err.message }, 'webhook job failed; it will be retried');
  }
}
