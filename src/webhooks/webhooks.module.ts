import { DynamicModule, Module } from '@nestjs/common';
import { registerQueue } from '../processing/queues.js';
import { WebhookDeliveryProcessor } from './webhook-delivery.processor.js';
import { WebhookDeliveryService } from './webhook-delivery.service.js';
import { WebhookDispatcher } from './webhook-dispatcher.js';
import { WebhookEndpointsController } from './webhook-endpoints.controller.js';
import { WebhookEndpointsService } from './webhook-endpoints.service.js';
import { WebhookQueueService } from './webhook-queue.service.js';
import { WEBHOOK_QUEUE, WebhookSettings } from './webhook-settings.js';
import { WebhookSweeper } from './webhook-sweeper.js';

/**
 * Outbound merchant webhooks. The endpoints API and the queue producer exist in every
 * role; the outbox dispatcher, the delivery worker and the sweeper only where ROLE runs
 * workers. Relies on ProcessingModule's BullModule root (connection) and its own prefix (registerQueue).
 */
@Module({})
export class WebhooksModule {
  static register(opts: { workers: boolean }): DynamicModule {
    return {
      module: WebhooksModule,
      imports: opts.workers ? [registerQueue(WEBHOOK_QUEUE)] : [],
      controllers: [WebhookEndpointsController],
      providers: [
        { provide: WebhookSettings, useFactory: () => WebhookSettings.fromEnv(process.env) },
        WebhookQueueService,
        WebhookEndpointsService,
        ...(opts.workers ? [WebhookDeliveryService, WebhookDispatcher, WebhookSweeper, WebhookDeliveryProcessor] : []),
      ],
      exports: [WebhookEndpointsService, WebhookQueueService, WebhookSettings],
    };
  }
}
